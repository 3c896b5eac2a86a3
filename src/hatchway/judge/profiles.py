"""Language profiles: how a submission in one language is compiled once and then run for each test.

A profile names an image and two commands. `compile` (a syntax check for interpreted languages; None for no
step at all) runs with the working directory `/box`, which holds the submission's sources and is writable; it
must leave in `/box` whatever `run` needs. `run` runs once per test in a fresh, writable scratch directory, with
`/box` mounted read-only. Both run as uid 65534 on a read-only root filesystem with a writable `/tmp`, so every
compiler and runtime is pointed at `/tmp` for its home and caches (`env`, `compile_env`).

Two placeholders may appear in either command: ``{main}``, the entry point's path relative to `/box` (a `files`
submission's `main`, else `source_name`), and ``{source}``, the profile's `source_name`. No component of ``{main}``
starts with `-` or `@`, so no tool reads it as an option or an options file (gcc's and javac's `@file`); a command
also puts it after `--` where its tool takes that as the end of options (python's py_compile, node, rustc, go; gcc,
g++ and javac do not, and the names rule alone protects them).

`time_factor` multiplies the CPU and wall-clock limits for slow runtimes; `extra_memory_mb` is added to the memory
limit for the runtime's own overhead (the JVM's), while the memory a result reports is still the real peak.

The built-in profiles (`DEFAULT_PROFILES`) use local images, ``hatchway-profile/<name>:latest``, made from the Debian
packages in `packages` by ``hatchway profiles build`` (see `hatchway.grading.profile_images`); no registry is needed.
The worker's settings can change any field of a built-in profile, or define a new profile, under ``profiles``::

    profiles:
      java:
        time_factor: 3           # only this field changes; the rest stays built in
      kotlin:                    # a new profile needs image, source_name and run
        image: hatchway-profile/kotlin:latest
        source_name: main.kt
        compile: [kotlinc, "{main}", -include-runtime, -d, main.jar]
        run: [java, -jar, /box/main.jar]
        extra_memory_mb: 256
        env: {HOME: /tmp}
        packages: [kotlin]

Where a registry is reachable, a profile can name an official image instead; it is pulled like any job's image,
and ``profiles build`` leaves it alone once `packages` is emptied. The built-in commands suit these images: they put
their tools on PATH, and every path a tool writes to is set to `/tmp` by the profile's environment::

    profiles:
      c:      {image: "gcc:13", packages: []}
      cpp:    {image: "gcc:13", packages: []}
      python: {image: "python:3.12-slim", packages: []}
      java:   {image: "eclipse-temurin:21", packages: []}
      go:     {image: "golang:1.22", packages: []}
      rust:   {image: "rust:1", packages: []}
      javascript: {image: "node:20-slim", packages: []}

A submission names its language (a profile name) or its build tool; `TOOLS` maps tools to profiles and
`profile_for` picks one, raising `UnknownProfile` when this worker has none.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from hatchway.errors import ConfigError, InvalidRequest

PROFILE_NAME_PATTERN = r"^[a-z][a-z0-9_+-]{0,31}$"
IMAGE_REPOSITORY = "hatchway-profile"
PLACEHOLDERS = ("{main}", "{source}")


def _env_name(value: str) -> str:
    if not value or "=" in value or "\x00" in value:
        raise ValueError(f"environment variable name {value!r} must be non-empty without '=' or NUL")
    return value


ProfileName = Annotated[str, Field(pattern=PROFILE_NAME_PATTERN)]
ImageName = Annotated[str, Field(min_length=1, max_length=512, pattern=r"^[^\s]+$")]
SourceName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}$", description="A plain file name.")]
Argv = Annotated[tuple[str, ...], Field(min_length=1)]
TimeFactor = Annotated[float, Field(ge=1, le=100)]
ExtraMemoryMb = Annotated[int, Field(ge=0, le=64 * 1024)]
Env = dict[Annotated[str, AfterValidator(_env_name)], str]
# A Debian package name, so nothing else can reach mmdebstrap's --include.
PackageName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9+.-]+$")]


class UnknownProfile(InvalidRequest):
    """No language profile on this worker fits the submission's language or build tool (a 422 for a client)."""

    code = "unknown_profile"


