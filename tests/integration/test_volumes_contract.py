"""The `Volumes` contract on `LoopVolumes`, the loop-mounted ext4 disks real jobs get (needs root and mkfs.ext4):
what `DirectoryVolumes` stands in for."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hatchway.engines.volumes import LoopVolumes
from tests.conftest import mounts_under
from tests.contracts.volumes import OWNER, VolumesContract, VolumesSubject


class TestLoopVolumes(VolumesContract):
    @pytest.fixture
    def subject(self, tmp_path: Path) -> Iterator[VolumesSubject]:
        volumes = LoopVolumes(tmp_path / "volumes", owner=OWNER)
        yield VolumesSubject(volumes, enforces_size=True)
        volumes.sweep(set())
        assert mounts_under(tmp_path) == [], "a contract test left a volume mounted"
