"""The fleet's deploy examples configure what docs/fleet.md says a fleet needs: every worker on the same store, each
with its own id, port and data directory, in variables that are real settings (a renamed setting fails here, where
the worker itself would silently ignore the old variable)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from hatchway.settings import ENV_PREFIX, Settings, load_settings
from tests.conftest import ROOT

FLEET = ROOT / "deploy" / "fleet"
SHARED_MOUNT = "/var/lib/hatchway"
VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?::(?P<op>[-?])(?P<word>[^}]*))?\}")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines, as compose's .env and systemd's EnvironmentFile= read them (comments skipped)."""
    lines = (line.strip() for line in path.read_text().splitlines())
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's `${NAME}`, `${NAME:-default}` and `${NAME:?error}`."""

    def one(match: re.Match[str]) -> str:
        name, op, word = match["name"], match["op"], match["word"]
        if name in variables:
            return variables[name]
        assert op == "-", f"${{{name}}} is needed and not set by env.example"
        return str(word)

    return VARIABLE.sub(one, value)


def settings_from(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    unknown = [key for key in environment if key.removeprefix(ENV_PREFIX).lower() not in Settings.model_fields]
    assert unknown == [], f"not settings: {unknown}"
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    try:
        return load_settings()
    finally:
        for key in environment:
            monkeypatch.delenv(key)


def compose_workers() -> dict[str, dict[str, Any]]:
    compose = yaml.safe_load((FLEET / "compose.yaml").read_text())
    return {name: service for name, service in compose["services"].items() if name.startswith("worker-")}


def test_the_compose_file_puts_every_worker_on_one_store_with_its_own_id_port_and_data_dir(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    variables = env_file(FLEET / "env.example")
    workers = compose_workers()
    assert len(workers) >= 2
    fleet = {
        name: settings_from({key: interpolate(str(value), variables) for key, value in env.items()}, monkeypatch)
        for name, env in ((name, service["environment"]) for name, service in workers.items())
    }
    stores = {settings.store_url for settings in fleet.values()}
    assert len(stores) == 1 and None not in stores, stores
    assert len({settings.worker_id for settings in fleet.values()}) == len(fleet)
    assert len({settings.port for settings in fleet.values()}) == len(fleet)
    assert len({settings.data_dir for settings in fleet.values()}) == len(fleet)
    for name, service in workers.items():
        # The data directory is seen at the same path inside and out, on the shared mount docs/operations.md asks
        # for, and the image is the one scripts/container-image.sh builds (never pulled: there is no registry).
        assert f"{SHARED_MOUNT}:{SHARED_MOUNT}:rshared" in service["volumes"], name
        assert str(fleet[name].data_dir).startswith(f"{SHARED_MOUNT}/"), name
        assert (interpolate(service["image"], variables), service["pull_policy"]) == ("hatchway:latest", "never")
        assert "/var/run/docker.sock:/var/run/docker.sock" in service["volumes"], name


def test_the_compose_database_is_the_one_the_workers_name() -> None:
    variables = env_file(FLEET / "env.example")
    postgres = yaml.safe_load((FLEET / "compose.yaml").read_text())["services"]["postgres"]
    port = interpolate("${HATCHWAY_DB_PORT:-5433}", variables)
    assert f"port={port}" in [interpolate(part, variables) for part in postgres["command"]]
    password = interpolate(postgres["environment"]["POSTGRES_PASSWORD"], variables)
    for service in compose_workers().values():
        url = interpolate(service["environment"]["HATCHWAY_STORE_URL"], variables)
        assert url == f"postgresql://{postgres['environment']['POSTGRES_USER']}:{password}@127.0.0.1:{port}/hatchway"


def test_the_systemd_template_and_its_env_files_make_a_worker_of_the_fleet(monkeypatch: pytest.MonkeyPatch) -> None:
    unit = (ROOT / "deploy" / "hatchway@.service").read_text().replace("%i", "worker-1").replace("%H", "host")
    environment = dict(
        line.removeprefix("Environment=").split("=", 1)
        for line in unit.splitlines()
        if line.startswith(f"Environment={ENV_PREFIX}")
    )
    files = [line.removeprefix("EnvironmentFile=") for line in unit.splitlines() if line.startswith("EnvironmentFile=")]
    assert files == ["/etc/hatchway/fleet.env", "/etc/hatchway/worker-1.env"]
    environment |= env_file(FLEET / "fleet.env.example") | env_file(FLEET / "worker.env.example")
    settings = settings_from(environment, monkeypatch)
    assert settings.store_url is not None and settings.store_url.startswith("postgresql://")
    assert (settings.worker_id, str(settings.data_dir)) == ("host-worker-1", "/var/lib/hatchway/worker-1")
    assert "StateDirectory=hatchway/worker-1" in unit.splitlines()
