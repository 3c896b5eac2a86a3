"""Reading a Dockerfile into the stages and instructions hatchway's builder (`builder`) runs, and checking it
before anything runs: the images it builds on (against policy, at submission too) and the instructions it uses.

Lines are read as Docker's parser reads them: parser directives at the top (`# escape=`, `# syntax=`, the latter
ignored), comments, continuation lines (the escape character at a line's end; comment and empty lines inside a
continued instruction are skipped, and the lines are joined with nothing in between). What hatchway's builder does
not do is refused here with a message naming it, rather than built differently from what its author expects:
VOLUME, ONBUILD, HEALTHCHECK, heredocs and BuildKit's flags (`RUN --mount`, `COPY --chmod`, `FROM --platform`).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from hatchway.errors import BuildFailed, NotAllowed

_DIRECTIVE = re.compile(r"#\s*([A-Za-z][A-Za-z0-9]*)\s*=\s*(.*?)\s*")
_KNOWN_DIRECTIVES = ("escape", "syntax")
_FLAG = re.compile(r"--([A-Za-z0-9-]+)(?:=(\S*))?(?:\s+|\Z)")
_HEREDOC = re.compile(r"(?:^|\s)<<-?[\"']?[A-Za-z_]")
SUPPORTED = (
    "FROM", "RUN", "CMD", "ENTRYPOINT", "ENV", "ARG", "LABEL", "COPY", "ADD", "WORKDIR", "USER", "EXPOSE",
    "STOPSIGNAL", "SHELL", "MAINTAINER",
)  # fmt: skip
"""The instructions hatchway's builder runs."""
_REFUSED = {
    "VOLUME": "a job's writable places are its working directory and /tmp, on its size-limited disk",
    "ONBUILD": "triggers for later builds are not kept",
    "HEALTHCHECK": "jobs are not health-checked",
}
_FLAGS: Mapping[str, tuple[str, ...]] = {"COPY": ("chown", "from"), "ADD": ("chown",)}
_NEEDS_JSON = ("SHELL",)


@dataclass(frozen=True)
class Instruction:
    """One instruction as written: its keyword, flags and the rest of its text (continuations joined)."""

    keyword: str
    """In upper case: RUN, COPY, ..."""
    args: str
    flags: Mapping[str, str]
    line: int
    """The line it starts on, from 1."""
    text: str
    """The whole instruction as one line, for the build log."""

    def exec_form(self) -> list[str] | None:
        """The args as a JSON array of strings (`RUN ["a", "b"]`), or None for the shell form."""
        return _json_list(self.args)


@dataclass(frozen=True)
class Stage:
    """A FROM and the instructions up to the next one."""

    base: str
    """The image (or earlier stage, or `scratch`) it starts from, as written."""
    name: str
    """Its `AS` name in lower case, or empty."""
    line: int
    instructions: tuple[Instruction, ...] = ()


@dataclass(frozen=True)
class Dockerfile:
    """A parsed Dockerfile: the ARGs before its first FROM, its stages, and the images it builds on."""

    escape: str
    global_args: tuple[Instruction, ...]
    stages: tuple[Stage, ...]
    bases: tuple[str, ...] = field(default=())
    """Each image named by a FROM or COPY --from that is neither an earlier stage nor `scratch`, in order."""


def parse(dockerfile: str) -> Dockerfile:
    """The Dockerfile's stages and instructions. Raises BuildFailed for what is malformed or not supported,
    NotAllowed for what policy refuses: a variable in an image name (what it expands to cannot be checked
    beforehand), ADD from a URL (which would download with the host's network), control characters."""
    if any(unicodedata.category(ch) == "Cc" and ch not in "\t\n\r" for ch in dockerfile):
        raise NotAllowed("the Dockerfile contains control characters; remove them")
    lines = dockerfile.removeprefix("\ufeff").split("\n")
    escape = _directives(lines)
    global_args: list[Instruction] = []
    stages: list[Stage] = []
    bases: list[str] = []
    names: list[str] = []  # of complete stages: the current stage's own name is an image name to the engine
    current: list[Instruction] = []
    for instruction in _instructions(lines, escape):
        _check(instruction)
        keyword = instruction.keyword
        if keyword == "FROM":
            if stages:
                stages[-1] = _with(stages[-1], current)
                names.append(stages[-1].name)
            stage = _stage(instruction)
            _add_base(bases, stage.base, names)
            stages.append(stage)
            current = []
        elif not stages:
            if keyword != "ARG":
                raise BuildFailed(f"line {instruction.line}: {keyword} comes before the first FROM; start with FROM")
            global_args.append(instruction)
        else:
            if keyword == "COPY" and "from" in instruction.flags:
                _add_base(bases, instruction.flags["from"], names)
            current.append(instruction)
    if not stages:
        raise BuildFailed("the Dockerfile has no FROM instruction")
    stages[-1] = _with(stages[-1], current)
    return Dockerfile(escape=escape, global_args=tuple(global_args), stages=tuple(stages), bases=tuple(bases))


def dockerfile_bases(dockerfile: str) -> list[str]:
    """The images a Dockerfile builds on (see `Dockerfile.bases`); raises as `parse` does."""
    return list(parse(dockerfile).bases)


