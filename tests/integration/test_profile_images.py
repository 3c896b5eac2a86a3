"""Every built-in profile's local image compiles and runs an a+b program with the profile's own commands.

Under the conditions a judge runs them in: uid 65534, a read-only root filesystem, no network, a writable /tmp;
the compile in a writable /box, the run with /box read-only in a scratch /tmp, within a 256 MB limit plus the
profile's `extra_memory_mb`. A missing image is built here with `build_profile_image` (minutes), never skipped.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import docker
import pytest

from hatchway.cli.main import main
from hatchway.grading.profile_images import build_profile_image, image_status
from hatchway.judge.profiles import DEFAULT_PROFILES, Profile

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1200)]  # a missing image takes minutes to build

NOBODY = 65534
MEMORY_LIMIT_MB = 256
COMPILE_MEMORY_MB = 512
PIDS = 256
SOURCES = {
    "python": "a, b = map(int, input().split())\nprint(a + b)\n",
    "c": '#include <stdio.h>\nint main(void) {\n    long a, b;\n    if (scanf("%ld %ld", &a, &b) != 2) return 1;\n'
    '    printf("%ld\\n", a + b);\n    return 0;\n}\n',
    "cpp": "#include <iostream>\nint main() {\n    long long a, b;\n    std::cin >> a >> b;\n"
    "    std::cout << a + b << std::endl;\n}\n",
    "javascript": "const [a, b] = require('fs').readFileSync(0, 'utf8').trim().split(/\\s+/).map(Number);\n"
    "console.log(a + b);\n",
    "rust": "use std::io::Read;\nfn main() {\n    let mut s = String::new();\n"
    "    std::io::stdin().read_to_string(&mut s).unwrap();\n"
    "    let n: Vec<i64> = s.split_whitespace().map(|x| x.parse().unwrap()).collect();\n"
    '    println!("{}", n[0] + n[1]);\n}\n',
    "java": "import java.io.*;\nimport java.util.*;\n\npublic class Main {\n"
    "    public static void main(String[] args) throws IOException {\n"
    "        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));\n"
    "        StringTokenizer st = new StringTokenizer(in.readLine());\n"
    "        long a = Long.parseLong(st.nextToken()), b = Long.parseLong(st.nextToken());\n"
    "        System.out.println(a + b);\n    }\n}\n",
    "go": 'package main\n\nimport "fmt"\n\nfunc main() {\n    var a, b int64\n    fmt.Scan(&a, &b)\n'
    "    fmt.Println(a + b)\n}\n",
}


@pytest.fixture(scope="session")
def profile_image(docker_client: docker.DockerClient) -> Callable[[Profile], str]:
    """Make sure a profile's image is on the engine, building it (once per session) if it is not."""
    ready: set[str] = set()

    def ensure(profile: Profile) -> str:
        if profile.name not in ready:
            build_profile_image(profile)
            docker_client.images.get(profile.image)  # raises if the build left no image behind
            ready.add(profile.name)
        return profile.image

    return ensure


def docker_run(*args: str, stdin: str | None = None, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "run", "--rm", *args], input=stdin, capture_output=True, text=True, timeout=timeout_s
    )


def env_flags(env: dict[str, str]) -> list[str]:
    return [flag for name, value in env.items() for flag in ("--env", f"{name}={value}")]


def write_box(tmp_path: Path, profile: Profile) -> Path:
    box = tmp_path / "box"
    box.mkdir()
    (box / profile.source_name).write_text(SOURCES[profile.name])
    for path in (box, *box.iterdir()):
        os.chown(path, NOBODY, NOBODY)
    return box


def test_every_built_in_profile_has_a_program_here() -> None:
    assert sorted(SOURCES) == sorted(DEFAULT_PROFILES)


@pytest.mark.parametrize("name", sorted(DEFAULT_PROFILES))
def test_profile_compiles_and_runs_a_plus_b(name: str, tmp_path: Path, profile_image: Callable[[Profile], str]) -> None:
    profile = DEFAULT_PROFILES[name]
    image = profile_image(profile)
    box = write_box(tmp_path, profile)
    sandbox = ["--network", "none", "--user", f"{NOBODY}:{NOBODY}", "--read-only", "--pids-limit", str(PIDS)]

    compile_argv = profile.compile_argv()
    if compile_argv is not None:
        compiled = docker_run(
            *sandbox,
            "--memory",
            f"{COMPILE_MEMORY_MB}m",
            "--memory-swap",
            f"{COMPILE_MEMORY_MB}m",
            "--tmpfs",
            "/tmp:rw,exec,size=256m",
            "-v",
            f"{box}:/box:rw",
            "-w",
            "/box",
            *env_flags(profile.compile_environment),
            image,
            *compile_argv,
        )
        assert compiled.returncode == 0, f"compile failed:\n{compiled.stdout}\n{compiled.stderr}"

    memory_mb = profile.memory_limit_mb(MEMORY_LIMIT_MB)
    ran = docker_run(
        *sandbox,
        "--memory",
        f"{memory_mb}m",
        "--memory-swap",
        f"{memory_mb}m",
        "--tmpfs",
        "/tmp",
        "-v",
        f"{box}:/box:ro",
        "-w",
        "/tmp",
        "-i",
        *env_flags(profile.env),
        image,
        *profile.run_argv(),
        stdin="1 2\n",
    )
    assert ran.returncode == 0, f"run failed:\n{ran.stdout}\n{ran.stderr}"
    assert ran.stdout == "3\n"
    assert ran.stderr == ""


@pytest.mark.parametrize("name", sorted(DEFAULT_PROFILES))
def test_profile_image_is_current_and_runs_nothing_as_root(name: str, profile_image: Callable[[Profile], str]) -> None:
    profile = DEFAULT_PROFILES[name]
    image = profile_image(profile)
    status = image_status(profile)
    assert status.present
    assert status.current, f"{image} was built from other packages: scripts/profile-images.sh --force {name}"
    who = docker_run("--network", "none", "--user", f"{NOBODY}:{NOBODY}", "--read-only", image, "id", "-un")
    assert who.stdout.strip() == "nobody"
    box = docker_run("--network", "none", "--read-only", image, "test", "-d", "/box")
    assert box.returncode == 0, "the image has no /box to mount the artefacts on"


def test_profiles_list_says_which_images_are_here(
    capsys: pytest.CaptureFixture[str], profile_image: Callable[[Profile], str]
) -> None:
    profile_image(DEFAULT_PROFILES["python"])
    assert main(["profiles", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["NAME", "IMAGE", "PRESENT"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert sorted(rows) == sorted(DEFAULT_PROFILES)
    assert rows["python"][1:3] == ["hatchway-profile/python:latest", "yes"]


def test_profiles_build_keeps_present_images_and_refuses_unknown_names(
    capsys: pytest.CaptureFixture[str], profile_image: Callable[[Profile], str]
) -> None:
    profile_image(DEFAULT_PROFILES["c"])
    assert main(["profiles", "build", "c"]) == 0
    assert "hatchway-profile/c:latest is present" in capsys.readouterr().out
    assert main(["profiles", "build", "cobol"]) == 2
    assert "no profile named 'cobol'; this worker has: c, cpp, go" in capsys.readouterr().err
