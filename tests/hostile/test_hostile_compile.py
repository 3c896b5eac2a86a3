"""A submitter controls the names of their files and `main`, which a profile puts on the compiler's command line.
Named `@o`, `main` made gcc read its options from the file `o` (`-wrapper /bin/sh,-c,...`: a shell of the
submitter's choosing ran as the compiler); named `--require=./e.js`, it made node load e.js while "checking the
syntax". Such a shell could write without bound into /box, a plain host directory. Now no path component may start
with `-` or `@` (422, naming the field), tools that take `--` get the name after it, and the compile step writes
into a disk of its own, size-limited like a job's (`limits.compile_disk_mb`)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.acceptance.conftest import Server, ServerFactory

pytestmark = pytest.mark.docker

MARKER = "PWNED-" + str(6 * 7)
"""What the payloads print: the product is computed by the shell or node, so the source text alone never matches."""

GCC_WRAPPER = {
    "language": "c",
    "files": {"@o": "", "o": "-wrapper '/bin/sh,-c,echo PWNED-$((6*7)) >&2' x.c", "x.c": "int main(){}"},
    "main": "@o",
}
NODE_REQUIRE = {
    "language": "javascript",
    "files": {"--require=./e.js": "console.log(1)", "e.js": "console.error('PWNED-' + 6 * 7)"},
    "main": "--require=./e.js",
}


def _profiles_server(start_server: ServerFactory) -> Server:
    return start_server(allowed_images="hatchway-test/*,hatchway-profile/*")


def _graded(server: Server, body: dict[str, Any]) -> dict[str, Any]:
    answer = server.client.post("/grade", params={"wait": "true"}, json={**body, "tests": [{"expected_output": "1"}]})
    return {"status": answer.status_code, **answer.json()}


@pytest.mark.parametrize("body", [GCC_WRAPPER, NODE_REQUIRE], ids=["gcc -wrapper", "node --require"])
def test_a_file_named_like_an_option_never_reaches_the_compiler(
    start_server: ServerFactory, body: dict[str, Any]
) -> None:
    server = _profiles_server(start_server)
    answer = _graded(server, body)
    compiled = (answer.get("compile") or {}).get("output", "")
    assert answer["status"] == 422, (
        f"accepted ({answer.get('verdict')}); the payload ran: {MARKER in compiled}\n{compiled}"
    )
    assert answer["error"]["code"] == "invalid_request"
    fields = {detail["field"] for detail in answer["error"]["details"]}
    assert fields and all(field.split(".")[0] in ("files", "main") for field in fields), fields
    assert "a compiler would take it for an option" in answer["error"]["message"]
    # The same program under a plain name still compiles and runs.
    fine = _graded(server, {"language": "javascript", "files": {"main.js": "console.log(1)"}})
    assert (fine["status"], fine["verdict"]) == (201, "AC"), fine
    assert server.stop() == 0


def test_a_compile_step_that_writes_without_end_fills_only_its_own_disk(start_server: ServerFactory) -> None:
    # A profile whose compile runs the submission's own build script (as a make or gradle profile would): the
    # submission decides what "compiling" writes. 12 files of 256 MiB, 3 GiB, each under the 1 GiB file-size limit.
    build = {
        "image": "hatchway-profile/c:latest",
        "source_name": "build.sh",
        "compile": ["sh", "{main}"],
        "run": ["true"],
    }
    server = start_server(allowed_images="hatchway-test/*,hatchway-profile/*", profiles=json.dumps({"build": build}))
    script = (
        "i=0; while [ $i -lt 12 ]; do i=$((i + 1));"
        " head -c 268435456 /dev/zero > big$i || { echo stopped at file $i; exit 1; }; echo wrote file $i; done\n"
    )
    body = {"language": "build", "code": script, "limits": {"compile_timeout_s": 120}}
    answer = _graded(server, body)
    assert answer["status"] == 201, answer
    compiled = (answer.get("compile") or {}).get("output", "")
    assert "wrote file 2" not in compiled, f"the compile step wrote gigabytes to the host:\n{compiled}"
    assert answer["verdict"] == "CE", answer
    assert "No space left on device" in compiled and "stopped at file 1" in compiled, compiled
    assert "the compile step filled its disk (limits.compile_disk_mb = 256)" in compiled
    # A compile disk asked for larger takes what it was asked for, and no more.
    answer = _graded(server, {**body, "limits": {"compile_timeout_s": 120, "compile_disk_mb": 600}})
    compiled = (answer.get("compile") or {}).get("output", "")
    assert "wrote file 2" in compiled and "stopped at file 3" in compiled, compiled
    data_dir = server.log_path.parent
    # The runner removes a grading's files just after it has answered: wait for that, within a deadline.
    deadline = time.monotonic() + 30
    while list((data_dir / "work").iterdir()):
        assert time.monotonic() < deadline, "the grading's files are never removed"
        time.sleep(0.05)
    kept = sum(path.stat().st_blocks * 512 for path in (data_dir / "volumes").glob("*/disk.ext4"))
    assert kept < 64 * 2**20, f"spare disks hold {kept} bytes of the host's disk after the gradings"
    assert server.stop() == 0
