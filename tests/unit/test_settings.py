"""`load_settings`: defaults, a YAML file, HATCHWAY_* variables over the file, and clear errors."""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hatchway.errors import ConfigError
from hatchway.models import ResolvedLimits
from hatchway.settings import Role, check_exposure, is_loopback, load_settings

WriteConfig = Callable[[str], Path]
FULL_LIMITS = "{timeout_s: 10, memory_mb: 100, cpus: 1, pids: 50, output_bytes: 2048, disk_mb: 64}"
FILE_LIMITS = {"timeout_s": 10, "memory_mb": 100, "cpus": 1, "pids": 50, "output_bytes": 2048, "disk_mb": 64}


def limits(value: ResolvedLimits) -> dict[str, Any]:
    """Limits as plain values, so the comparison holds whichever ResolvedLimits subclass settings use."""
    return value.model_dump()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No HATCHWAY_* variable of the machine running the tests leaks in; data goes under tmp_path."""
    for name in list(os.environ):
        if name.startswith("HATCHWAY_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def write_config(tmp_path: Path) -> WriteConfig:
    def write(text: str) -> Path:
        path = tmp_path / "hatchway.yaml"
        path.write_text(text)
        return path

    return write


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.data_dir == tmp_path / "xdg" / "hatchway"
    assert settings.worker_id == socket.gethostname()
    assert (settings.host, settings.port, settings.docker_url) == ("127.0.0.1", 8080, None)
    assert (settings.max_concurrent_jobs, settings.allowed_images, settings.allow_host_network) == (4, ["*"], False)
    assert (settings.poll_interval_s, settings.shutdown_grace_s, settings.log_level) == (5.0, 30.0, "INFO")
    assert limits(settings.default_limits) == limits(
        ResolvedLimits(timeout_s=60, memory_mb=256, cpus=1.0, pids=256, output_bytes=1024 * 1024, disk_mb=1024)
    )
    assert limits(settings.max_limits) == limits(
        ResolvedLimits(
            timeout_s=24 * 3600,
            memory_mb=16 * 1024,
            cpus=float(os.cpu_count() or 1),
            pids=4096,
            output_bytes=64 * 1024 * 1024,
            disk_mb=64 * 1024,
        )
    )


def test_values_come_from_the_yaml_file(tmp_path: Path, write_config: WriteConfig) -> None:
    path = write_config(
        f"""
