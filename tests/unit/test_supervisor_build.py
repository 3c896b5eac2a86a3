"""The supervisor's one build recipe (`hatchway.sandbox.binary`): what it compiles, and when it compiles again.

A stand-in compiler records its calls and writes a dummy binary, so these tests count builds without compiling;
the real compile is test_supervisor.py's fixture and the package build's test.

The sources' layering: the C files call each other's functions one way, in the order of supervisor.h's file map.
"""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hatchway.errors import SandboxUnavailable
from hatchway.sandbox import binary
from hatchway.sandbox.binary import (
    COMPILE_FLAGS,
    SOURCE_DIR,
    SOURCE_FILES,
    build_supervisor,
    ensure_built,
    is_fresh,
    source_digest,
    stamp_path,
)

FAKE_CC = """#!/bin/sh
echo "$@" >> "$(dirname "$0")/calls"
while [ $# -gt 0 ]; do
  [ "$1" = -o ] && out=$2
  shift
done
printf '#!/bin/sh\\n' > "$out"
"""


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    """A copy of the supervisor's sources that a test may edit."""
    return Path(shutil.copytree(SOURCE_DIR, tmp_path / "supervisor"))


@pytest.fixture
def cc(tmp_path: Path) -> Path:
    path = tmp_path / "cc" / "fake-cc"
    path.parent.mkdir()
    path.write_text(FAKE_CC)
    path.chmod(0o755)
    return path


def calls(cc: Path) -> list[str]:
    log = cc.with_name("calls")
    return log.read_text().splitlines() if log.exists() else []


def test_the_sources_list_names_every_c_file_and_the_header_is_there() -> None:
    assert sorted(SOURCE_FILES) == sorted(path.name for path in SOURCE_DIR.glob("*.c"))
    assert (SOURCE_DIR / "supervisor.h").is_file()


def test_the_recipe_compiles_every_source_with_the_flags(tmp_path: Path, sources: Path, cc: Path) -> None:
    dest = tmp_path / "bin" / "hatchway-supervisor"
    assert build_supervisor(dest, cc=str(cc), source_dir=sources) == dest
    [call] = calls(cc)
    words = call.split()
    flags, output, files = (
        words[: len(COMPILE_FLAGS)],
        words[len(COMPILE_FLAGS) : -len(SOURCE_FILES)],
        words[-len(SOURCE_FILES) :],
    )
    assert tuple(flags) == COMPILE_FLAGS
    assert output[0] == "-o" and Path(output[1]).parent == dest.parent, "compiled beside dest, then renamed"
    assert files == [str(sources / name) for name in SOURCE_FILES]
    assert dest.stat().st_mode & 0o777 == 0o755
    assert is_fresh(dest, source_dir=sources)
    assert sorted(path.name for path in dest.parent.iterdir()) == sorted([dest.name, stamp_path(dest).name])


@pytest.mark.parametrize("edited", ["supervisor.h", "util.c", "main.c"])
def test_editing_any_source_file_rebuilds_and_nothing_else_does(
    tmp_path: Path, sources: Path, cc: Path, edited: str
) -> None:
    dest = tmp_path / "bin" / "hatchway-supervisor"
    assert ensure_built(dest, cc=str(cc), source_dir=sources)
    assert not ensure_built(dest, cc=str(cc), source_dir=sources), "fresh: not built again"
    # A newer modification time with the same content is not a change.
    (sources / edited).touch()
    assert not ensure_built(dest, cc=str(cc), source_dir=sources)
    with (sources / edited).open("a") as source:
        source.write("/* edited */\n")
    assert not is_fresh(dest, source_dir=sources)
    assert ensure_built(dest, cc=str(cc), source_dir=sources)
    assert not ensure_built(dest, cc=str(cc), source_dir=sources)
    assert len(calls(cc)) == 2


def test_a_new_header_a_missing_binary_or_stamp_rebuilds(tmp_path: Path, sources: Path, cc: Path) -> None:
    dest = tmp_path / "bin" / "hatchway-supervisor"
    ensure_built(dest, cc=str(cc), source_dir=sources)
    (sources / "limits.h").write_text("#define X 1\n")
    assert ensure_built(dest, cc=str(cc), source_dir=sources)
    dest.unlink()
    assert ensure_built(dest, cc=str(cc), source_dir=sources)
    stamp_path(dest).unlink()
    assert ensure_built(dest, cc=str(cc), source_dir=sources)
    assert len(calls(cc)) == 4


