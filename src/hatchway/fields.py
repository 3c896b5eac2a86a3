"""The annotated field types that job and grading requests share: ids, labels, paths, names, URLs.

Each carries its own validation, so a request model states a field's rule once, by its type.
"""

from __future__ import annotations

import posixpath
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
LABEL_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,62}$"
PORT_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]{0,31}$"


def _relative_path(value: str) -> str:
    if not value or "\x00" in value:
        raise ValueError("file paths must be non-empty and contain no NUL byte")
    if value.startswith("/"):
        raise ValueError(f"file path {value!r} must be relative to the working directory")
    normal = posixpath.normpath(value)
    if normal == "." or normal.startswith("../") or normal == "..":
        raise ValueError(f"file path {value!r} must stay inside the working directory")
    return normal


def _source_path(value: str) -> str:
    """A submission's file name: a relative path no component of which a compiler could read as an option (`-`)
    or an options file (`@`), since profiles pass it on a command line."""
    for part in value.split("/"):
        if part.startswith(("-", "@")):
            raise ValueError(
                f"file path {value!r} has a component starting with {part[0]!r}: a compiler would take it for an "
                "option; rename it"
            )
    return value


def _env_name(value: str) -> str:
    if not value or "=" in value or "\x00" in value:
        raise ValueError(f"environment variable name {value!r} must be non-empty without '=' or NUL")
    return value


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("strings passed to a container cannot contain a NUL byte")
    return value


RelativePath = Annotated[str, AfterValidator(_relative_path)]
SourcePath = Annotated[str, AfterValidator(_relative_path), AfterValidator(_source_path)]
"""A path in a grading's submission: relative, and never read as a compiler's option (see `_source_path`)."""
EnvName = Annotated[str, AfterValidator(_env_name)]
CleanStr = Annotated[str, AfterValidator(_no_nul)]
LabelKey = Annotated[str, Field(pattern=LABEL_KEY_PATTERN)]
LabelValue = Annotated[str, Field(max_length=256)]
JobId = Annotated[str, Field(pattern=JOB_ID_PATTERN)]
Placement = Annotated[dict[LabelKey, LabelValue], Field(max_length=32)]
"""Labels a worker must have (all of them, with these values) to run a job: keys and values as labels'."""
Runtime = Literal["docker", "gvisor", "auto"]
PortName = Annotated[str, Field(pattern=PORT_NAME_PATTERN)]
CallbackUrl = Annotated[str, Field(pattern=r"^https?://", max_length=4096)]


def label_key_ok(key: str) -> bool:
    """Whether `key` is a valid label key (used for query filters)."""
    return re.fullmatch(LABEL_KEY_PATTERN, key) is not None
