"""Reading a Dockerfile the way the engine does, to check every image it builds on against policy."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

from hatchway.errors import BuildFailed, NotAllowed

_ESCAPE_DIRECTIVE = re.compile(r"^\s*#\s*escape\s*=", re.IGNORECASE | re.MULTILINE)
_WHITESPACE = re.compile(r"[\t\v\f\r ]+")


def dockerfile_bases(dockerfile: str) -> list[str]:
    """The images a Dockerfile builds on: each FROM and COPY --from that names neither an earlier stage nor `scratch`.

    Refused (NotAllowed): a variable in an image name, as what it expands to cannot be checked against policy
    beforehand; ADD from a URL, which the engine would download with the host's network; control characters, on
    which this reading and the engine's could differ. The engine's parser is mirrored line for line; a file with an
    `# escape=` directive is read with either escape character (engine versions honour it differently), so that no
    instruction the engine sees goes unchecked.
    """
    if any(unicodedata.category(ch) == "Cc" and ch not in "\t\n\r" for ch in dockerfile):
        raise NotAllowed("the Dockerfile contains control characters; remove them")
    bases: list[str] = []
    for escape in ("\\", "`") if _ESCAPE_DIRECTIVE.search(dockerfile) else ("\\",):
        bases.extend(base for base in _bases(dockerfile, escape) if base not in bases)
    return bases


def _bases(dockerfile: str, escape: str) -> list[str]:
    bases: list[str] = []
    # Only stages that are complete count: the engine reads the current stage's own name as an image name.
    stages: set[str] = set()
    current: str | None = None
    saw_from = False
    for instruction, args in _instructions(dockerfile, escape):
        if instruction == "from":
            saw_from = True
            if current is not None:
                stages.add(current)
            words = [word for word in args if not word.startswith("--")]  # --platform=...
            if not words:
                raise BuildFailed("a FROM instruction in the Dockerfile names no image")
            references = words[:1]
            current = words[2].lower() if len(words) == 3 and words[1].lower() == "as" else ""
        elif instruction in ("copy", "add"):
            if instruction == "add" and any("://" in word for word in args):
                raise NotAllowed("the Dockerfile ADDs from a URL; put the file in the build context instead")
            references = [word.partition("=")[2] for word in args if word.lower().startswith("--from=")]
        else:
            continue
        for reference in references:
            if "$" in reference:
                raise NotAllowed(f"the Dockerfile names an image with a variable ({reference!r}); write it out")
            lowered = reference.lower()
            # COPY --from=0 names a stage by its index.
            if lowered not in ("scratch", *stages) and not lowered.isdigit() and reference not in bases:
                bases.append(reference)
    if not saw_from:
        raise BuildFailed("the Dockerfile has no FROM instruction")
    return bases


def _instructions(dockerfile: str, escape: str) -> Iterator[tuple[str, list[str]]]:
    """(instruction in lower case, its words) for each instruction, as the engine's parser splits and joins lines."""
    continuation = re.compile(re.escape(escape) + r"[ \t]*\Z")
    pending: list[str] | None = None
    for raw in dockerfile.removeprefix("\ufeff").split("\n"):
        line = raw.rstrip("\r\n")
        if line.lstrip().startswith("#"):
            continue  # a comment, also inside a continued instruction
        if pending is None:
            line = line.lstrip()
            if not line:
                continue
            pending = []
        elif not line.strip():
            continue  # an empty line does not end a continued instruction
        body, ended = continuation.sub("", line), not continuation.search(line)
        pending.append(body)  # the engine joins continued lines with nothing in between
        if ended:
            yield _split("".join(pending))
            pending = None
    if pending is not None:
        yield _split("".join(pending))


def _split(line: str) -> tuple[str, list[str]]:
    words = [word for word in _WHITESPACE.split(line.strip()) if word]
    return (words[0].lower(), words[1:]) if words else ("", [])
