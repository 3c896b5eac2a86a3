"""The program a Fluster job runs inside its container: load the serialized entrypoint, call it, keep its result.

It is shipped into the job's working directory as a file and run by the container's own Python; it imports nothing
of hatchway's, only the standard library and cloudpickle (which the environment's image has). The entrypoint is
untrusted bytes: unpickling them runs whatever code they name, so it happens here, inside the job's sandbox, and
never on the worker (the real Fluster worker loads them on its host: docs/fluster-plan.md, quirk 3).

The entrypoint is `cloudpickle.dumps(fluster.cluster.types.Entrypoint(callable, args, kwargs))`, whose class is
pickled by reference. Where fluster is not installed in the image, a stand-in of that dataclass takes its place.
`fn(*args, **kwargs)`'s return value is written with cloudpickle to `/workdir/_result.pkl` (and linked into
`out/`, whose files hatchway keeps after the job: GetJobStatus's `include_result` reads it there). An exception
prints its traceback on stderr and exits 1, as the real worker's runner does.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import pickle
import sys
import traceback
from collections.abc import Callable
from typing import Any

ENTRYPOINT_FILE = ".fluster/entrypoint.b64"
"""The entrypoint's bytes, base64, relative to the working directory."""
RESULT_FILE = "_result.pkl"
OUT_DIR = "out"
_ENTRYPOINT_CLASS = ("fluster.cluster.types", "Entrypoint")


@dataclasses.dataclass
class Entrypoint:
    """The shape of `fluster.cluster.types.Entrypoint`, for images without fluster."""

    callable: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)


class _Unpickler(pickle.Unpickler):
    """Finds fluster's Entrypoint class, or the stand-in where fluster is not importable."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == _ENTRYPOINT_CLASS:
            try:
                return super().find_class(module, name)
            except ImportError:
                return Entrypoint
        return super().find_class(module, name)


def load(data: bytes) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
    """The callable and its arguments from a serialized entrypoint."""
    import io

    entry = _Unpickler(io.BytesIO(data)).load()
    return entry.callable, tuple(entry.args or ()), dict(entry.kwargs or {})


def _port_variables() -> None:
    """hatchway names a job's ports HATCHWAY_PORT_<NAME>; Fluster's code reads FLUSTER_PORT_<NAME>."""
    for key, value in list(os.environ.items()):
        if key.startswith("HATCHWAY_PORT_"):
            os.environ.setdefault("FLUSTER_PORT_" + key.removeprefix("HATCHWAY_PORT_"), value)


def main() -> int:
    workdir = os.getcwd()
    _port_variables()
    try:
        import cloudpickle  # type: ignore[import-untyped]  # the image's: it dumps the result as the client will load it

        with open(os.path.join(workdir, ENTRYPOINT_FILE), "rb") as handle:
            fn, args, kwargs = load(base64.b64decode(handle.read()))
        result = fn(*args, **kwargs)
        data = cloudpickle.dumps(result)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        return 1
    path = os.path.join(workdir, RESULT_FILE)
    with open(path, "wb") as handle:
        handle.write(data)
    os.makedirs(os.path.join(workdir, OUT_DIR), exist_ok=True)
    kept = os.path.join(workdir, OUT_DIR, RESULT_FILE)
    try:
        os.link(path, kept)
    except OSError:
        with open(kept, "wb") as handle:
            handle.write(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
