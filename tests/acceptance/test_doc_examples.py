"""The shell examples of the README and docs/ run as they are written, against a real worker.

Each `sh` block says in an HTML comment just before it whether it runs (`<!-- example -->`, `<!-- example: exits
N -->`) or not (`<!-- not run: why -->`); a block marked `<!-- output -->` right after an example is what it prints.
A page's examples run in order, with bash, against a fresh `hatchway serve` of the page's own, from a scratch
directory holding the checkout's `.venv`; the only change made to them is the worker's address. docs/README.md
says how outputs are matched.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.conftest import ServerFactory
from tests.conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"sh", "bash", "shell", "console"}
# Pages that must keep runnable examples: a page losing all its markers fails here rather than passing vacuously.
PAGES_WITH_EXAMPLES = {
    "README.md": 4,
    "docs/jobs.md": 4,
    "docs/cli.md": 2,
    "docs/grading.md": 1,
    "docs/operations.md": 1,
}
DOCUMENTED_ADDRESSES = ("localhost:8080", "127.0.0.1:8080")
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+|~~~+)(?P<info>[^`]*)$")
MARKER = re.compile(r"^\s*<!--\s*(?P<text>.*?)\s*-->\s*$")
EXITS = re.compile(r"example: exits (?P<code>\d+)")


@dataclass(frozen=True)
class Block:
    """One fenced block of a page, with the HTML comment on the line before it (if any)."""

    page: str
    line: int
    info: str
    text: str
    marker: str | None

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


@dataclass(frozen=True)
class Example:
    block: Block
    exit_code: int
    output: Block | None
    strict: bool  # `set -e -o pipefail`: any failing command fails it (`exits N` blocks run to their end)


def blocks(path: Path, page: str) -> list[Block]:
    """Every fenced block of a Markdown file, in order (fences may be indented, as in list items)."""
    lines = path.read_text().split("\n")
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        end = index + 1
        while end < len(lines) and lines[end].strip() != fence:
            end += 1
        before = lines[index - 1] if index > 0 else ""
        marker = MARKER.match(before)
        body = "\n".join(line[indent:] if line[:indent].isspace() else line for line in lines[index + 1 : end])
        found.append(Block(page, index + 1, opening["info"].strip(), body + "\n", marker["text"] if marker else None))
        index = end + 1
    return found


def examples(path: Path, page: str | None = None) -> tuple[list[Example], list[str]]:
    """The runnable examples of a page with their outputs, and what is wrong with its markers."""
    found: list[Example] = []
    problems: list[str] = []
    page_blocks = blocks(path, page or str(path.relative_to(ROOT)))
    for position, block in enumerate(page_blocks):
        following = page_blocks[position + 1] if position + 1 < len(page_blocks) else None
        output = following if following is not None and following.marker == "output" else None
        if block.marker == "output":
            previous = page_blocks[position - 1] if position > 0 else None
            if previous is None or not (previous.marker or "").startswith("example"):
                problems.append(f"{block.where}: an output block that follows no example")
            continue
        if block.info not in SHELL:
            if block.marker is not None and block.marker.startswith("example"):
                problems.append(f"{block.where}: only sh blocks run, this one is {block.info!r}")
            continue
        if block.marker == "example":
            found.append(Example(block, 0, output, strict=True))
        elif block.marker is not None and (exits := EXITS.fullmatch(block.marker)):
            found.append(Example(block, int(exits["code"]), output, strict=False))
        elif block.marker is not None and re.fullmatch(r"not run: \S.*", block.marker):
            if output is not None:
                problems.append(f"{output.where}: an output block after an example that does not run")
        else:
            problems.append(
                f"{block.where}: say before the block whether it runs: <!-- example -->, <!-- example: exits N -->"
                f" or <!-- not run: why --> (found {block.marker!r})"
            )
    return found, problems


def runnable_pages() -> list[str]:
    return [str(path.relative_to(ROOT)) for path in PAGES if examples(path)[0]]


def test_every_shell_block_says_whether_it_runs() -> None:
    problems = [problem for path in PAGES for problem in examples(path)[1]]
    assert problems == [], "\n".join(problems)
    counts = {page: len(examples(ROOT / page)[0]) for page in PAGES_WITH_EXAMPLES}
    fewer = {page: count for page, count in counts.items() if count < PAGES_WITH_EXAMPLES[page]}
    assert fewer == {}, f"pages with fewer runnable examples than they had: {fewer}"
    readme = (ROOT / "README.md").read_text()
    for section in ("## A first job", "## A first grading"):
        assert section in readme, f"the README has no {section!r} section"


def test_the_parser_reads_markers_and_outputs(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- example -->\n```sh\necho hi\n```\n\n<!-- output -->\n```text\nhi\n```\n"
        "- a list item:\n\n  <!-- example: exits 3 -->\n  ```sh\n  exit 3\n  ```\n"
        "<!-- not run: a reason -->\n```sh\nrm -rf /\n```\n```sh\nunmarked\n```\n"
    )
    found, problems = examples(page, "page.md")
    assert [(example.block.text, example.exit_code, example.strict) for example in found] == [
        ("echo hi\n", 0, True),
        ("exit 3\n", 3, False),
    ]
    assert found[0].output is not None and found[0].output.text == "hi\n" and found[1].output is None
    assert len(problems) == 1 and "page.md:20" in problems[0], problems


# --- what an example printed, against what its page says it prints


def json_values(text: str) -> list[Any]:
    decoder = json.JSONDecoder()
    values: list[Any] = []
    position = 0
    while (position := len(text) - len(text[position:].lstrip())) < len(text):
        value, position = decoder.raw_decode(text, position)
        values.append(value)
    return values


def json_mismatch(expected: Any, actual: Any, where: str = "$") -> str | None:
    """Where `actual` differs from `expected`: objects need only the keys shown, "..." matches anything."""
    if expected == "...":
        return None
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{where}: expected an object, got {actual!r}"
        for key, value in expected.items():
            if key not in actual:
                return f"{where}: no key {key!r} in {sorted(actual)}"
            if problem := json_mismatch(value, actual[key], f"{where}.{key}"):
                return problem
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return f"{where}: expected {len(expected)} items, got {actual!r}"
        for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
            if problem := json_mismatch(want, got, f"{where}[{index}]"):
                return problem
        return None
    same = type(expected) is type(actual) or {type(expected), type(actual)} <= {int, float}
    return None if same and expected == actual else f"{where}: expected {expected!r}, got {actual!r}"


def text_pattern(expected: str) -> re.Pattern[str]:
    """A line `...` is any number of lines, `...` within a line any text; runs of spaces count as one."""
    pieces = []
    for line in normalised(expected).split("\n"):
        if line == "...":
            pieces.append(r"(?:[^\n]*\n)*?")
        else:
            pieces.append(".*?".join(re.escape(part) for part in line.split("...")) + r"\n")
    return re.compile("".join(pieces))


def normalised(text: str) -> str:
    lines = [re.sub(r"[ \t]+", " ", line).rstrip() for line in text.rstrip().split("\n")]
    return "\n".join(lines)


def output_mismatch(expected: Block, printed: str) -> str | None:
    if expected.info == "json":
        try:
            actual = json_values(printed)
        except json.JSONDecodeError as exc:
            return f"not JSON ({exc})"
        wanted = json_values(expected.text)
        if len(actual) != len(wanted):
            return f"{len(actual)} JSON values printed, the page shows {len(wanted)}"
        for index, (want, got) in enumerate(zip(wanted, actual, strict=True)):
            if problem := json_mismatch(want, got, f"value {index + 1}"):
                return problem
        return None
    if text_pattern(expected.text).fullmatch(normalised(printed) + "\n"):
        return None
    return "the output differs from the page's"


def test_outputs_are_matched_as_the_docs_say() -> None:
    block = Block("p", 1, "text", "a  b\n...\nz ... end\n", "output")
    assert output_mismatch(block, "a b\nx\ny\nz middle end\n\n") is None
    assert output_mismatch(block, "a b\nz end\n") is not None  # `...` within a line is at least the spaces around it
    assert output_mismatch(block, "a b\nz middle end\nextra\n") is not None
    shown = Block("p", 1, "json", '{"state": "failed", "id": "...", "tests": [{"v": 1}]}\n42\n', "output")
    assert output_mismatch(shown, '{"state":"failed","id":"x","more":1,"tests":[{"v":1.0,"w":2}]}42') is None
    assert "state" in (output_mismatch(shown, '{"state":"succeeded","id":"x","tests":[{"v":1}]}42') or "")
    assert output_mismatch(shown, '{"state":"failed","id":"x","tests":[{"v":1},{"v":2}]}42') is not None
    assert output_mismatch(shown, '{"error": {"code": "invalid"}}') is not None


# --- running them


def scratch_directory(tmp_path: Path) -> Path:
    """Where a page's examples run: empty but for `.venv/bin`, this checkout's scripts (hatchway among them)."""
    scripts = Path(sys.executable).parent
    assert (scripts / "hatchway").exists(), f"no hatchway script beside {sys.executable}"
    cwd = tmp_path / "examples"
    (cwd / ".venv").mkdir(parents=True)
    (cwd / ".venv" / "bin").symlink_to(scripts)
    return cwd


def for_the_test_worker(script: str, port: int) -> str:
    for address in DOCUMENTED_ADDRESSES:
        script = script.replace(address, f"127.0.0.1:{port}")
    return script


@pytest.mark.docker
@pytest.mark.timeout(90)
@pytest.mark.parametrize("page", runnable_pages())
def test_the_examples_run_as_written(page: str, start_server: ServerFactory, tmp_path: Path) -> None:
    page_examples, problems = examples(ROOT / page)
    assert problems == [], "\n".join(problems)
    server = start_server(allowed_images="hatchway-test/*,hatchway-profile/*")
    cwd = scratch_directory(tmp_path)
    env = {key: value for key, value in os.environ.items() if not key.startswith("HATCHWAY_")}
    env.update(HATCHWAY_URL=server.url, PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    for example in page_examples:
        script = for_the_test_worker(example.block.text, server.port)
        strict = "set -e -o pipefail\n" if example.strict else ""
        ran = subprocess.run(
            ["bash", "-c", strict + script], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, timeout=60,
        )  # fmt: skip
        told = f"{example.block.where}:\n{script}\n-- printed (exit {ran.returncode}):\n{ran.stdout}"
        assert ran.returncode == example.exit_code, f"exit {ran.returncode}, not {example.exit_code}: {told}"
        if example.output is not None:
            problem = output_mismatch(example.output, ran.stdout)
            assert problem is None, f"{problem}; the page ({example.output.where}) shows:\n{example.output.text}{told}"
