"""What the hostile tests on sandboxes share: the programs they run inside (Python 3 sources, given to a job as files
or to a grading as its code; each prints one JSON line) and a worker with a pool that reuses its container."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.acceptance.conftest import Server, ServerFactory
from tests.conftest import PYTHON

RUNTIMES = ("docker", "gvisor")

IPC = r'''
"""Leave System V objects, a POSIX message queue and a /dev/shm file behind (`leave`), or list whatever of them a
program can find (`list`): by key, in /proc/sysvipc (Linux) or by id (gVisor numbers them from 1)."""
import ctypes, json, os, sys

libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
KEYS = {"shm": 0x48570001, "sem": 0x48570002, "msg": 0x48570003}
MIB = 1 << 20


def leave():
    segment = libc.shmget(KEYS["shm"], 32 * MIB, 0o1600)
    address = libc.shmat(segment, None, 0)
    ctypes.memset(address, 0x5A, 32 * MIB)  # touched: memory the segment pins
    libc.shmdt(ctypes.c_void_p(address))
    hidden = libc.shmget(0, 4096, 0o1000)  # mode 0: not even its creator may read its state
    left = {"shm": segment, "hidden": hidden, "sem": libc.semget(KEYS["sem"], 2, 0o1600),
            "msg": libc.msgget(KEYS["msg"], 0o1600)}
    if os.path.isdir("/dev/mqueue"):  # gVisor has none: its queues cannot be listed (docs/operations.md)
        rt = ctypes.CDLL("librt.so.1", use_errno=True)
        left["mqueue"] = rt.mq_open(b"/hatchway-left", os.O_CREAT | os.O_RDWR, 0o600, None)
    with open("/dev/shm/hatchway-left", "w") as file:
        file.write("secret")
    assert all(value >= 0 for value in left.values()), (left, os.strerror(ctypes.get_errno()))
    return {"left": sorted(left)}


def listed():
    found = [f"{kind} key" for kind, get in (("shm", libc.shmget), ("msg", libc.msgget)) if get(KEYS[kind], 0, 0) >= 0]
    found += ["sem key"] if libc.semget(KEYS["sem"], 0, 0) >= 0 else []
    if os.path.isdir("/proc/sysvipc"):
        for kind in ("shm", "sem", "msg"):
            found += [f"{kind} {row.split()[1]}" for row in open(f"/proc/sysvipc/{kind}").read().splitlines()[1:]]
    else:
        state = ctypes.create_string_buffer(512)
        for ident in range(1, 512):
            found += [f"shm {ident}"] if libc.shmctl(ident, 2, state) == 0 else []
            found += [f"sem {ident}"] if libc.semctl(ident, 0, 2, state) == 0 else []
            found += [f"msg {ident}"] if libc.msgctl(ident, 2, state) == 0 else []
    for directory in ("/dev/shm", "/dev/mqueue"):
        if os.path.isdir(directory):
            found += [f"{directory}/{name}" for name in os.listdir(directory)]
    return {"found": found}


what = sys.argv[1] if len(sys.argv) > 1 else sys.stdin.read().strip()
print(json.dumps(leave() if what == "leave" else listed()))
'''

WORKSPACE = r'''
"""Spoil /workspace for whoever comes next (`spoil MODE`: extended attributes, ACLs, inode flags, then the mode), or
`look` at it and write in it."""
import fcntl, json, os, struct, sys

HERE = "/workspace"
GET, SET = 0x80086601, 0x40086602  # FS_IOC_GETFLAGS, FS_IOC_SETFLAGS
UNSUPPORTED = (95, 25)  # EOPNOTSUPP, ENOTTY: gVisor's bind mounts have neither xattrs nor flags


def flags():
    fd = os.open(HERE, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return struct.unpack("i", fcntl.ioctl(fd, GET, bytes(4)))[0]
    except OSError as exc:
        if exc.errno in UNSUPPORTED:
            return None
        raise
    finally:
        os.close(fd)


def spoil(mode):
    did = []
    # uid 4242 gets everything, here and (the default ACL) in every file made here from now on
    entries = [(1, 7, -1), (2, 7, 4242), (4, 5, -1), (0x10, 7, -1), (0x20, 5, -1)]
    acl = struct.pack("<I", 2) + b"".join(struct.pack("<HHi", *entry) for entry in entries)
    for name, value in (("user.left", b"by the job before"), ("system.posix_acl_access", acl),
                        ("system.posix_acl_default", acl)):
        try:
            os.setxattr(HERE, name, value)
            did.append(name)
        except OSError as exc:
            if exc.errno not in UNSUPPORTED:
                raise
    before = flags()
    if before is not None:
        fd = os.open(HERE, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.ioctl(fd, SET, struct.pack("i", before | 0x8 | 0x10000))  # synchronous writes and directory updates
        os.close(fd)
        did.append("flags")
    os.chmod(HERE, mode)
    return {"did": did, "mode": oct(os.stat(HERE).st_mode)}


def look():
    state = os.stat(HERE)
    with open(os.path.join(HERE, "mine"), "w") as file:
        file.write("written")
    return {"mode": oct(state.st_mode), "owner": [state.st_uid, state.st_gid], "xattrs": sorted(os.listxattr(HERE)),
            "flags": flags(), "wrote": sorted(os.listxattr(os.path.join(HERE, "mine")))}


print(json.dumps(spoil(int(sys.argv[2], 8)) if sys.argv[1] == "spoil" else look()))
'''

HOG = r'''
"""Use 200 MiB: in a bytearray (`anon`), or in System V segments touched a piece at a time and detached, which no
process then maps (`sysv`)."""
import ctypes, sys

MIB = 1 << 20
if sys.argv[1] == "anon":
    hog = bytearray(200 * MIB)
else:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmat.restype = ctypes.c_void_p
    for _ in range(200 // 16):
        address = libc.shmat(libc.shmget(0, 16 * MIB, 0o1600), None, 0)
        ctypes.memset(address, 0x5A, 16 * MIB)
        libc.shmdt(ctypes.c_void_p(address))
print("survived")
'''

WALK = r'''
"""Walk every file this program can see and try to open each for writing (a directory: whether it may write in it),
never following a link; files of another process in /proc that open are written to as well (a valid timer slack:
the default), since the kernel checks who writes them only then. Its own processes and writable directories are left
out. Prints what it could open, how many entries it saw under each root, and the directories it could not list."""
import json, os, re, stat

OWN = {str(os.getpid()), "self", "thread-self"}
OWN_DIRS = {"/tmp", "/w", "/workspace", "/dev/shm", "/dev/mqueue"}
ROOTS = ("/.hatchway", "/sys/fs/cgroup", "/sys", "/proc")
writable, unlistable, seen = [], [], {}


def root_of(path):
    return next((top for top in ROOTS if path == top or path.startswith(top + "/")), "/")


def try_open(path, mode):
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return
    wrote = None
    if re.match(r"/proc/[0-9]+/", path):
        try:
            wrote = os.write(fd, b"50000") > 0
        except OSError:
            wrote = False
    os.close(fd)
    device = [os.major(mode.st_rdev), os.minor(mode.st_rdev)] if stat.S_ISCHR(mode.st_mode) else None
    writable.append([path, device, wrote])


stack = ["/"]
while stack:
    here = stack.pop()
    try:
        entries = list(os.scandir(here))
    except OSError as exc:
        unlistable.append([here, exc.errno])
        continue
    for entry in entries:
        path = entry.path.replace("//", "/")
        if here == "/proc" and entry.name in OWN:
            continue
        try:
            mode = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISLNK(mode.st_mode) or path in OWN_DIRS:
            continue
        if here == "/proc" and entry.name.isdigit() and mode.st_uid == os.getuid():
            continue  # a process of its own (the shell that started it)
        seen[root_of(path)] = seen.get(root_of(path), 0) + 1
        if stat.S_ISDIR(mode.st_mode):
            if os.access(path, os.W_OK):
                writable.append([path + "/", None, None])
            stack.append(path)
        else:
            try_open(path, mode)
unlistable = [entry for entry in unlistable if root_of(entry[0]) != "/proc"]
print(json.dumps({"writable": writable, "seen": seen, "unlistable": unlistable}))
'''


def left_behind(runtime: str) -> dict[str, list[str]]:
    """What IPC's `leave` says it left on `runtime` (gVisor has no /dev/mqueue, so no POSIX queue there)."""
    return {"left": sorted(["hidden", "msg", "sem", "shm", *(["mqueue"] if runtime == "docker" else [])])}


