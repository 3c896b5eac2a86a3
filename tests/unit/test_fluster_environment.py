"""A Fluster job's environment from its bundle's pyproject.toml, its extras and pip_packages
(sources/fluster_environment.py), the job it makes (sources/fluster_request.py), and reading that one file of a
bundle without unpacking it (bundles/archive.py's read_member). The bundle is untrusted: every refusal says why."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

from hatchway.bundles import read_member
from hatchway.errors import BadBundle
from hatchway.fluster.proto import cluster_pb2 as pb
from hatchway.settings.fluster import FlusterConfig
from hatchway.sources.fluster_environment import MAX_PYPROJECT_BYTES, Environment, environment
from hatchway.sources.fluster_request import Refusal, job_request, needs_build_network

CONFIG = FlusterConfig(controller_url="http://10.0.0.5:10000", base_image="hatchway-test/fluster-python:latest")
PROJECT = b"""
[project]
name = "My_Job"
version = "0"
dependencies = ["requests>=2", "attrs"]

[project.optional-dependencies]
GPU = ["torch==2.3; sys_platform == 'linux'"]
test = ["pytest"]
all = ["my-job[gpu,test]", "rich"]
"""


def test_the_project_its_asked_extras_and_pip_packages_each_once_in_order() -> None:
    found = environment(PROJECT, ["all"], ["numpy", "attrs"])
    assert found.project == ("requests>=2", "attrs")
    # `all` refers to the project's own extras, which are expanded in place (uv sync's reading), not fetched.
    assert found.extras == {"all": ("torch==2.3; sys_platform == 'linux'", "pytest", "rich")}
    assert found.requirements == [
        "requests>=2",
        "attrs",
        "torch==2.3; sys_platform == 'linux'",
        "pytest",
        "rich",
        "numpy",
    ]
    assert found.described() == (
        "project dependencies: requests>=2, attrs; extra all: torch==2.3; sys_platform == 'linux', pytest, rich; "
        "pip_packages: numpy, attrs"
    )
    assert environment(PROJECT, ["gpu"], []).extras == {"gpu": ("torch==2.3; sys_platform == 'linux'",)}, (
        "extras compare normalised, as PEP 685 says"
    )


@pytest.mark.parametrize(
    "pyproject",
    [
        None,
        b"",
        b"[tool.uv]\nmanaged = true\n",
        b'[project]\nname = "x"\nversion = "0"\n',
        b"[project]\ndependencies = []\n",
        b'[project]\ndynamic = ["version", "optional-dependencies"]\n',  # no extra asked: nothing to compute
    ],
)
def test_a_bundle_that_declares_nothing_needs_nothing(pyproject: bytes | None) -> None:
    assert environment(pyproject, [], []) == Environment()
    request = job_request(_run(), config=CONFIG, worker_id="w", host_network=True, bundle_url=None, pyproject=pyproject)
    assert request.image == CONFIG.base_image and request.build is None


@pytest.mark.parametrize(
    ("pyproject", "extras", "packages", "words"),
    [
        (b"[project\ndependencies = [", [], [], "not valid TOML"),
        (b"\xff\xfe[project]", [], [], "not UTF-8"),
        (b"x = " + b"[" * 50_000 + b"]" * 50_000, [], [], "nests too deeply|not valid TOML"),
        (b"#" * (MAX_PYPROJECT_BYTES + 1), [], [], f"more than {MAX_PYPROJECT_BYTES} bytes"),
        (b'project = "x"', [], [], r"\[project\] that is not a table"),
        (b"[project]\ndependencies = 'requests'", [], [], "project.dependencies that is not a list of strings"),
        (b"[project]\ndependencies = [1]", [], [], "project.dependencies that is not a list of strings"),
        (b'[project]\ndynamic = ["version", "dependencies"]', [], [], "its dependencies dynamic"),
        (b'[project]\ndynamic = ["optional-dependencies"]', ["gpu"], [], "its optional-dependencies dynamic"),
        (b"[project]\ndynamic = 'dependencies'", [], [], "project.dynamic that is not a list of strings"),
        (b'[project]\ndependencies = ["--index-url=http://evil/"]', [], [], "'--index-url=http://evil/', which is not"),
        (b'[project]\ndependencies = ["ok\\nRUN rm -rf /"]', [], [], "not a requirement"),
        (b'[project]\ndependencies = ["' + b"a" * 3000 + b'"]', [], [], "longer than 2048"),
        (PROJECT, ["tpu", "gpu"], [], r"extras \(tpu\) that the bundle's project does not declare"),
        (None, ["tpu"], [], r"extras \(tpu\) .* \(it has no pyproject.toml\)"),
        (
            b"[project.optional-dependencies]\ngpu = 'torch'",
            ["gpu"],
            [],
            "optional-dependencies.gpu that is not a list",
        ),
        (None, [], ["-e/etc"], "pip_packages has '-e/etc'"),
        (None, [], [f"p{n}" for n in range(501)], "501 packages, more than 500"),
    ],
)
def test_what_cannot_be_read_or_installed_is_refused_saying_why(
    pyproject: bytes | None, extras: list[str], packages: list[str], words: str
) -> None:
    with pytest.raises(Refusal, match=words):
        environment(pyproject, extras, packages)


def _run(**fields: Any) -> pb.Worker.RunJobRequest:
    return pb.Worker.RunJobRequest(job_id="train", attempt_id=0, serialized_entrypoint=b"pickle", **fields)


def test_without_the_build_network_the_job_is_refused_naming_every_package() -> None:
    run = _run(environment=pb.EnvironmentConfig(extras=["gpu"], pip_packages=["numpy"]))
    with pytest.raises(Refusal) as refused:
        job_request(run, config=CONFIG, worker_id="w", host_network=True, bundle_url="file:///b.zip", pyproject=PROJECT)
    assert str(refused.value) == (
        "the environment needs packages (project dependencies: requests>=2, attrs; "
        "extra gpu: torch==2.3; sys_platform == 'linux'; pip_packages: numpy), which this worker cannot install: "
        "its image builds have no network (fluster.build_network). Put them in fluster.base_image"
    )


def test_with_it_the_image_installs_exactly_what_is_declared_and_runs_the_bundle_that_was_read() -> None:
    config = CONFIG.model_copy(update={"build_network": True})
    run = _run(environment=pb.EnvironmentConfig(extras=["test"]))
    request = job_request(
        run,
        config=config,
        worker_id="w",
        host_network=True,
        bundle_url="file:///b.zip",
        bundle_sha256="a" * 64,
        pyproject=PROJECT,
    )
    assert request.image is None and request.build is not None and needs_build_network(request)
    assert request.build.dockerfile == (
        f"FROM {CONFIG.base_image}\n"
        "RUN PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir --no-input "
        "--disable-pip-version-check -- 'requests>=2' attrs pytest\n"
    )
    assert request.build.files == {}, "the image is the declarations', not the bundle's code"
    assert (request.bundle_url, request.bundle_sha256) == ("file:///b.zip", "a" * 64)
    other = job_request(
        run,
        config=config,
        worker_id="w",
        host_network=True,
        bundle_url="file:///other.zip",
        bundle_sha256="b" * 64,
        pyproject=PROJECT.replace(b'version = "0"', b'version = "1"'),
    )
    assert other.build == request.build, "another bundle declaring the same shares its image"


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _tar_gz(path: Path, members: dict[str, bytes], link: str | None = None) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        if link is not None:
            info = tarfile.TarInfo(link)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            archive.addfile(info)
    return path


def _read(path: Path, max_bytes: int = 1000) -> bytes | None:
    return read_member(path, "pyproject.toml", max_bytes=max_bytes, max_total_bytes=10**6, max_files=100)


def test_one_file_of_a_zip_or_tar_is_read_without_unpacking(tmp_path: Path) -> None:
    members = {"helper.py": b"x = 1\n", "./pyproject.toml": b"[project]\n"}
    assert _read(_zip(tmp_path / "b.zip", members)) == b"[project]\n"
    assert _read(_tar_gz(tmp_path / "b.tgz", members)) == b"[project]\n"
    assert _read(_zip(tmp_path / "none.zip", {"sub/pyproject.toml": b"[project]\n"})) is None, "only at the root"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["b.tgz", "b.zip", "none.zip"], "nothing unpacked"


def test_a_member_too_big_a_link_or_a_broken_archive_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadBundle, match="holds 11 bytes, more than the 10 allowed"):
        _read(_zip(tmp_path / "big.zip", {"pyproject.toml": b"#" * 11}), max_bytes=10)
    with pytest.raises(BadBundle, match="is a symlink, not a file"):
        _read(_tar_gz(tmp_path / "link.tgz", {}, link="pyproject.toml"))
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(BadBundle):
        _read(tmp_path / "broken.zip")
    with pytest.raises(BadBundle, match="101 entries; at most 100"):
        _read(_zip(tmp_path / "many.zip", {f"f{n}": b"" for n in range(101)}))
    with pytest.raises(BadBundle, match="more than 100 members"):  # a tar is read member by member
        _read(_tar_gz(tmp_path / "many.tgz", {f"f{n}": b"" for n in range(101)}))
