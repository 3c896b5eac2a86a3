"""Every module of the package imports on its own, in an interpreter that has imported no other part of hatchway,
and every pydantic model it defines builds its JSON schema there. An import cycle closed by a late import, or a
model whose types another module completes when it happens to be imported, fails here."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import hatchway

# Runs in a clean interpreter: the third-party libraries are imported once, then each hatchway module is imported
# in a child forked from that state, which has imported nothing of hatchway; as many children at once as there are
# CPUs, each writing what went wrong (if anything) to a file of its own.
_CHECK = r"""
import json, os, sys, importlib, tempfile, traceback
import pydantic, fastapi, docker, httpx, uvicorn, yaml, psutil, prometheus_client  # only third-party libraries
assert not [name for name in sys.modules if name == "hatchway" or name.startswith("hatchway.")]
failures = {}
running = {}  # pid -> (module, the file its error goes to)
with tempfile.TemporaryDirectory() as errors:
    def reap():
        pid, _ = os.wait()
        name, path = running.pop(pid)
        with open(path) as written:
            if error := written.read():
                failures[name] = error

    for name in json.loads(sys.argv[1]):
        while len(running) >= (os.cpu_count() or 1):
            reap()
        path = os.path.join(errors, name)
        open(path, "w").close()
        pid = os.fork()
        if pid == 0:
            error = ""
            try:
                module = importlib.import_module(name)
                for value in list(vars(module).values()):
                    if (isinstance(value, type) and issubclass(value, pydantic.BaseModel)
                            and value.__module__ == name and not value.__pydantic_generic_metadata__["parameters"]):
                        value.model_json_schema()
            except BaseException:
                error = traceback.format_exc()
            with open(path, "w") as out:
                out.write(error)
            os._exit(0)
        running[pid] = (name, path)
    while running:
        reap()
print(json.dumps(failures))
"""


def all_modules() -> list[str]:
    return sorted(
        info.name
        for info in pkgutil.walk_packages(hatchway.__path__, "hatchway.")
        if not info.name.endswith("__main__")
    )


def test_the_walk_finds_every_package() -> None:
    found = all_modules()
    for name in ("hatchway.models", "hatchway.judge.request", "hatchway.jobs.runner", "hatchway.api.app"):
        assert name in found


def test_every_module_imports_alone_and_builds_its_models_schemas() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CHECK, json.dumps(all_modules())], capture_output=True, text=True, timeout=110
    )
    assert done.returncode == 0, done.stderr
    failures = json.loads(done.stdout)
    assert failures == {}, "\n\n".join(f"{name}:\n{error}" for name, error in failures.items())
