"""A Fluster job's environment: what its image must have installed beyond `fluster.base_image` (issue 19;
docs/fluster-plan.md, "Image", and "As built: environments").

The real worker runs `uv sync [--extra E]` of the bundle's project in an image built per job. hatchway reads the
bundle's `pyproject.toml` on the host, with `tomllib` only (data, never code of the bundle's: no build backend,
no `setup.py`), and installs what its `[project]` declares, `dependencies` and the asked extras'
`optional-dependencies`, then the request's `pip_packages`, with pip into an image built on the base image. The
image depends on those words alone, not on the bundle's code (which stays the job's working directory, on
`PYTHONPATH`), so one image serves every job that declares the same, whichever its bundle or job id.

A bundle is untrusted: the file is read with a size limit, must be UTF-8 TOML, its declarations must be lists of
strings within limits, and each requirement must start as PEP 508 names do (so none can pass for a pip option;
pip is also told `--` before them) and hold no control character (so none can break out of the Dockerfile's line).
"""

from __future__ import annotations

import re
import shlex
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field

from hatchway.models import BuildSpec
from hatchway.sources.fluster_jobs import Refusal

PYPROJECT = "pyproject.toml"
MAX_PYPROJECT_BYTES = 256 * 1024
"""More than any real project's pyproject.toml; past it the job fails."""
MAX_REQUIREMENTS = 500
MAX_REQUIREMENT_CHARS = 2048
_REQUIREMENT = re.compile(r"^[A-Za-z0-9][^\x00-\x1f\x7f]*$")
_NAME_AND_EXTRAS = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")


@dataclass(frozen=True)
class Environment:
    """What a job's image installs, by where it was asked: the project's dependencies, each asked extra's, and
    the request's pip_packages. Empty: the base image as it is."""

    project: tuple[str, ...] = ()
    extras: dict[str, tuple[str, ...]] = field(default_factory=dict)
    pip_packages: tuple[str, ...] = ()

    @property
    def requirements(self) -> list[str]:
        """Every requirement once, in the order asked: the project's, the extras', then pip_packages."""
        return list(dict.fromkeys([*self.project, *(r for rs in self.extras.values() for r in rs), *self.pip_packages]))

    def described(self) -> str:
        """The requirements by where they come from, for a message."""
        parts = [f"project dependencies: {', '.join(self.project)}"] if self.project else []
        parts += [f"extra {name}: {', '.join(found) or 'nothing'}" for name, found in self.extras.items()]
        if self.pip_packages:
            parts.append(f"pip_packages: {', '.join(self.pip_packages)}")
        return "; ".join(parts)


def environment(pyproject: bytes | None, extras: Iterable[str], pip_packages: Iterable[str]) -> Environment:
    """The environment a job asks for: the bundle's `pyproject` (its bytes, None without one), the request's
    `extras` and `pip_packages`. Raises Refusal, saying what is wrong, for a file or a request hatchway cannot
    read (malformed TOML, declarations that are not lists of strings, dynamic dependencies, an extra the project
    does not declare, a requirement that is not one)."""
    asked = list(dict.fromkeys(extras))
    project = _project(pyproject) if pyproject is not None else {}
    dynamic = set(_strings(project, "dynamic", "project.dynamic"))
    for key in ("dependencies", "optional-dependencies") if asked else ("dependencies",):
        if key in dynamic:
            raise Refusal(
                f"the bundle's pyproject.toml declares its {key} dynamic, which only its build backend can "
                "compute: this worker never runs a bundle's code to build its environment. List them in [project]"
            )
    declared = _requirements(_strings(project, "dependencies", "project.dependencies"), "project.dependencies")
    optional = project.get("optional-dependencies", {})
    if not isinstance(optional, dict):
        raise Refusal("the bundle's pyproject.toml has project.optional-dependencies that is not a table")
    unknown = [name for name in asked if _normal(name) not in {_normal(key) for key in optional}]
    if unknown:
        raise Refusal(
            f"the environment asks for extras ({', '.join(unknown)}) that the bundle's project does not declare "
            f"in [project.optional-dependencies]{' (it has no pyproject.toml)' if pyproject is None else ''}"
        )
    by_name = {_normal(key): key for key in optional}
    name = _normal(str(project.get("name", "")))
    chosen = {extra: _extra(optional, by_name, extra, name, set()) for extra in asked}
    packages = _requirements([str(package) for package in pip_packages], "pip_packages")
    found = Environment(
        project=tuple(_own_extras_out(declared, optional, by_name, name)),
        extras={extra: tuple(found) for extra, found in chosen.items()},
        pip_packages=tuple(packages),
    )
    if len(found.requirements) > MAX_REQUIREMENTS:
        raise Refusal(f"the environment asks for {len(found.requirements)} packages, more than {MAX_REQUIREMENTS}")
    return found


