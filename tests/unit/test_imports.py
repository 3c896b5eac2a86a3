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
# in a child forked from that state, which has imported nothing of hatchway.
_CHECK = r"""
import json, os, sys, importlib, traceback
import pydantic, fastapi, docker, httpx, uvicorn, yaml, psutil, prometheus_client  # only third-party libraries
assert not [name for name in sys.modules if name == "hatchway" or name.startswith("hatchway.")]
failures = {}
for name in json.loads(sys.argv[1]):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        error = ""
        try:
            module = importlib.import_module(name)
            for value in list(vars(module).values()):
                if (isinstance(value, type) and issubclass(value, pydantic.BaseModel)
                        and value.__module__ == name and not value.__pydantic_generic_metadata__["parameters"]):
                    value.model_json_schema()
        except BaseException:
            error = traceback.format_exc()
        os.write(write, error.encode())
        os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    os.waitpid(pid, 0)
    if chunks:
        failures[name] = b"".join(chunks).decode()
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
