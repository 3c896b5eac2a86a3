"""Hostile tests: each performs an attack on a real worker (`hatchway serve`) and the real engine, as an outsider
would, and fails if the attack gets anywhere. Runnable by themselves (`pytest tests/hostile`) on a host before
trusting it with other people's work."""

from tests.acceptance.conftest import start_server

__all__ = ["start_server"]
