"""The package's layers, lowest first: a module imports only from its own package and the packages of its layer or
below, never upward, and no modules import each other in a circle (type-checking imports and imports inside
functions included). A new package must be given its layer here; the docs' architecture page draws the same."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import hatchway

LAYERS = [
    ["errors", "files", "fields", "egress", "fluster"],  # no hatchway imports but each other
    ["judge"],  # pure grading logic: requests, limits, reports, checkers, verdicts, problems, profiles
    ["models"],  # the job's values
    ["output"],  # what jobs print and leave
    ["settings", "sandbox"],
    ["engines"],
    ["bundles", "store"],
    ["pools"],
    ["jobs"],
    ["grading"],  # the grading runtime
    ["sources"],
    ["observability"],
    ["worker"],  # composition (bootstrap), start and drain
    ["api", "web"],
    ["cli", "config_docs"],
]
RANK = {name: n for n, names in enumerate(LAYERS) for name in names}
PACKAGE = Path(hatchway.__file__).parent


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> Iterator[str]:
    """Every hatchway module `path` imports, anywhere in it."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hatchway"):
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                yield submodule if submodule in known else node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name.startswith("hatchway"))


def room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: {target for target in imports(path, known) if target in known} for name, path in known.items()}


def test_every_package_and_root_module_has_a_layer() -> None:
    rooms = {room(name) for name in modules()} - {None, "__main__"}
    assert sorted(rooms - set(RANK)) == [], "give each new package or root module its layer in LAYERS"
    assert sorted(set(RANK) - rooms) == [], "LAYERS names a room that no longer exists"


def test_no_import_runs_upward() -> None:
    upward = [
        f"{name} -> {target}"
        for name, targets in graph().items()
        for target in sorted(targets)
        if room(name) and room(target) and room(target) != room(name) and RANK[room(target)] > RANK[room(name)]
    ]
    assert upward == []


def test_no_modules_import_each_other_in_a_circle() -> None:
    edges = graph()
    circles: list[list[str]] = []
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    assert circles == []