def test_other_flags_make_the_binary_stale(
    tmp_path: Path, sources: Path, cc: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "bin" / "hatchway-supervisor"
    ensure_built(dest, cc=str(cc), source_dir=sources)
    before = source_digest(sources)
    monkeypatch.setattr(binary, "COMPILE_FLAGS", (*COMPILE_FLAGS, "-g"))
    assert source_digest(sources) != before
    assert not is_fresh(dest, source_dir=sources)


def test_a_failed_build_raises_and_leaves_the_binary_stale(tmp_path: Path, sources: Path, cc: Path) -> None:
    dest = tmp_path / "bin" / "hatchway-supervisor"
    ensure_built(dest, cc=str(cc), source_dir=sources)
    (sources / "util.c").write_text("this is not C\n")
    broken = cc.with_name("broken-cc")
    broken.write_text("#!/bin/sh\necho 'util.c:1: error: expected something' >&2\nexit 1\n")
    broken.chmod(0o755)
    with pytest.raises(SandboxUnavailable, match="expected something"):
        ensure_built(dest, cc=str(broken), source_dir=sources)
    assert not is_fresh(dest, source_dir=sources)
    assert sorted(path.name for path in dest.parent.iterdir()) == sorted([dest.name, stamp_path(dest).name])
    with pytest.raises(SandboxUnavailable, match="no C compiler"):
        build_supervisor(dest, cc="no-such-cc-here", source_dir=sources)


def test_the_command_line_builds_once_and_checks(tmp_path: Path, cc: Path) -> None:
    dest = tmp_path / "hatchway-supervisor"
    command = [sys.executable, "-m", "hatchway.sandbox.binary"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*command, *args], capture_output=True, text=True, timeout=60)

    assert run("check", str(dest)).returncode == 1
    first = run("build", str(dest), "--cc", str(cc))
    assert (first.returncode, first.stdout) == (0, f"built {dest}\n"), first.stderr
    again = run("build", str(dest), "--cc", str(cc))
    assert (again.returncode, again.stdout) == (0, ""), again.stderr
    assert run("check", str(dest)).returncode == 0
    forced = run("build", str(dest), "--cc", str(cc), "--force")
    assert (forced.returncode, forced.stdout) == (0, f"built {dest}\n"), forced.stderr
    assert len(calls(cc)) == 2
    failed = run("build", str(tmp_path / "other"), "--cc", "no-such-cc-here")
    assert failed.returncode == 1 and "no C compiler" in failed.stderr


