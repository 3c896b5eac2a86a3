"""Reading the settings (a YAML file, then HATCHWAY_* variables over it) with every mistake named by its key and
its variable, and the check that an API open to anyone is served on purpose."""

from __future__ import annotations

import ipaddress
import itertools
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_settings import SettingsError

from hatchway.errors import ConfigError
from hatchway.settings.values import ENV_PREFIX
from hatchway.settings.worker import Settings


def load_settings(config_file: Path | None = None) -> Settings:
    """Read the settings: `config_file` (or $HATCHWAY_CONFIG), overridden by HATCHWAY_* variables.

    Raises ConfigError naming every offending key.
    """
    path = config_file or (Path(os.environ["HATCHWAY_CONFIG"]) if os.environ.get("HATCHWAY_CONFIG") else None)
    file_values: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of settings")
        file_values = {str(key): value for key, value in loaded.items()}
    try:
        return Settings(**file_values)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from exc
    except SettingsError as exc:  # a variable holding a list or mapping is not valid JSON
        found = re.search(r'field "(\w+)"', str(exc))
        key = found.group(1) if found else "(settings)"
        raise ConfigError(f"invalid configuration:\n  {key} ({ENV_PREFIX}{key.upper()}): not valid JSON") from None


def is_loopback(host: str) -> bool:
    """Whether listening on `host` is reachable from this machine only: localhost, 127.0.0.0/8 or ::1."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # another host name: it may resolve to any address


def check_exposure(settings: Settings) -> None:
    """Refuse to serve an open API beyond this machine: without `api_tokens`, `host` must be a loopback
    address unless `allow_unauthenticated` says that is meant. Fluster's WorkerService is part of that API (its
    controller sends no token, so a worker serving it has none configured): the refusal says what it would expose.

    Raises ConfigError naming both keys.
    """
    if settings.api_tokens or settings.allow_unauthenticated or is_loopback(settings.host):
        return
    fluster = (
        " (and, with the fluster block set, run any code they post to its WorkerService's RunJob, which Fluster's "
        "controller calls without a token)"
        if settings.fluster is not None
        else ""
    )
    raise ConfigError(
        f"refusing to listen on {settings.host} without authentication: anyone who can reach it could run jobs"
        f"{fluster}. "
        f"Configure api_tokens ({ENV_PREFIX}API_TOKENS), listen on a loopback address such as 127.0.0.1, "
        f"or set allow_unauthenticated: true ({ENV_PREFIX}ALLOW_UNAUTHENTICATED=true) to serve an open API on purpose"
    )


def _describe(exc: ValidationError) -> str:
    lines = ["invalid configuration:"]
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        key = ".".join(loc) or "(settings)"
        # A list's entries have no variable of their own: the whole list is one JSON variable.
        named = list(itertools.takewhile(lambda part: not isinstance(part, int), error["loc"]))
        env = ENV_PREFIX + "__".join(map(str, named)).upper() if named else ""
        where = f"{key} ({env})" if env else key
        lines.append(f"  {where}: {error['msg']}")
    return "\n".join(lines)
