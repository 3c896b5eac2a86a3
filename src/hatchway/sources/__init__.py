"""Job sources: `base` (the protocol, status, backoff), `pulled` (claiming and reporting, shared by every master
the worker pulls from) and one module per kind of master. The HTTP API, the source clients push work to, is served
by `hatchway.api.server`, beside the API it serves."""

from __future__ import annotations

from hatchway.errors import ConfigError
from hatchway.grading.service import GradeService
from hatchway.jobs.peer_logs import AddressOf, PeerLogs
from hatchway.settings import SourceConfig
from hatchway.sources.base import JobSource, SourceStatus
from hatchway.sources.languages import language_map
from hatchway.sources.submissions import SubmissionsSource
from hatchway.sources.task_events import EventBus, TaskEvents
from hatchway.sources.tasks import TasksSource

__all__ = ["JobSource", "SourceStatus", "SubmissionsSource", "TasksSource", "build_sources"]


def build_sources(
    configs: list[SourceConfig],
    *,
    worker_id: str,
    grades: GradeService,
    redis_url: str | None = None,
    fleet: tuple[AddressOf, str | None] | None = None,
) -> list[JobSource]:
    """The configured sources, masters to pull from; raises ConfigError for a profile that does not exist or a
    name used twice. A tasks source publishes its tasks' events on its `redis_url`, else on the worker's; in a
    `fleet` (where the other workers registered, and a token they accept), with the output of the jobs other
    workers run.

    Sources get the job service when they run; one that grades (`submissions`) holds the grading facade too."""
    names = [config.name for config in configs]
    if len(set(names)) != len(names):
        raise ConfigError(f"sources: every source needs a name of its own, got {names}")
    profiles = grades.profiles
    built: list[JobSource] = []
    for config in configs:
        unknown = {lang: name for lang, name in config.languages.items() if name not in profiles}
        if unknown:
            raise ConfigError(
                f"sources.{config.name}.languages: no profile for {unknown}; this worker has: "
                + ", ".join(sorted(profiles))
            )
        # Built-in names whose profile this worker lacks are left out: such an item is refused clearly.
        languages = {lang: name for lang, name in language_map(config).items() if name in profiles}
        if config.kind == "submissions":
            built.append(SubmissionsSource(config, worker_id=worker_id, grades=grades, languages=languages))
            continue
        if config.profile not in profiles:
            raise ConfigError(f"sources.{config.name}.profile: no profile {config.profile!r}; see GET /profiles")
        bus_url = config.redis_url or redis_url
        events = None
        if bus_url is not None:
            peer_logs = None if fleet is None else PeerLogs(worker_id, *fleet)
            events = TaskEvents(EventBus(bus_url, source=config.name), executor_id=worker_id, peer_logs=peer_logs)
        built.append(TasksSource(config, worker_id=worker_id, profiles=profiles, languages=languages, events=events))
    return built