worker_id: w-7
data_dir: {tmp_path / "data"}
max_concurrent_jobs: 7
allowed_images: ["alpine:*", "python:3.*"]
allow_host_network: true
log_level: debug
default_limits: {FULL_LIMITS}
"""
    )
    settings = load_settings(path)
    assert (settings.worker_id, settings.data_dir, settings.max_concurrent_jobs) == ("w-7", tmp_path / "data", 7)
    assert settings.allowed_images == ["alpine:*", "python:3.*"]
    assert settings.allow_host_network is True
    assert settings.log_level == "DEBUG"
    assert limits(settings.default_limits) == FILE_LIMITS


def test_an_empty_file_means_all_defaults(write_config: WriteConfig) -> None:
    assert load_settings(write_config("")) == load_settings()


def test_hatchway_config_names_the_file(monkeypatch: pytest.MonkeyPatch, write_config: WriteConfig) -> None:
    monkeypatch.setenv("HATCHWAY_CONFIG", str(write_config("max_concurrent_jobs: 3\n")))
    assert load_settings().max_concurrent_jobs == 3


def test_a_variable_overrides_the_file(monkeypatch: pytest.MonkeyPatch, write_config: WriteConfig) -> None:
    path = write_config("max_concurrent_jobs: 7\nport: 9000\n")
    monkeypatch.setenv("HATCHWAY_MAX_CONCURRENT_JOBS", "9")
    settings = load_settings(path)
    assert (settings.max_concurrent_jobs, settings.port) == (9, 9000)


def test_allowed_images_split_on_commas(monkeypatch: pytest.MonkeyPatch, write_config: WriteConfig) -> None:
    monkeypatch.setenv("HATCHWAY_ALLOWED_IMAGES", "a/*, b ,,c:1")
    assert load_settings(write_config("allowed_images: [x]\n")).allowed_images == ["a/*", "b", "c:1"]


def test_private_networks_and_origins_are_allowed_only_when_named(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (load_settings().allowed_private_networks, load_settings().allowed_private_origins) == ([], [])
    monkeypatch.setenv("HATCHWAY_ALLOWED_PRIVATE_NETWORKS", "127.0.0.0/8, fd00::/8")
    monkeypatch.setenv("HATCHWAY_ALLOWED_PRIVATE_ORIGINS", "http://10.0.0.5:8000,https://judge.internal")
    settings = load_settings()
    assert settings.allowed_private_networks == ["127.0.0.0/8", "fd00::/8"]
    assert settings.allowed_private_origins == ["http://10.0.0.5:8000", "https://judge.internal"]


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        (
            "HATCHWAY_ALLOWED_PRIVATE_NETWORKS",
            "10.0.0.1/8",
            "10.0.0.1/8 has host bits set",
        ),
        ("HATCHWAY_ALLOWED_PRIVATE_NETWORKS", "localhost", "entry 0, 'localhost', is not a network"),
        ("HATCHWAY_ALLOWED_PRIVATE_ORIGINS", "http://10.0.0.5:8000/path", "not an origin such as"),
        ("HATCHWAY_ALLOWED_PRIVATE_ORIGINS", "10.0.0.5", "not an origin such as"),
    ],
)
def test_a_private_network_or_origin_that_is_not_one_is_named(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, words: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=re.escape(words)):
        load_settings()


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("1", True), ("false", False), ("0", False)])
def test_allow_host_network_from_the_environment(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv("HATCHWAY_ALLOW_HOST_NETWORK", value)
    assert load_settings().allow_host_network is expected


def test_a_nested_variable_overrides_one_field_of_the_file(
    monkeypatch: pytest.MonkeyPatch, write_config: WriteConfig
) -> None:
    monkeypatch.setenv("HATCHWAY_DEFAULT_LIMITS__TIMEOUT_S", "30")
    settings = load_settings(write_config(f"default_limits: {FULL_LIMITS}\n"))
    assert limits(settings.default_limits) == {**FILE_LIMITS, "timeout_s": 30}


def test_a_nested_variable_overrides_one_field_of_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = load_settings()
    monkeypatch.setenv("HATCHWAY_DEFAULT_LIMITS__TIMEOUT_S", "30")
    monkeypatch.setenv("HATCHWAY_MAX_LIMITS__PIDS", "9000")
    settings = load_settings()
    assert limits(settings.default_limits) == {**limits(defaults.default_limits), "timeout_s": 30}
    assert limits(settings.max_limits) == {**limits(defaults.max_limits), "pids": 9000}


def test_a_nested_file_key_overrides_one_field_of_the_defaults(write_config: WriteConfig) -> None:
    settings = load_settings(write_config("default_limits: {memory_mb: 512}\n"))
    assert limits(settings.default_limits) == {**limits(load_settings().default_limits), "memory_mb": 512}


@pytest.mark.parametrize(
    ("variable", "value", "key"),
    [
        ("HATCHWAY_MAX_CONCURRENT_JOBS", "lots", "max_concurrent_jobs"),
        ("HATCHWAY_MAX_CONCURRENT_JOBS", "0", "max_concurrent_jobs"),
        ("HATCHWAY_PORT", "70000", "port"),
        ("HATCHWAY_ALLOW_HOST_NETWORK", "maybe", "allow_host_network"),
        ("HATCHWAY_LOG_LEVEL", "loud", "log_level"),
        ("HATCHWAY_POLL_INTERVAL_S", "0", "poll_interval_s"),
        ("HATCHWAY_DEFAULT_LIMITS__MEMORY_MB", "lots", "default_limits.memory_mb"),
    ],
)
def test_a_bad_variable_is_named_in_the_error(
    monkeypatch: pytest.MonkeyPatch, write_config: WriteConfig, variable: str, value: str, key: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(write_config(f"default_limits: {FULL_LIMITS}\n"))
    assert f"{key} ({variable})" in str(caught.value)


def test_a_bad_file_value_is_named_in_the_error(write_config: WriteConfig) -> None:
    with pytest.raises(ConfigError, match=r"max_concurrent_jobs \(HATCHWAY_MAX_CONCURRENT_JOBS\)"):
        load_settings(write_config("max_concurrent_jobs: -1\n"))


def test_every_bad_key_is_named(write_config: WriteConfig) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write_config("port: -5\nkill_grace_s: -1\n"))
    assert "port (HATCHWAY_PORT)" in str(caught.value)
    assert "kill_grace_s (HATCHWAY_KILL_GRACE_S)" in str(caught.value)


def test_no_configured_source_may_take_the_http_api_s_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HATCHWAY_SOURCES", json.dumps([{"name": "api", "kind": "tasks", "url": "http://m:1"}]))
    with pytest.raises(ConfigError, match=r"sources.0.name \(HATCHWAY_SOURCES\).*'api' is the HTTP API's name"):
        load_settings()


def test_an_unknown_key_in_the_file_is_rejected_by_name(write_config: WriteConfig) -> None:
    with pytest.raises(ConfigError, match="max_jobs"):
        load_settings(write_config("max_jobs: 3\n"))


def test_a_default_limit_above_its_maximum_is_rejected(write_config: WriteConfig) -> None:
    path = write_config(
        "default_limits: {timeout_s: 100, memory_mb: 100, cpus: 1, pids: 50, output_bytes: 2048}\n"
        "max_limits: {timeout_s: 50, memory_mb: 100, cpus: 1, pids: 50, output_bytes: 2048}\n"
    )
    with pytest.raises(ConfigError, match=r"default_limits\.timeout_s \(100\.0\) is above max_limits\.timeout_s"):
        load_settings(path)


def test_a_missing_file_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config file .*absent\.yaml"):
        load_settings(tmp_path / "absent.yaml")


def test_a_directory_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path)


def test_invalid_yaml_is_rejected(write_config: WriteConfig) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(write_config("max_concurrent_jobs: [1\n"))


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", "42\n", "[]\n", "false\n", "0\n"])
def test_yaml_that_is_not_a_mapping_is_rejected(write_config: WriteConfig, text: str) -> None:
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_settings(write_config(text))


READER = "r" * 8 + "-secret-reader"
ADMIN = "a" * 8 + "-secret-admin!!"


def test_api_tokens_come_from_the_yaml_file(write_config: WriteConfig) -> None:
    path = write_config(
        f"api_tokens:\n  - {{token: {READER}, role: read, name: dashboard}}\n  - {{token: '{ADMIN}', role: admin}}\n"
    )
    settings = load_settings(path)
    assert [(t.token.get_secret_value(), t.role, t.name) for t in settings.api_tokens] == [
        (READER, Role.READ, "dashboard"),
        (ADMIN, Role.ADMIN, None),
    ]
    assert [t.label for t in settings.api_tokens] == ["dashboard", "unnamed admin token"]
    assert settings.allow_unauthenticated is False


def test_api_tokens_come_from_a_json_variable(monkeypatch: pytest.MonkeyPatch, write_config: WriteConfig) -> None:
    monkeypatch.setenv("HATCHWAY_API_TOKENS", json.dumps([{"token": ADMIN, "role": "admin", "name": "ops"}]))
    settings = load_settings(write_config(f"api_tokens: [{{token: {READER}, role: read}}]\n"))
    assert [(t.token.get_secret_value(), t.role, t.name) for t in settings.api_tokens] == [(ADMIN, Role.ADMIN, "ops")]


def test_a_token_can_come_from_a_file(tmp_path: Path, write_config: WriteConfig) -> None:
    secret = tmp_path / "ci.token"
    secret.write_text(READER + "\n")
    settings = load_settings(write_config(f"api_tokens: [{{token_file: {secret}, role: submit, name: ci}}]\n"))
    assert settings.api_tokens[0].token.get_secret_value() == READER
    assert settings.api_tokens[0].role is Role.SUBMIT


def test_an_unreadable_token_file_is_named(tmp_path: Path, write_config: WriteConfig) -> None:
    with pytest.raises(ConfigError, match=r"api_tokens\.0 \(HATCHWAY_API_TOKENS\): .*token_file: cannot read"):
        load_settings(write_config(f"api_tokens: [{{token_file: {tmp_path / 'absent'}, role: read}}]\n"))


@pytest.mark.parametrize(
    ("entry", "key", "words"),
    [
        ('{"token": "short-secret", "role": "read"}', "api_tokens.0.token", "at least 16 characters"),
        ('{"token": " padded-secret-value ", "role": "read"}', "api_tokens.0.token", "whitespace"),
        ('{"token": "long-enough-secret-1", "role": "root"}', "api_tokens.0.role", "'read', 'submit' or 'admin'"),
        ('{"token": "long-enough-secret-1"}', "api_tokens.0.role", "required"),
        ('{"role": "read"}', "api_tokens.0.token", "required"),
        ('{"token": "long-enough-secret-1", "role": "read", "rol": "x"}', "api_tokens.0.rol", "not permitted"),
        ('{"token": "long-enough-secret-1", "token_file": "/x", "role": "read"}', "api_tokens.0", "not both"),
    ],
)
def test_a_bad_token_entry_is_named_and_its_secret_never_shown(
    write_config: WriteConfig, entry: str, key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write_config(f"api_tokens: [{entry}]\n"))
    message = str(caught.value)
    assert key in message and words in message
    for secret in ("short-secret", "padded-secret-value", "long-enough-secret-1"):
        assert secret not in message and secret not in repr(caught.value.__cause__)


def test_the_same_token_twice_is_rejected_without_showing_it(write_config: WriteConfig) -> None:
    path = write_config(f"api_tokens: [{{token: {READER}, role: read}}, {{token: {READER}, role: admin}}]\n")
    with pytest.raises(ConfigError, match="entry 1 repeats the token of entry 0") as caught:
        load_settings(path)
    assert READER not in str(caught.value)


def test_a_variable_that_is_not_json_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HATCHWAY_API_TOKENS", f'[{{"token": "{READER}", "role": ')
    with pytest.raises(ConfigError, match=r"api_tokens \(HATCHWAY_API_TOKENS\): not valid JSON") as caught:
        load_settings()
    assert READER not in str(caught.value)


def test_no_token_shows_in_the_settings_repr_or_dump(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HATCHWAY_API_TOKENS", json.dumps([{"token": ADMIN, "role": "admin"}]))
    settings = load_settings()
    assert ADMIN not in repr(settings) and ADMIN not in str(settings)
    assert ADMIN not in settings.model_dump_json() and ADMIN not in repr(settings.model_dump())


def test_roles_are_ordered_read_submit_admin() -> None:
    allowed = {(held, needed) for held in Role for needed in Role if held.allows(needed)}
    assert allowed == {
        (Role.READ, Role.READ),
        (Role.SUBMIT, Role.READ),
        (Role.SUBMIT, Role.SUBMIT),
        (Role.ADMIN, Role.READ),
        (Role.ADMIN, Role.SUBMIT),
        (Role.ADMIN, Role.ADMIN),
    }


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("10.0.0.5", False),
        ("192.168.1.1", False),
        ("worker.example.com", False),
    ],
)
def test_which_hosts_are_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_an_open_api_beyond_loopback_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HATCHWAY_HOST", "0.0.0.0")
    with pytest.raises(ConfigError) as caught:
        check_exposure(load_settings())
    assert "0.0.0.0" in str(caught.value)
    assert "api_tokens" in str(caught.value) and "allow_unauthenticated" in str(caught.value)


def test_the_refusal_says_what_an_open_fluster_worker_service_exposes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HATCHWAY_HOST", "0.0.0.0")
    monkeypatch.setenv("HATCHWAY_FLUSTER__CONTROLLER_URL", "http://10.0.0.2:10000")
    with pytest.raises(ConfigError, match="run any code they post to its WorkerService's RunJob"):
        check_exposure(load_settings())
    monkeypatch.setenv("HATCHWAY_ALLOW_UNAUTHENTICATED", "true")
    check_exposure(load_settings())


@pytest.mark.parametrize(
    "variables",
    [
        {"HATCHWAY_HOST": "127.0.0.1"},
        {"HATCHWAY_HOST": "::1"},
        {"HATCHWAY_HOST": "0.0.0.0", "HATCHWAY_ALLOW_UNAUTHENTICATED": "true"},
        {"HATCHWAY_HOST": "0.0.0.0", "HATCHWAY_API_TOKENS": json.dumps([{"token": READER, "role": "read"}])},
    ],
)
def test_an_api_on_loopback_with_tokens_or_allowed_open_may_serve(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str]
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    check_exposure(load_settings())


def test_callback_settings_and_their_secret(monkeypatch: pytest.MonkeyPatch, write_config: WriteConfig) -> None:
    defaults = load_settings()
    assert defaults.callback_secret is None
    assert (defaults.callback_retry_s, defaults.callback_timeout_s) == (3600, 10)
    assert defaults.callback_allowed_urls == ["https://*", "http://*"]
    secret = "callback-secret-" + "x" * 16
    monkeypatch.setenv("HATCHWAY_CALLBACK_SECRET", secret)
    monkeypatch.setenv("HATCHWAY_CALLBACK_ALLOWED_URLS", "https://hooks.example/*, http://127.0.0.1:*")
    settings = load_settings(write_config("callback_retry_s: 60\ncallback_timeout_s: 2.5\n"))
    assert settings.callback_secret is not None and settings.callback_secret.get_secret_value() == secret
    assert settings.callback_allowed_urls == ["https://hooks.example/*", "http://127.0.0.1:*"]
    assert (settings.callback_retry_s, settings.callback_timeout_s) == (60, 2.5)
    assert secret not in repr(settings) and secret not in settings.model_dump_json()


def test_a_short_callback_secret_is_refused_without_showing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HATCHWAY_CALLBACK_SECRET", "guessable")
    with pytest.raises(ConfigError, match=r"callback_secret \(HATCHWAY_CALLBACK_SECRET\): .*at least 16") as caught:
        load_settings()
    assert "guessable" not in str(caught.value)


def test_build_capabilities_are_none_by_default_and_named_as_linux_names_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert (load_settings().build_capabilities, load_settings().build_disk_unlimited) == ([], False)
    monkeypatch.setenv("HATCHWAY_BUILD_CAPABILITIES", "setuid, CAP_CHOWN,SETGID,chown")
    assert load_settings().build_capabilities == ["CHOWN", "SETGID", "SETUID"]
    monkeypatch.setenv("HATCHWAY_BUILD_CAPABILITIES", "CHOWN,ROOT_ALL")
    with pytest.raises(ConfigError, match="unknown capabilities ROOT_ALL"):
        load_settings()


def test_labels_take_their_older_name_too(monkeypatch: pytest.MonkeyPatch, write_config: WriteConfig) -> None:
    monkeypatch.setenv("HATCHWAY_CONFIG", str(write_config("labels: {zone: a, gpu: a100}\n")))
    monkeypatch.setenv("HATCHWAY_WORKER_LABELS", json.dumps({"zone": "old", "rack": "b2"}))
    assert load_settings().labels == {"zone": "a", "gpu": "a100", "rack": "b2"}, "labels win a key"
    monkeypatch.delenv("HATCHWAY_CONFIG")
    assert load_settings().labels == {"zone": "old", "rack": "b2"}


@pytest.mark.parametrize(
    ("fields", "address"),
    [
        ({"HATCHWAY_PORT": "9000"}, "http://127.0.0.1:9000"),
        ({"HATCHWAY_ADVERTISE_URL": "http://worker-3:8080/"}, "http://worker-3:8080"),
        ({"HATCHWAY_HOST": "0.0.0.0", "HATCHWAY_ALLOW_UNAUTHENTICATED": "true"}, f"http://{socket.gethostname()}:8080"),
        ({"HATCHWAY_HOST": "::1"}, "http://[::1]:8080"),
    ],
)
def test_the_address_a_fleet_reaches_a_worker_at(
    monkeypatch: pytest.MonkeyPatch, fields: dict[str, str], address: str
) -> None:
    for name, value in fields.items():
        monkeypatch.setenv(name, value)
    assert load_settings().address == address


@pytest.mark.parametrize("value", ["0.5", "0", "-3", "3601"])
def test_a_worker_lease_out_of_bounds_is_named(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    assert load_settings().worker_lease_s == 30.0
    monkeypatch.setenv("HATCHWAY_WORKER_LEASE_S", value)
    with pytest.raises(ConfigError, match="HATCHWAY_WORKER_LEASE_S"):
        load_settings()


def test_the_fluster_block_is_off_until_it_names_a_controller(
    monkeypatch: pytest.MonkeyPatch, write_config: WriteConfig
) -> None:
    assert load_settings(write_config("")).fluster is None
    monkeypatch.setenv("HATCHWAY_FLUSTER__CONTROLLER_URL", "http://127.0.0.1:10000")
    monkeypatch.setenv("HATCHWAY_FLUSTER__PORT_RANGE", "[31000, 31010]")
    fluster = load_settings(write_config("")).fluster
    assert fluster is not None
    assert (fluster.controller_url, fluster.port_range, fluster.build_network) == (
        "http://127.0.0.1:10000",
        (31000, 31010),
        False,
    )


@pytest.mark.parametrize(
    ("block", "said"),
    [
        ({}, "fluster.controller_url (HATCHWAY_FLUSTER__CONTROLLER_URL): Field required"),
        ({"controller_url": "ftp://x"}, "fluster.controller_url"),
        ({"controller_url": "http://c", "port_range": [40000, 30000]}, "expected 1024 <= first < second"),
        ({"controller_url": "http://c", "gs_command": ["gsutil", "cp", "{url}"]}, "`{path}` in one of its words"),
        ({"controller_url": "http://c", "advertise_address": "no port"}, "fluster.advertise_address"),
    ],
)
def test_a_bad_fluster_block_is_named(write_config: WriteConfig, block: dict[str, Any], said: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(said)):
        load_settings(write_config(json.dumps({"fluster": block})))
