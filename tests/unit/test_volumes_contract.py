"""The `Volumes` contract on `DirectoryVolumes`: the plain directories the runner and pool unit tests run jobs on."""

from __future__ import annotations

from pathlib import Path

import pytest

from hatchway.engines.volumes import DirectoryVolumes
from tests.contracts.volumes import OWNER, VolumesContract, VolumesSubject


class TestDirectoryVolumes(VolumesContract):
    @pytest.fixture
    def subject(self, tmp_path: Path) -> VolumesSubject:
        volumes = DirectoryVolumes(tmp_path / "volumes", owner=OWNER)
        return VolumesSubject(volumes, enforces_size=DirectoryVolumes.enforces_size)
