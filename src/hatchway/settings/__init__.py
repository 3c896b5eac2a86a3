"""The worker's settings: `Settings` (settings/worker.py), read once at start-up from an optional YAML file and
HATCHWAY_* variables (settings/loading.py), and the values it is made of (settings/values.py)."""

from hatchway.settings.fluster import FlusterConfig
from hatchway.settings.loading import check_exposure, is_loopback, load_settings
from hatchway.settings.values import (
    AGENT_SOURCE,
    API_SOURCE,
    CAPABILITIES,
    ENV_PREFIX,
    RUNTIMES,
    TOKEN_MIN_LENGTH,
    ApiToken,
    DefaultLimits,
    GradeMaxLimits,
    MaxLimits,
    PoolConfig,
    RedisUrl,
    Role,
    RuntimeName,
    SourceConfig,
    StoreUrl,
)
from hatchway.settings.worker import Settings

__all__ = [
    "AGENT_SOURCE",
    "API_SOURCE",
    "CAPABILITIES",
    "ENV_PREFIX",
    "RUNTIMES",
    "TOKEN_MIN_LENGTH",
    "ApiToken",
    "DefaultLimits",
    "FlusterConfig",
    "GradeMaxLimits",
    "MaxLimits",
    "PoolConfig",
    "RedisUrl",
    "Role",
    "RuntimeName",
    "Settings",
    "SourceConfig",
    "StoreUrl",
    "check_exposure",
    "is_loopback",
    "load_settings",
]
