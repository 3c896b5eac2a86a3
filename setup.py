"""The package build compiles the sandbox supervisor (everything else about the package is in pyproject.toml).

`build_py` runs the one recipe, `hatchway.sandbox.binary` (imported from this source tree: it needs only the
standard library), so that an installed hatchway has its supervisor:

- a wheel (`pip install .`, `pip wheel .`): compiled from the sources being packaged into the build directory, as
  `hatchway/sandbox/bin/hatchway-supervisor`; the wheel is then a platform wheel (py3-none-<platform>): the binary
  is for this machine's architecture, and no Python ABI is involved;
- an editable install (`pip install -e .`): compiled into the source tree, where the editable hatchway finds it,
  unless it is fresh there already (as `scripts/setup.sh` leaves it).

Without a C compiler or a static C library the build prints a warning and goes on without the binary: hatchway
installs and runs, and only the grading sandbox reports SandboxUnavailable until `scripts/build-supervisor.sh` or
`python -m hatchway.sandbox.binary build` builds it. `HATCHWAY_REQUIRE_SUPERVISOR=1` makes that a build failure
instead (for images and release wheels, which must carry the binary).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_py import build_py

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
from hatchway.errors import SandboxUnavailable
from hatchway.sandbox import binary

PACKAGED_BINARY = Path("hatchway", "sandbox", "bin", binary.BINARY.name)
"""Where the binary goes in the package, relative to the build directory."""


class BuildPyWithSupervisor(build_py):
    """build_py, plus the supervisor binary."""

    def run(self) -> None:
        super().run()
        try:
            if self.editable_mode:
                if binary.ensure_built(binary.BINARY):
                    print(f"built {binary.BINARY}")
            elif not self.dry_run:
                binary.build_supervisor(Path(self.build_lib) / PACKAGED_BINARY)
        except SandboxUnavailable as exc:
            if os.environ.get("HATCHWAY_REQUIRE_SUPERVISOR") == "1":
                raise
            print(
                f"WARNING: hatchway is installed without its sandbox supervisor: {exc}\n"
                "WARNING: grading will be unavailable until it is built (python -m hatchway.sandbox.binary build)",
                file=sys.stderr,
            )

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = list(super().get_outputs(include_bytecode))
        built = Path(self.build_lib) / PACKAGED_BINARY
        if not self.editable_mode and built.is_file():
            outputs.append(str(built))
        return outputs


class BinaryDistribution(Distribution):
    """A distribution that carries a compiled file: installed into platlib, and its wheel is not pure."""

    def has_ext_modules(self) -> bool:
        return True


class PlatformWheel(bdist_wheel):
    """A wheel for this platform (for the binary) that any Python 3 may install: the binary uses no Python ABI."""

    def get_tag(self) -> tuple[str, str, str]:
        _, _, platform = super().get_tag()
        return "py3", "none", platform


setup(distclass=BinaryDistribution, cmdclass={"build_py": BuildPyWithSupervisor, "bdist_wheel": PlatformWheel})