class Profile(BaseModel):
    """How to compile and run one language: image, commands, environment and limit adjustments."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ProfileName
    image: ImageName
    source_name: SourceName = Field(description="The file a single-file submission's `code` is written to.")
    compile: Argv | None = Field(default=None, description="Run in /box (writable); None for interpreted languages.")
    run: Argv = Field(description="Run in a scratch directory, with /box read-only.")
    time_factor: TimeFactor = Field(default=1.0, description="Multiplies the CPU and wall-clock limits.")
    extra_memory_mb: ExtraMemoryMb = Field(default=0, description="Added to the memory limit for the runtime.")
    env: Env = Field(default_factory=dict, description="For both compile and run.")
    compile_env: Env = Field(default_factory=dict, description="For compile only, over `env`.")
    packages: tuple[PackageName, ...] = Field(default=(), description="Debian packages the local image holds.")

    def compile_argv(self, main: str | None = None) -> list[str] | None:
        """The compile command with its placeholders filled in; `main` defaults to `source_name`."""
        if self.compile is None:
            return None
        return self._expand(self.compile, main)

    def run_argv(self, main: str | None = None) -> list[str]:
        """The run command with its placeholders filled in; `main` defaults to `source_name`."""
        return self._expand(self.run, main)

    @property
    def compile_environment(self) -> dict[str, str]:
        """What the compile runs with: `env`, then `compile_env` over it."""
        return {**self.env, **self.compile_env}

    def time_limit_s(self, limit_s: float) -> float:
        """A CPU or wall-clock limit, scaled for this runtime."""
        return limit_s * self.time_factor

    def memory_limit_mb(self, limit_mb: int) -> int:
        """The memory limit the sandbox enforces: the submission's limit plus the runtime's overhead."""
        return limit_mb + self.extra_memory_mb

    def _expand(self, argv: tuple[str, ...], main: str | None) -> list[str]:
        entry = self.source_name if main is None else _relative(main)
        return [arg.replace("{main}", entry).replace("{source}", self.source_name) for arg in argv]


def _relative(path: str) -> str:
    """`path` if it names a file inside /box that no tool reads as an option; the submission's edge validates it
    (`SourcePath`), this only guards the commands."""
    normal = posixpath.normpath(path)
    if not path or path.startswith("/") or normal in (".", "..") or normal.startswith("../") or "\x00" in path:
        raise ValueError(f"main {path!r} must be a relative path inside /box")
    if any(part.startswith(("-", "@")) for part in normal.split("/")):
        raise ValueError(f"main {path!r} has a component starting with '-' or '@', which a tool reads as an option")
    return normal


class ProfileConfig(BaseModel):
    """One `profiles` entry of the settings: overrides of a built-in profile's fields, or a whole new profile.

    Only the fields given change; giving `compile: null` makes a profile interpreted. A new profile must give
    `image`, `source_name` and `run`. Dictionaries (`env`, `compile_env`) and lists are replaced, not merged.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: ImageName | None = None
    source_name: SourceName | None = None
    compile: Argv | None = None
    run: Argv | None = None
    time_factor: TimeFactor | None = None
    extra_memory_mb: ExtraMemoryMb | None = None
    env: Env | None = None
    compile_env: Env | None = None
    packages: tuple[PackageName, ...] | None = None


def default_image(name: str) -> str:
    """The local image a built-in profile uses."""
    return f"{IMAGE_REPOSITORY}/{name}:latest"


_HOME = {"HOME": "/tmp"}
_JVM = ("-XX:+UseSerialGC", "-XX:-UsePerfData", "-Xshare:auto")


def _builtin(name: str, **fields: Any) -> Profile:
    return Profile(name=name, image=default_image(name), **fields)


DEFAULT_PROFILES: Final[Mapping[str, Profile]] = MappingProxyType(
    {
        profile.name: profile
        for profile in (
            _builtin(
                "python",
                source_name="main.py",
                # Compiling to bytecode finds syntax errors before any test runs: CE, as for compiled languages.
                compile=("python3", "-m", "py_compile", "--", "{main}"),
                run=("python3", "/box/{main}"),
                # /box is read-only when the program runs: no __pycache__ to write.
                env={**_HOME, "PYTHONDONTWRITEBYTECODE": "1"},
                packages=("python3",),
            ),
            # Static: no dynamic loader at start-up, and the binary runs in any image (a slimmer run image, gVisor).
            _builtin(
                "c",
                source_name="main.c",
                compile=("gcc", "-O2", "-std=gnu17", "-static", "-pipe", "-o", "main", "{main}", "-lm"),
                run=("/box/main",),
                env=_HOME,
                packages=("gcc", "libc6-dev"),
            ),
            _builtin(
                "cpp",
                source_name="main.cpp",
                compile=("g++", "-O2", "-std=gnu++17", "-static", "-pipe", "-o", "main", "{main}"),
                run=("/box/main",),
                env=_HOME,
                packages=("g++", "libc6-dev"),
            ),
            _builtin(
                "javascript",
                source_name="main.js",
                compile=("node", "--check", "--", "{main}"),  # a syntax check: CE before any test runs
                run=("node", "/box/{main}"),
                extra_memory_mb=64,  # V8's heap and code space before the program allocates anything
                env=_HOME,
                packages=("nodejs",),
            ),
            _builtin(
                "rust",
                source_name="main.rs",
                # Static like C's; debug information dropped (a 12 MB binary becomes 1.4 MB), symbols kept for
                # panic backtraces.
                compile=(
                    "rustc",
                    "-O",
                    "--edition",
                    "2021",
                    "-C",
                    "target-feature=+crt-static",
                    "-C",
                    "strip=debuginfo",
                    "-o",
                    "main",
                    "--",
                    "{main}",
                ),
                run=("/box/main",),
                env=_HOME,
                packages=("rustc",),
            ),
            _builtin(
                "java",
                source_name="Main.java",
                # C1 only: javac is short-lived, so the optimising compiler would cost more than it saves.
                compile=(
                    "javac",
                    *(f"-J{flag}" for flag in _JVM),
                    "-J-XX:TieredStopAtLevel=1",
                    "-encoding",
                    "UTF-8",
                    "-d",
                    ".",
                    "{main}",
                ),
                # The container holds the limit plus extra_memory_mb; three quarters of it may be heap, which is
                # at least the submission's own limit for any limit from 0 to 768 MB, and leaves the JVM its
                # metaspace, code cache and stacks. Deep recursion is common in solutions: a 64 MB stack.
                run=("java", *_JVM, "-XX:MaxRAMPercentage=75", "-Xss64m", "-cp", "/box", "Main"),
                time_factor=2.0,
                extra_memory_mb=256,
                env=_HOME,
                packages=("default-jdk-headless",),
            ),
            _builtin(
                "go",
                source_name="main.go",
                compile=("go", "build", "-o", "main", "--", "{main}"),
                run=("/box/main",),
                env=_HOME,
                # No cgo (no C compiler in the image; a static binary); caches in /tmp; never the network.
                compile_env={
                    "CGO_ENABLED": "0",
                    "GOCACHE": "/tmp/go-cache",
                    "GOPATH": "/tmp/go",
                    "GOFLAGS": "-buildvcs=false",
                    "GOPROXY": "off",
                    "GOTOOLCHAIN": "local",
                },
                packages=("golang-go",),
            ),
        )
    }
)
"""The profiles every worker has, by name; settings may change them (`resolve_profiles`)."""

