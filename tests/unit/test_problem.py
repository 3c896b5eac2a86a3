"""Reading an unpacked problem archive: in/NAME.in with out/NAME.out, or NAME.in beside NAME.out, in natural
order."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest

from hatchway.bundles.archive import unpack
from hatchway.errors import HatchwayError, ProblemError
from hatchway.judge.problem import ProblemTest, load_problem, natural_key


def layout(root: Path, files: dict[str, str]) -> Path:
    """Write `files` (relative path -> text) under `root` and return it."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def pairs(*names: str, folder: str = "") -> dict[str, str]:
    files: dict[str, str] = {}
    for name in names:
        files[f"{folder}in/{name}.in"] = f"input {name}"
        files[f"{folder}out/{name}.out"] = f"output {name}"
    return files


def test_tests_are_paired_and_in_natural_order(tmp_path: Path) -> None:
    root = layout(tmp_path, pairs("10", "2", "1", "a10", "a2", "b"))
    tests = load_problem(root)
    assert [test.name for test in tests] == ["1", "2", "10", "a2", "a10", "b"]
    assert tests[0] == ProblemTest("1", root / "in" / "1.in", root / "out" / "1.out")
    assert tests[2].input_path.read_text() == "input 10"
    assert tests[2].expected_path.read_text() == "output 10"


def test_one_top_level_folder_is_tolerated(tmp_path: Path) -> None:
    layout(tmp_path, {**pairs("1", "2", folder="problem/"), "problem/statement.md": "#", ".DS_Store": ""})
    (tmp_path / "__MACOSX").mkdir()
    tests = load_problem(tmp_path)
    assert [test.input_path for test in tests] == [tmp_path / "problem/in/1.in", tmp_path / "problem/in/2.in"]


def test_other_files_beside_in_and_out_are_ignored(tmp_path: Path) -> None:
    root = layout(tmp_path, {**pairs("1"), "README": "x", "checker.cpp": "int main(){}", "in/.hidden": ""})
    assert [test.name for test in load_problem(root)] == ["1"]


def test_unmatched_files_are_named(tmp_path: Path) -> None:
    files = {**pairs("1"), "in/2.in": "", "in/10.in": "", "out/3.out": ""}
    with pytest.raises(ProblemError) as caught:
        load_problem(layout(tmp_path, files))
    assert str(caught.value) == (
        "inputs without an expected output: in/2.in, in/10.in; expected outputs without an input: out/3.out"
    )


def test_many_unmatched_files_are_summarised(tmp_path: Path) -> None:
    files = {f"in/{n}.in": "" for n in range(25)} | {"out/x.out": ""}
    with pytest.raises(ProblemError, match=r"in/9\.in and 15 more; expected outputs without an input: out/x\.out"):
        load_problem(layout(tmp_path, files))


def test_no_tests_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    with pytest.raises(ProblemError, match="no tests"):
        load_problem(tmp_path)


@pytest.mark.parametrize(
    "files",
    [
        {"tests/a/1.in": "", "tests/a/1.out": ""},
        {"README": "", "1.out": ""},
        {"a/in/1.in": "", "a/out/1.out": "", "b/in/1.in": "", "b/out/1.out": ""},
        {},
    ],
    ids=["too-deep", "outputs-only", "two-top-level-folders", "empty"],
)
def test_a_wrong_layout_is_explained(tmp_path: Path, files: dict[str, str]) -> None:
    with pytest.raises(ProblemError, match=r"no tests: expected in/NAME\.in and out/NAME\.out, or NAME\.in and"):
        load_problem(layout(tmp_path, files))


@pytest.mark.parametrize(
    ("stray", "message"),
    [
        ("in/1.txt", r"in/ may hold only regular NAME\.in files; not: in/1\.txt"),
        ("out/1.out.bak", r"out/ may hold only regular NAME\.out files; not: out/1\.out\.bak"),
        ("in/x.in/a", r"not: in/x\.in"),
    ],
    ids=["wrong-suffix", "backup-file", "folder-named-like-a-test"],
)
def test_stray_entries_are_refused(tmp_path: Path, stray: str, message: str) -> None:
    with pytest.raises(ProblemError, match=message):
        load_problem(layout(tmp_path, {**pairs("1"), stray: ""}))


def test_a_bare_suffix_is_not_a_test(tmp_path: Path) -> None:
    # ".in" is a dot file, ignored like other archivers' litter, so this problem simply has no tests.
    with pytest.raises(ProblemError, match="no tests"):
        load_problem(layout(tmp_path, {"in/.in": "", "out/.out": ""}))


def test_symbolic_links_are_refused(tmp_path: Path) -> None:
    root = layout(tmp_path, pairs("1"))
    os.symlink("1.in", root / "in" / "2.in")
    (root / "out" / "2.out").write_text("")
    with pytest.raises(ProblemError, match=r"not: in/2\.in"):
        load_problem(root)


def test_problem_errors_are_hatchway_errors() -> None:
    assert issubclass(ProblemError, HatchwayError)


def test_natural_key() -> None:
    names = ["x10", "x9", "10", "9", "09", "b", "a", "1a", "1b", "", "x"]
    assert sorted(names, key=natural_key) == ["", "1a", "1b", "09", "9", "10", "a", "b", "x", "x9", "x10"]


def test_an_archive_unpacked_by_the_bundle_unpacker(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in pairs("2", "10", "1", folder="sums/").items():
            archive.writestr(name, text)
    (tmp_path / "p.zip").write_bytes(buffer.getvalue())
    unpack(tmp_path / "p.zip", tmp_path / "p", max_total_bytes=1 << 20, max_files=100)
    assert [test.name for test in load_problem(tmp_path / "p")] == ["1", "2", "10"]


def test_a_flat_archive_pairs_its_files_side_by_side(tmp_path: Path) -> None:
    # The submission judge's master zips its tests flat: NAME.in beside NAME.out, and maybe other files.
    files = {"10.in": "i10", "10.out": "o10", "2.in": "i2", "2.out": "o2", "script.txt": "x", "a.in.txt": ""}
    root = layout(tmp_path, files)
    tests = load_problem(root)
    assert tests == [ProblemTest(n, root / f"{n}.in", root / f"{n}.out") for n in ("2", "10")]


def test_a_flat_archive_in_one_folder_and_its_unmatched_files(tmp_path: Path) -> None:
    assert [t.name for t in load_problem(layout(tmp_path / "a", {"tests/1.in": "", "tests/1.out": ""}))] == ["1"]
    with pytest.raises(ProblemError, match=r"^inputs without an expected output: 2\.in$"):
        load_problem(layout(tmp_path / "b", {"1.in": "", "1.out": "", "2.in": ""}))


def test_a_flat_archive_s_link_is_refused(tmp_path: Path) -> None:
    root = layout(tmp_path, {"1.in": ""})
    (root / "1.out").symlink_to("/etc/passwd")
    with pytest.raises(ProblemError, match=r"1\.out is not a regular file"):
        load_problem(root)
