"""The HTTP API: a thin layer that validates, calls the worker and serialises."""

from hatchway.api.app import create_app

__all__ = ["create_app"]
