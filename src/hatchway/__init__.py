"""hatchway: run untrusted jobs in isolated containers and report exactly what happened."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hatchway")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
