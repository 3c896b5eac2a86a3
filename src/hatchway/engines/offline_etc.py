"""The /etc/hosts and /etc/resolv.conf of a container without a network, written by hatchway instead of Docker.

Docker sets up even a `none` network through a prestart hook that re-executes the whole dockerd binary in every
container's start (`libnetwork-setkey`): measured here, that hook is about 40 % of a container's CPU cost, and on a
small machine a container's CPU cost is what limits jobs per second. A container created with its network
*disabled* skips it, and is otherwise the same: a network namespace of its own, its loopback brought up by the
runtime (runc and runsc both do), its hostname. Only the two files Docker's network setup writes are then missing
(the image's empty placeholders show), so hatchway mounts its own, read-only, with what Docker would have written:
`localhost` in hosts, and the host's resolv.conf less the nameservers a container cannot reach.
"""

from __future__ import annotations

import hashlib
import ipaddress
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from hatchway.files import write_atomically

HOSTS = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)
DEFAULT_NAMESERVERS = ("8.8.8.8", "8.8.4.4")
"""What Docker puts in a container's resolv.conf when the host names no nameserver a container can reach."""
HOST_RESOLV_CONF = Path("/etc/resolv.conf")
RESOLVED_RESOLV_CONF = Path("/run/systemd/resolve/resolv.conf")
"""systemd-resolved's list of the real nameservers, behind its local stub (127.0.0.53) in /etc/resolv.conf."""


@dataclass(frozen=True)
class OfflineEtc:
    """Where the files are on the host."""

    hosts: Path
    resolv_conf: Path


def resolv_conf(host: str, resolved: str | None = None) -> str:
    """A container's resolv.conf from the host's, as Docker makes it: systemd-resolved's list instead of its local
    stub, nameservers on the loopback or IPv6 dropped (Docker's default networks have no IPv6), and Docker's
    defaults if none is left. Other lines (search, options) are kept."""
    if resolved is not None and _nameservers(host) == ["127.0.0.53"]:
        host = resolved
    lines = [line for line in host.splitlines() if not _unreachable(line)]
    if not _nameservers("\n".join(lines)):
        lines += [f"nameserver {address}" for address in DEFAULT_NAMESERVERS]
    return "\n".join(lines) + "\n"


def container_resolv_conf() -> str:
    """This host's resolv.conf as a container sees it."""
    return resolv_conf(_read(HOST_RESOLV_CONF) or "", _read(RESOLVED_RESOLV_CONF))


def write_offline_etc(directory: Path) -> OfflineEtc:
    """Write the files under `directory` (the worker's data directory, which the engine sees as hatchway does), in
    a folder named by their content: files a running container mounts are never changed under it."""
    contents = {"hosts": HOSTS, "resolv.conf": container_resolv_conf()}
    digest = hashlib.sha256("\0".join(contents.values()).encode()).hexdigest()[:12]
    folder = directory / f"offline-{digest}"
    for name, text in contents.items():
        _write_once(folder / name, text)
    return OfflineEtc(hosts=folder / "hosts", resolv_conf=folder / "resolv.conf")


class OfflineEtcFiles:
    """The files under `directory`, written again when the host's resolv.conf changes (as Docker gives each new
    container the host's current one): a call costs a stat of the host's files until then."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._seen: tuple[tuple[int, int, int] | None, ...] | None = None
        self._files: OfflineEtc | None = None
        self._lock = threading.Lock()  # called from the engine's threads

    def __call__(self) -> OfflineEtc:
        seen = (_stamp(HOST_RESOLV_CONF), _stamp(RESOLVED_RESOLV_CONF))
        with self._lock:
            if self._files is None or seen != self._seen:
                self._files, self._seen = write_offline_etc(self._directory), seen
            return self._files


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()  # through a symlink: /etc/resolv.conf often is one
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _nameservers(text: str) -> list[str]:
    return [fields[1] for fields in map(str.split, text.splitlines()) if len(fields) >= 2 and fields[0] == "nameserver"]


def _unreachable(line: str) -> bool:
    fields = line.split()
    if len(fields) < 2 or fields[0] != "nameserver":
        return False
    try:
        address = ipaddress.ip_address(fields[1].partition("%")[0])
    except ValueError:
        return False
    return address.is_loopback or address.version == 6


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def _write_once(dest: Path, text: str) -> None:
    if not dest.is_file():
        write_atomically(dest, text.encode())


temporary_offline_etc = OfflineEtcFiles(Path(tempfile.gettempdir()) / "hatchway-etc")
"""The files under the system's temporary directory: for an engine made without a data directory (tests)."""
