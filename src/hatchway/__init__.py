"""hatchway: run untrusted jobs in isolated containers and report exactly what happened."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    # The version is read from the installed metadata only when asked for: importlib.metadata costs ~60 ms, which
    # every `hatchway` command would otherwise pay at start.
    if name != "__version__":
        raise AttributeError(f"module 'hatchway' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hatchway")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0"
