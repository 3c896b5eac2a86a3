"""Job sources the worker pulls work from (the HTTP API pushes; these pull): `base` (the protocol, status,
backoff), `pulled` (claiming and reporting, shared by every master) and one module per kind of master."""

from __future__ import annotations

from collections.abc import Mapping

from hatchway.errors import ConfigError
from hatchway.grading.profiles import Profile
from hatchway.settings import SourceConfig
from hatchway.sources.base import JobSource, SourceStatus
from hatchway.sources.tasks import TasksSource

__all__ = ["JobSource", "SourceStatus", "TasksSource", "build_sources"]


def build_sources(configs: list[SourceConfig], *, worker_id: str, profiles: Mapping[str, Profile]) -> list[JobSource]:
    """The configured sources; raises ConfigError for a profile that does not exist or a name used twice."""
    names = [config.name for config in configs]
    if len(set(names)) != len(names):
        raise ConfigError(f"sources: every source needs a name of its own, got {names}")
    built: list[JobSource] = []
    for config in configs:
        profile = profiles.get(config.profile)
        if profile is None:
            raise ConfigError(f"sources.{config.name}.profile: no profile {config.profile!r}; see GET /profiles")
        built.append(TasksSource(config, worker_id=worker_id, image=profile.image))
    return built
