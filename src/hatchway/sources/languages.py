"""Language names as masters write them -> this worker's language profiles: the map every dialect that lets an
item name its language reads (a submission's `lang` or `compiler`, a task's `language`)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from hatchway.settings import SourceConfig

DEFAULT_LANGUAGES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "c": "c",
        "gcc": "c",
        "cpp": "cpp",
        "cxx": "cpp",
        "c++": "cpp",
        "g++": "cpp",
        "py": "python",
        "python": "python",
        "python3": "python",
        "java": "java",
        "js": "javascript",
        "javascript": "javascript",
        "node": "javascript",
        "rust": "rust",
        "rs": "rust",
        "go": "go",
        "golang": "go",
    }
)
"""A master's language names -> language profiles; a source's `languages` are laid over these."""


def language_map(config: SourceConfig) -> dict[str, str]:
    """The source's language names (lower case) -> profile names: the built-in map with its own over it."""
    return {**DEFAULT_LANGUAGES, **{name.lower(): profile for name, profile in config.languages.items()}}
