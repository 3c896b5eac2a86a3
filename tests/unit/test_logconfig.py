"""Log formatting: lifecycle fields (event, job_id, worker_id) stand at the top level of each JSON line."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from hatchway.cli.logconfig import JsonFormatter, TextFormatter


def make_record(
    msg: str = "job %s started", args: tuple[object, ...] = ("j1",), *, exc: bool = False, **extra: Any
) -> logging.LogRecord:
    exc_info = sys.exc_info() if exc else None
    return logging.getLogger("hatchway.test").makeRecord(
        "hatchway.test", logging.WARNING, __file__, 10, msg, args, exc_info, extra=extra
    )


def test_json_lines_carry_extra_fields_at_top_level() -> None:
    line = JsonFormatter().format(make_record(event="job_started", job_id="j1", worker_id="w1"))
    entry = json.loads(line)
    assert "\n" not in line
    assert (entry["event"], entry["job_id"], entry["worker_id"]) == ("job_started", "j1", "w1")
    assert (entry["level"], entry["logger"], entry["message"]) == ("warning", "hatchway.test", "job j1 started")
    assert entry["ts"].endswith("+00:00")


def test_json_lines_leave_out_the_record_internals() -> None:
    entry = json.loads(JsonFormatter().format(make_record(event="e")))
    assert set(entry) == {"ts", "level", "logger", "message", "event"}


def test_json_lines_stringify_values_json_cannot_hold() -> None:
    entry = json.loads(JsonFormatter().format(make_record(event="e", path=Path("/data/x"), count=3)))
    assert (entry["path"], entry["count"]) == ("/data/x", 3)


def test_json_lines_include_the_exception() -> None:
    try:
        raise ValueError("bad thing")
    except ValueError:
        record = make_record("failed", (), exc=True, event="job_failed")
    entry = json.loads(JsonFormatter().format(record))
    assert entry["event"] == "job_failed"
    assert "ValueError: bad thing" in entry["exception"]


def test_text_lines_append_extra_fields_as_key_value() -> None:
    line = TextFormatter().format(make_record(event="job_started", job_id="j1", worker_id=None))
    assert line.endswith("job j1 started  event=job_started job_id=j1")
    assert "WARNING" in line