def pool_server(start_server: ServerFactory, runtime: str, **settings: Any) -> Server:
    """A worker whose one pool keeps one container of the Python test image on `runtime`, reused for 20 jobs."""
    pools = json.dumps([{"image": PYTHON, "runtime": runtime, "size": 1, "reuse_jobs": 20}])
    server = start_server(pools=pools, pool_warm_total=0, allowed_runtimes="docker,gvisor", **settings)
    deadline = time.monotonic() + 120
    while server.client.get("/pools").json()[0]["idle"] < 1:
        assert time.monotonic() < deadline, f"the pool did not fill: {server.client.get('/pools').json()}"
        time.sleep(0.1)  # another process fills it: polling its state over HTTP is all a client can do
    return server


def job(server: Server, runtime: str, command: str, *, pooled: bool = True, **fields: Any) -> dict[str, Any]:
    """Run a Python job to its end; it must have been served by the pool, or not (`pooled`)."""
    answer = server.post_job(wait=True, image=PYTHON, runtime=runtime, command=command, **fields)
    assert answer.status_code == 201, answer.text
    done: dict[str, Any] = answer.json()
    assert done["run"]["pooled"] is pooled, done
    return done


def printed(done: dict[str, Any]) -> dict[str, Any]:
    """The JSON line a program printed; the job must have succeeded."""
    assert done["state"] == "succeeded", done
    result: dict[str, Any] = json.loads(done["stdout"])
    return result
