"""The package as built and installed carries its sandbox supervisor (setup.py runs the one recipe).

Each test builds from a copy of the source tree without a built binary, offline (`--no-build-isolation`: the
venv's setuptools), so the repository's own tree is never written to.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from hatchway.sandbox.binary import BINARY, SOURCE_FILES, is_fresh

ROOT = Path(__file__).resolve().parents[2]
PACKAGED = "hatchway/sandbox/bin/hatchway-supervisor"
SOURCES = [f"hatchway/sandbox/supervisor/{name}" for name in (*SOURCE_FILES, "supervisor.h")]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """The files a package build reads, copied without build products (a built binary above all)."""
    copy = tmp_path / "tree"
    copy.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy2(ROOT / name, copy / name)
    shutil.copytree(
        ROOT / "src", copy / "src", ignore=shutil.ignore_patterns("bin", "__pycache__", "*.egg-info", "*.pyc")
    )
    assert not (copy / "src" / BINARY.relative_to(ROOT / "src")).exists()
    return copy


def pip_wheel(tree: Path, out: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(tree), "--no-deps", "--no-build-isolation", "-v", "-w", str(out)],
        capture_output=True,
        text=True,
        timeout=150,
        env={**os.environ, **env},
    )


def build_wheel(tree: Path, out: Path, **env: str) -> tuple[Path, str]:
    result = pip_wheel(tree, out, **env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [wheel] = out.glob("hatchway-*.whl")
    return wheel, result.stdout + result.stderr


def test_the_wheel_carries_a_working_supervisor_and_its_sources(tree: Path, tmp_path: Path) -> None:
    wheel, _ = build_wheel(tree, tmp_path / "wheels")
    assert wheel.name.startswith("hatchway-0") and wheel.name.endswith("-py3-none-linux_x86_64.whl"), wheel.name
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert {PACKAGED, *SOURCES} <= names
        assert stat.S_IMODE(archive.getinfo(PACKAGED).external_attr >> 16) == 0o755
        [wheel_meta] = [name for name in names if name.endswith(".dist-info/WHEEL")]
        assert "Root-Is-Purelib: false" in archive.read(wheel_meta).decode()
        supervisor = tmp_path / "hatchway-supervisor"
        supervisor.write_bytes(archive.read(PACKAGED))
    supervisor.chmod(0o755)

    # The packaged binary is the supervisor: it says it is ready, and ends when its input does.
    ready = subprocess.run([str(supervisor)], input=b"", capture_output=True, timeout=30, check=True)
    assert json.loads(ready.stdout.splitlines()[0]) == {"ready": True, "version": 1, "mode": "proc"}


def test_installed_from_the_wheel_hatchway_finds_its_supervisor(tree: Path, tmp_path: Path) -> None:
    wheel, _ = build_wheel(tree, tmp_path / "wheels")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    # binary.py needs none of hatchway's dependencies, so this venv does not need them either.
    probe = (
        "from hatchway.sandbox.binary import supervisor_path, is_fresh; p = supervisor_path(); print(p, is_fresh(p))"
    )
    found = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    path, fresh = found.stdout.split()
    assert Path(path).is_relative_to(venv) and fresh == "True", found.stdout


def test_without_a_compiler_the_wheel_builds_without_the_binary_and_says_so(tree: Path, tmp_path: Path) -> None:
    no_cc = tmp_path / "empty-path"
    no_cc.mkdir()
    wheel, output = build_wheel(tree, tmp_path / "wheels", PATH=str(no_cc))
    assert "WARNING: hatchway is installed without its sandbox supervisor" in output
    assert "no C compiler" in output
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert PACKAGED not in names
    assert set(SOURCES) <= names, "the sources are there to build it later"

    required = pip_wheel(tree, tmp_path / "required", PATH=str(no_cc), HATCHWAY_REQUIRE_SUPERVISOR="1")
    assert required.returncode != 0 and "no C compiler" in required.stdout + required.stderr
    assert not list((tmp_path / "required").glob("*.whl"))


def test_an_editable_build_compiles_the_supervisor_into_the_source_tree(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "editable"
    out.mkdir()
    subprocess.run(
        [sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_editable({str(out)!r})"],
        cwd=tree,
        check=True,
        capture_output=True,
        timeout=150,
    )
    built = tree / "src" / BINARY.relative_to(ROOT / "src")
    assert built.is_file()
    assert is_fresh(built, source_dir=tree / "src" / "hatchway" / "sandbox" / "supervisor")
