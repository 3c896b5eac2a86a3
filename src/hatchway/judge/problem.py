"""Problem archives in one of two layouts, told apart by what the archive holds:

- the judge's layout: `in/NAME.in` and `out/NAME.out`, one pair per test;
- the flat layout of the submission judge's master: `NAME.in` and `NAME.out` side by side.

Either may sit at the top of the archive or inside one top-level folder (`problem/in/1.in`, `problem/1.in`), as
zipping a folder produces. Other files (a statement, a README) are ignored. This module reads a directory that is
already unpacked (see `hatchway.bundles.archive.unpack`, which refuses hostile archives).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from hatchway.errors import ProblemError

_INPUTS, _OUTPUTS = "in", "out"
_INPUT_SUFFIX, _OUTPUT_SUFFIX = ".in", ".out"
_MOST_NAMED = 10
_DIGITS = re.compile(r"([0-9]+)")


@dataclass(frozen=True)
class ProblemTest:
    """One test of a problem: its name (the file name without suffix) and where its input and expected output are."""

    name: str
    input_path: Path
    expected_path: Path


def natural_key(name: str) -> tuple[tuple[str | int, ...], str]:
    """A sort key putting numbers in number order: "2" before "10", "a2" before "a10"; ties broken by the name."""
    # re.split with a capturing group alternates text and digits, text first, so parts compare like with like.
    parts = tuple(int(part) if index % 2 else part for index, part in enumerate(_DIGITS.split(name)))
    return parts, name


def load_problem(root: Path) -> list[ProblemTest]:
    """The tests of the problem unpacked at `root`, in natural name order.

    Raises `ProblemError` if there are neither in/ and out/ folders nor `NAME.in` files (at the top or in one
    top-level folder), if a file in the folders is not a regular `NAME.in` / `NAME.out` file (symbolic links are
    refused too, in either layout), if an input has no expected output or the other way round, or if there are no
    tests.
    """
    base = _find_base(root)
    if _has_layout(base):
        inputs = _named_files(base / _INPUTS, _INPUT_SUFFIX)
        outputs = _named_files(base / _OUTPUTS, _OUTPUT_SUFFIX)
        in_folder, out_folder = f"{_INPUTS}/", f"{_OUTPUTS}/"
    else:
        inputs, outputs = _flat_files(base, _INPUT_SUFFIX), _flat_files(base, _OUTPUT_SUFFIX)
        in_folder = out_folder = ""
    lonely_inputs = sorted(inputs.keys() - outputs.keys(), key=natural_key)
    lonely_outputs = sorted(outputs.keys() - inputs.keys(), key=natural_key)
    if lonely_inputs or lonely_outputs:
        problems = []
        if lonely_inputs:
            problems.append(f"inputs without an expected output: {_listed(in_folder, lonely_inputs, _INPUT_SUFFIX)}")
        if lonely_outputs:
            problems.append(f"expected outputs without an input: {_listed(out_folder, lonely_outputs, _OUTPUT_SUFFIX)}")
        raise ProblemError("; ".join(problems))
    if not inputs:
        raise ProblemError(f"the problem has no tests: {in_folder or 'it'} holds no NAME.in / NAME.out files")
    return [ProblemTest(name, inputs[name], outputs[name]) for name in sorted(inputs, key=natural_key)]


def _find_base(root: Path) -> Path:
    if _has_layout(root) or _is_flat(root):
        return root
    entries = [entry for entry in root.iterdir() if not _ignored(entry.name)]
    only = entries[0] if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink() else None
    if only is not None and (_has_layout(only) or _is_flat(only)):
        return only
    raise ProblemError(
        f"the problem has no tests: expected {_INPUTS}/NAME{_INPUT_SUFFIX} and {_OUTPUTS}/NAME{_OUTPUT_SUFFIX}, or "
        f"NAME{_INPUT_SUFFIX} and NAME{_OUTPUT_SUFFIX} side by side, at the top of the archive or inside one "
        "top-level folder"
    )


def _has_layout(folder: Path) -> bool:
    return all((folder / name).is_dir() and not (folder / name).is_symlink() for name in (_INPUTS, _OUTPUTS))


def _is_flat(folder: Path) -> bool:
    """Whether `folder` holds tests side by side: some `NAME.in` (a link counts, to be refused by name)."""
    return any(entry.name.endswith(_INPUT_SUFFIX) for entry in folder.iterdir() if not _ignored(entry.name))


def _flat_files(folder: Path, suffix: str) -> dict[str, Path]:
    """The `NAME{suffix}` files of a flat layout; anything else beside them is ignored, as in the judge's layout."""
    files: dict[str, Path] = {}
    for entry in folder.iterdir():
        name = entry.name.removesuffix(suffix)
        if _ignored(entry.name) or not name or name == entry.name:
            continue
        if entry.is_symlink() or not entry.is_file():
            raise ProblemError(f"{entry.name} is not a regular file; a test's input and output must be")
        files[name] = entry
    return files


def _ignored(name: str) -> bool:
    """Litter archivers leave behind: dot files (.DS_Store) and macOS's __MACOSX folder."""
    return name.startswith(".") or name == "__MACOSX"


def _named_files(folder: Path, suffix: str) -> dict[str, Path]:
    files: dict[str, Path] = {}
    strays: list[str] = []
    for entry in folder.iterdir():
        if _ignored(entry.name):
            continue
        name = entry.name.removesuffix(suffix)
        if entry.is_symlink() or not entry.is_file() or not name or name == entry.name:
            strays.append(entry.name)
        else:
            files[name] = entry
    if strays:
        strays.sort(key=natural_key)
        shown = ", ".join(f"{folder.name}/{name}" for name in strays[:_MOST_NAMED])
        more = f" and {len(strays) - _MOST_NAMED} more" if len(strays) > _MOST_NAMED else ""
        raise ProblemError(f"{folder.name}/ may hold only regular NAME{suffix} files; not: {shown}{more}")
    return files


def _listed(folder: str, names: list[str], suffix: str) -> str:
    shown = ", ".join(f"{folder}{name}{suffix}" for name in names[:_MOST_NAMED])
    return shown + (f" and {len(names) - _MOST_NAMED} more" if len(names) > _MOST_NAMED else "")
