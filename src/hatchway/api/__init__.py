"""The HTTP API: a thin layer that validates, calls the services it is handed (`deps`) and serialises."""

from hatchway.api.app import create_app

__all__ = ["create_app"]