def test_the_recipe_imports_only_the_standard_library_and_hatchway() -> None:
    # scripts/build-supervisor.sh and setup.py run it with a bare python3 and PYTHONPATH=src, before any install.
    probe = (
        "import sys; before = set(sys.modules); import hatchway.sandbox.binary; "
        "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
        "print('\\n'.join(sorted(new - set(sys.stdlib_module_names))))"
    )
    src = Path(binary.__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", f"import sys; sys.path.insert(0, {str(src)!r}); {probe}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    assert out == ["hatchway"]


# ---------------------------------------------------------------- the files' layering

# Comments, string and character literals, and preprocessor lines: nothing in them is a call.
_NOT_CODE = re.compile(
    r"/\*.*?\*/|//[^\n]*|\"(?:\\.|[^\"\\\n])*\"|'(?:\\.|[^'\\\n])*'|^[ \t]*#[^\n]*(?:\\\n[^\n]*)*",
    re.DOTALL | re.MULTILINE,
)
# At the top level, with every {...} block emptied: `name(parameters) {` is a definition, its prefix says if static.
_DEFINITION = re.compile(r"(?:^|[;}])([^;{}]*?)\b([A-Za-z_]\w*)\s*\((?:[^()]|\([^()]*\))*\)\s*\{")
_CALL = re.compile(r"\b([A-Za-z_]\w*)\s*\(")


def _code(text: str) -> str:
    return _NOT_CODE.sub(" ", text)


def _top_level(code: str) -> str:
    out, depth = [], 0
    for ch in code:
        if ch == "}":
            depth -= 1
        if depth == 0:
            out.append(ch)
        if ch == "{":
            depth += 1
    return "".join(out)


def supervisor_call_graph(source_dir: Path = SOURCE_DIR) -> dict[str, dict[str, set[str]]]:
    """For each .c file, the other files whose functions it calls, each with the functions called."""
    code = {path.name: _code(path.read_text()) for path in sorted(source_dir.glob("*.c"))}
    defined: dict[str, set[str]] = {}
    owner: dict[str, str] = {}  # a function other files can call -> the file that defines it
    for name, text in code.items():
        defined[name] = set()
        for prefix, function in _DEFINITION.findall(_top_level(text)):
            defined[name].add(function)
            if not re.search(r"\bstatic\b", prefix):
                assert owner.setdefault(function, name) == name, (
                    f"{function} is defined in {owner[function]} and {name}"
                )
    graph: dict[str, dict[str, set[str]]] = {name: {} for name in code}
    for name, text in code.items():
        for function in set(_CALL.findall(text)) - defined[name]:
            if function in owner:
                graph[name].setdefault(owner[function], set()).add(function)
    return graph


def find_cycle(graph: dict[str, dict[str, set[str]]]) -> list[str]:
    """Files that call each other in a circle, as [a, b, ..., a]; [] if the calls run one way."""
    state: dict[str, str] = {}  # "open" while on the path, "done" once all it reaches is known to be acyclic
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = "open"
        path.append(node)
        for callee in sorted(graph[node]):
            if state.get(callee) == "open":
                return [*path[path.index(callee) :], callee]
            if callee not in state and (cycle := visit(callee)):
                return cycle
        state[node] = "done"
        path.pop()
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def test_the_call_graph_finds_calls_between_files_and_circles(tmp_path: Path) -> None:
    graph = supervisor_call_graph()
    assert sorted(graph) == sorted(SOURCE_FILES)
    assert graph["main.c"]["run.c"] == {"handle_run"}, "the parser sees main() call handle_run"
    (tmp_path / "a.c").write_text(
        '#include "x.h"\n/* c_one() */\nstatic int local(void) { return b_one(); }\n'
        "int a_one(int (*f)(void), char c) {\n    return f() + local() + (c == '{');\n}\n"
    )
    (tmp_path / "b.c").write_text('int b_one(void)\n{\n    const char *s = "a_one()";\n    return c_one();\n}\n')
    (tmp_path / "c.c").write_text("static int local(void) { return 0; }\nint c_one(void) { return a_one(0, 0); }\n")
    assert supervisor_call_graph(tmp_path) == {
        "a.c": {"b.c": {"b_one"}},
        "b.c": {"c.c": {"c_one"}},
        "c.c": {"a.c": {"a_one"}},
    }
    assert find_cycle(supervisor_call_graph(tmp_path)) == ["a.c", "b.c", "c.c", "a.c"]


def test_the_supervisor_files_call_each_other_one_way() -> None:
    # The layering in supervisor.h's file map: a file calls functions of the files below it only, so that each
    # file can be read knowing only those. A call upward is a function in the wrong file: move it down.
    graph = supervisor_call_graph()
    cycle = find_cycle(graph)
    calls = [f"{a} -> {b}: {', '.join(sorted(graph[a][b]))}" for a, b in itertools.pairwise(cycle)]
    assert not cycle, "files that call each other in a circle:\n" + "\n".join(calls)
    header = (SOURCE_DIR / "supervisor.h").read_text()
    layers = re.findall(r"^ \*   (\w+\.c) ", header, re.MULTILINE)
    assert sorted(layers) == sorted(SOURCE_FILES), "supervisor.h's file map names every file once"
    upward = [
        f"{caller} -> {callee}: {', '.join(sorted(functions))}"
        for caller, callees in graph.items()
        for callee, functions in callees.items()
        if layers.index(callee) < layers.index(caller)
    ]
    assert not upward, "calls to a file above the caller in supervisor.h's file map:\n" + "\n".join(upward)
