"""A submitter controls the names of their files and `main`, which a profile puts on the compiler's command line.
Named `@o`, `main` made gcc read its options from the file `o` (`-wrapper /bin/sh,-c,...`: a shell of the
submitter's choosing ran as the compiler); named `--require=./e.js`, it made node load e.js while "checking the
syntax". Now no path component may start with `-` or `@` (422, naming the
field), and tools that take `--` get the name after it."""

from __future__ import annotations

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