def environment_build(base_image: str, requirements: list[str]) -> BuildSpec:
    """The image of an environment: the base image, and pip installing `requirements` (its build has the host's
    network: `fluster_request.needs_build_network`). It has no context but its Dockerfile, so hatchway's build
    cache (by a hash of its inputs) keys it by the base image and the requirements alone. pip is told the
    system's Python is its to install into (PEP 668's marker, which Debian's Python has; an older pip ignores the
    variable), and `--` ends its options."""
    words = " ".join(shlex.quote(requirement) for requirement in requirements)
    return BuildSpec(
        dockerfile=f"FROM {base_image}\n"
        "RUN PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir --no-input "
        f"--disable-pip-version-check -- {words}\n"
    )


def _project(pyproject: bytes) -> dict[str, object]:
    if len(pyproject) > MAX_PYPROJECT_BYTES:
        raise Refusal(f"the bundle's pyproject.toml holds more than {MAX_PYPROJECT_BYTES} bytes")
    try:
        document = tomllib.loads(pyproject.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise Refusal(f"the bundle's pyproject.toml is not UTF-8: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise Refusal(f"the bundle's pyproject.toml is not valid TOML: {exc}") from exc
    except RecursionError as exc:  # arrays or tables nested past what the parser's recursion reaches
        raise Refusal("the bundle's pyproject.toml nests too deeply to read") from exc
    project = document.get("project", {})
    if not isinstance(project, dict):
        raise Refusal("the bundle's pyproject.toml has a [project] that is not a table")
    return project


def _strings(table: dict[str, object], key: str, shown: str) -> list[str]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise Refusal(f"the bundle's pyproject.toml has a {shown} that is not a list of strings")
    return list(value)


def _requirements(found: list[str], shown: str) -> list[str]:
    for requirement in found:
        if len(requirement) > MAX_REQUIREMENT_CHARS:
            raise Refusal(f"{shown} has a requirement longer than {MAX_REQUIREMENT_CHARS} characters")
        if not _REQUIREMENT.match(requirement):
            raise Refusal(
                f"{shown} has {requirement[:100]!r}, which is not a requirement (it must start with a package's "
                "name and hold no control characters)"
            )
    return [requirement.strip() for requirement in found]


def _extra(optional: dict[str, object], by_name: dict[str, str], extra: str, own: str, seen: set[str]) -> list[str]:
    """The requirements of `extra`, with the project's references to its own extras (`all = ["me[a,b]"]`, which
    `uv sync` resolves in the project) expanded in place rather than looked for on an index."""
    key = by_name[_normal(extra)]
    if key in seen:
        return []
    seen.add(key)
    shown = f"project.optional-dependencies.{key}"
    declared = _requirements(_strings(optional, key, shown), shown)
    return _own_extras_out(declared, optional, by_name, own, seen)


def _own_extras_out(
    declared: list[str], optional: dict[str, object], by_name: dict[str, str], own: str, seen: set[str] | None = None
) -> list[str]:
    seen = set() if seen is None else seen
    kept: list[str] = []
    for requirement in declared:
        named = _NAME_AND_EXTRAS.match(requirement)
        if own and named is not None and _normal(named.group(1)) == own:
            for extra in filter(None, (part.strip() for part in (named.group(2) or "").split(","))):
                if _normal(extra) in by_name:
                    kept += _extra(optional, by_name, extra, own, seen)
            continue
        kept.append(requirement)
    return kept


def _normal(name: str) -> str:
    """A package or extra name as PEP 503 and PEP 685 compare them."""
    return re.sub(r"[-_.]+", "-", name).lower()
