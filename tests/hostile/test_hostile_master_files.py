"""A submission judge's master hands out the URLs of each submission's archives. Its own origin is trusted for them
(the operator configured it); any other URL it names obeys the worker's URL policy like a client's. Before, the
submission's archive skipped the policy: `file:///etc/shadow` was read by the worker, as root, and the refusal
sent back told a file that exists ("not a .tar.gz") from one that does not ("No such file"). Now such an item is
refused before anything is opened, in the same words whatever the file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.conftest import ServerFactory
from tests.fakes.judge_master import JudgeMaster, judge_master
from tests.fakes.site import Answer, site
from tests.hostile.conftest import OpenWatch

pytestmark = pytest.mark.docker


@pytest.fixture
def judge() -> Iterator[JudgeMaster]:
    with judge_master() as fake:
        yield fake


def test_a_master_s_urls_off_its_origin_obey_the_policy_and_every_refusal_reads_the_same(
    start_server: ServerFactory, judge: JudgeMaster, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("root's secret\n")
    task = judge.archive("task", {"in/1.in": "21\n", "out/1.out": "42\n"})
    submission = judge.archive("submission", {"src/main.py": "print(int(input()) * 2)\n"})
    with site({"/submission.zip": Answer(200, b"")}) as elsewhere, OpenWatch(secret) as watch:
        files = {
            "shadow": "file:///etc/shadow",
            "existing": secret.as_uri(),
            "missing": (tmp_path / "missing").as_uri(),
        }
        hostile = {**files, "loopback": f"{elsewhere.url}/submission.zip"}
        judge.put({"id": "ok", "task_url": task, "submission_url": submission, "lang": "py"})
        for name, url in hostile.items():
            judge.put({"id": name, "task_url": task, "submission_url": url, "lang": "py"})
            judge.put({"id": f"task-{name}", "task_url": url, "submission_url": submission, "lang": "py"})
        config = {"name": "judge", "kind": "submissions", "url": judge.url, "api_key": judge.api_key}
        start_server(
            sources=json.dumps([{**config, "poll_interval_s": 0.2}]),
            allowed_private_networks="",  # the default: the master's own origin is trusted, nothing else on loopback
            allowed_images="hatchway-test/*,hatchway-profile/*",
        )
        results = judge.wait_results(1 + 2 * len(hostile))
        assert not watch.touched(), "the worker opened the file the master named"
        assert elsewhere.requests() == [], "nor did it reach the other server"
    assert (results["ok"]["points"], results["ok"]["info"]) == (1, "AC"), "the master's own archives are fetched"
    for prefix, field in (("", "submission_url"), ("task-", "problem_url")):
        told = {name: results[prefix + name]["info"] for name in files}
        assert len(set(told.values())) == 1, f"the reports tell the files apart: {told}"
        for name in hostile:
            said = results[prefix + name]["info"]
            assert said.startswith("IE\n") and field in said, (name, said)
            assert "shadow" not in said and "secret" not in said and "missing" not in said, (name, said)