TOOLS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "cargo": "rust",
        "rustc": "rust",
        "gcc": "c",
        "clang": "c",
        "g++": "cpp",
        "clang++": "cpp",
        "node": "javascript",
        "npm": "javascript",
        "python": "python",
        "python3": "python",
        "pip": "python",
        "javac": "java",
        "maven": "java",
        "gradle": "java",
        "go": "go",
    }
)
"""Build tool -> the profile that compiles and runs what it builds. Other ecosystems' tools (foundry, hardhat,
move-cli) have no profile here."""


def resolve_profiles(overrides: Mapping[str, ProfileConfig]) -> dict[str, Profile]:
    """The built-in profiles with `overrides` applied: known names change the fields given, new names are added.

    Raises ConfigError naming the profile and field at fault.
    """
    profiles = dict(DEFAULT_PROFILES)
    for name, config in overrides.items():
        given = {field: getattr(config, field) for field in config.model_fields_set}
        base = profiles.get(name)
        if base is None:
            missing = [field for field in ("image", "source_name", "run") if given.get(field) is None]
            if missing:
                raise ConfigError(
                    f"profiles.{name}: {name!r} is not a built-in profile ({', '.join(sorted(DEFAULT_PROFILES))}), "
                    f"so it defines a new one and needs image, source_name and run; missing: {', '.join(missing)}"
                )
            values = {"compile": None, **given, "name": name}
        else:
            values = {**base.model_dump(), **given}
        try:
            profiles[name] = Profile.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"profiles.{'.'.join([name, *map(str, error['loc'])])}: {error['msg']}" for error in exc.errors()
            )
            raise ConfigError(f"invalid profile {name!r}: {problems}") from exc
    return profiles


def check_overrides(overrides: dict[str, ProfileConfig]) -> dict[str, ProfileConfig]:
    """Validator for the settings' `profiles`: they must resolve, so a bad entry stops the worker at start-up."""
    try:
        resolve_profiles(overrides)
    except ConfigError as exc:
        raise ValueError(str(exc)) from exc
    return overrides


ProfileOverrides = Annotated[dict[str, ProfileConfig], AfterValidator(check_overrides)]
"""The type of the settings' `profiles`."""


def profile_for(language: str | None, tool: str | None, profiles: Mapping[str, Profile]) -> Profile:
    """The profile a submission runs with: its `language` if given, else the one its build `tool` maps to.

    A tool may also name a configured profile directly. Raises UnknownProfile saying what this worker has.
    """
    if language is not None:
        found = profiles.get(language)
        if found is not None:
            return found
        if tool is not None and _tool_profile(tool, profiles) is None:
            raise UnknownProfile(f"unknown language {language!r} and {_unknown_tool(tool)}")
        raise UnknownProfile(f"unknown language {language!r}; this worker has: {', '.join(sorted(profiles))}")
    if tool is None:
        raise UnknownProfile("give a language (a profile name) or a build tool")
    name = _tool_profile(tool, profiles)
    if name is None:
        raise UnknownProfile(_unknown_tool(tool))
    if name not in profiles:
        raise UnknownProfile(f"tool {tool!r} builds {name}, which has no profile on this worker")
    return profiles[name]


def _tool_profile(tool: str, profiles: Mapping[str, Profile]) -> str | None:
    return TOOLS.get(tool, tool if tool in profiles else None)


def _unknown_tool(tool: str) -> str:
    return f"tool {tool!r} has no language profile on this worker; known tools: {', '.join(sorted(TOOLS))}"