def stage_index(reference: str, names: list[str]) -> int | None:
    """Which of the stages named `names` (complete ones, in order) `reference` means: by name or by number."""
    lowered = reference.lower()
    if lowered.isdigit():
        return int(lowered) if int(lowered) < len(names) else None
    for index in range(len(names) - 1, -1, -1):
        if names[index] and names[index] == lowered:
            return index
    return None


def _add_base(bases: list[str], reference: str, names: list[str]) -> None:
    if "$" in reference:
        raise NotAllowed(f"the Dockerfile names an image with a variable ({reference!r}); write it out")
    if reference.lower() == "scratch" or stage_index(reference, names) is not None:
        return
    if reference.isdigit():
        raise BuildFailed(f"COPY --from={reference} names a stage that does not come before it")
    if reference not in bases:
        bases.append(reference)


def _stage(instruction: Instruction) -> Stage:
    words = instruction.args.split()
    if len(words) == 3 and words[1].lower() == "as":
        name = words[2].lower()
        if not re.fullmatch(r"[a-z][a-z0-9_.-]*", name):
            raise BuildFailed(f"line {instruction.line}: {words[2]!r} is not a valid stage name")
        return Stage(base=words[0], name=name, line=instruction.line)
    if len(words) != 1:
        raise BuildFailed(f"line {instruction.line}: FROM takes an image and optionally `AS name`: {instruction.text}")
    return Stage(base=words[0], name="", line=instruction.line)


def _with(stage: Stage, instructions: list[Instruction]) -> Stage:
    return Stage(base=stage.base, name=stage.name, line=stage.line, instructions=tuple(instructions))


def _check(instruction: Instruction) -> None:
    """Refuse, naming it, what the builder would not do as Docker's does."""
    keyword, line = instruction.keyword, instruction.line
    if keyword in _REFUSED:
        raise BuildFailed(f"line {line}: {keyword} is not supported by this worker's builder ({_REFUSED[keyword]})")
    if keyword not in SUPPORTED:
        raise BuildFailed(f"line {line}: unknown instruction {keyword}")
    for flag in instruction.flags:
        if flag not in _FLAGS.get(keyword, ()):
            raise BuildFailed(
                f"line {line}: {keyword} --{flag} is not supported by this worker's builder"
                + (" (only --chown and --from are)" if keyword == "COPY" else "")
                + (" (only --chown is)" if keyword == "ADD" else "")
            )
    if not instruction.args.strip():
        raise BuildFailed(f"line {line}: {keyword} needs arguments")
    if keyword in ("RUN", "COPY", "ADD") and instruction.exec_form() is None and _HEREDOC.search(instruction.args):
        raise BuildFailed(f"line {line}: heredocs (<<EOF) are not supported by this worker's builder")
    if keyword == "ADD" and any("://" in word for word in instruction.args.split()):
        raise NotAllowed("the Dockerfile ADDs from a URL; put the file in the build context instead")
    if keyword in _NEEDS_JSON and instruction.exec_form() is None:
        raise BuildFailed(f'line {line}: {keyword} takes a JSON array of strings, e.g. SHELL ["/bin/sh", "-c"]')


def _directives(lines: list[str]) -> str:
    """The escape character the directives at the top set (the backslash if none)."""
    seen: dict[str, str] = {}
    for raw in lines:
        match = _DIRECTIVE.fullmatch(raw.rstrip("\r"))
        if match is None or match.group(1).lower() not in _KNOWN_DIRECTIVES:
            break  # directives end at the first line that is not one (an unknown one is a comment)
        name = match.group(1).lower()
        if name in seen:
            raise BuildFailed(f"the parser directive {name!r} is given twice")
        seen[name] = match.group(2)
    escape = seen.get("escape", "\\")
    if escape not in ("\\", "`"):
        raise BuildFailed(f"invalid escape directive {escape!r}: it must be a backslash or a backtick")
    return escape


def _instructions(lines: list[str], escape: str) -> Iterator[Instruction]:
    """Each instruction with its start line, as Docker's parser splits and joins lines."""
    continuation = re.compile(re.escape(escape) + r"[ \t]*\Z")
    pending: list[str] | None = None
    start = 0
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r")
        if line.lstrip().startswith("#"):
            continue  # a comment (or a directive, read already), also inside a continued instruction
        if pending is None:
            line = line.lstrip()
            if not line:
                continue
            pending, start = [], number
        elif not line.strip():
            continue  # an empty line does not end a continued instruction
        ended = not continuation.search(line)
        pending.append(continuation.sub("", line))
        if ended:
            yield _instruction("".join(pending), start)
            pending = None
    if pending is not None:
        yield _instruction("".join(pending), start)


def _instruction(text: str, line: int) -> Instruction:
    keyword, *more = re.split(r"\s+", text.strip(), maxsplit=1)
    rest = more[0] if more else ""
    flags: dict[str, str] = {}
    while rest.startswith("--"):
        match = _FLAG.match(rest)
        if match is None:
            break
        flags[match.group(1).lower()] = match.group(2) or ""
        rest = rest[match.end() :]
    return Instruction(keyword=keyword.upper(), args=rest.strip(), flags=flags, line=line, text=text.strip())


def _json_list(text: str) -> list[str] | None:
    if not text.lstrip().startswith("["):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None  # Docker's rule: what does not parse as JSON is the shell form
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    return None
