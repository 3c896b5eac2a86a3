"""Execution engines: where a job's container runs. `Engine` is the seam; Docker is the first engine."""

from hatchway.engines.base import Engine, ExitStatus, Found, Handle, OutputSink

__all__ = ["Engine", "ExitStatus", "Found", "Handle", "OutputSink"]
