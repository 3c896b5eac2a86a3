"""Which lines of a job's output a client asked for: those matching a regular expression (`grep`) and written
within a time range (`since`, `until`).

Patterns run on RE2, whose matching time is linear in the line's length whatever the pattern: a client cannot
make the worker spin on a catastrophic pattern such as `(a+)+$`. RE2 has no backreferences or lookaround; a
pattern that uses them is refused, saying so.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from hatchway.models import utcnow

MAX_PATTERN_CHARS = 1000
_PATTERN_MEMORY_BYTES = 8 * 1024 * 1024  # a pattern whose program is larger (e.g. `a{1000}{1000}`) is refused
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _options(re2: Any) -> Any:
    options = re2.Options()
    options.log_errors = False
    options.max_mem = _PATTERN_MEMORY_BYTES
    return options


@dataclass(frozen=True)
class LogFilter:
    """Keep a line if it matches `pattern` (anywhere in it) and was written at or after `since_ms` and at or
    before `until_ms` (epoch milliseconds). A line whose time is not known is kept only where no time bound is
    given."""

    pattern: Any = None
    since_ms: int | None = None
    until_ms: int | None = None

    @property
    def timed(self) -> bool:
        return self.since_ms is not None or self.until_ms is not None

    def keeps(self, line: str, ms: int | None) -> bool:
        if self.timed:
            if ms is None:
                return False
            if self.since_ms is not None and ms < self.since_ms:
                return False
            if self.until_ms is not None and ms > self.until_ms:
                return False
        return self.pattern is None or self.pattern.search(line) is not None

    def past_until(self, ms: int) -> bool:
        """Whether every line written from `ms` on is after `until`."""
        return self.until_ms is not None and ms > self.until_ms


def compile_pattern(pattern: str) -> Any:
    """`pattern` compiled for RE2. Raises ValueError with a sentence a client can act on."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ValueError(f"grep may be at most {MAX_PATTERN_CHARS} characters long, not {len(pattern)}")
    import re2  # type: ignore[import-untyped]  # on first use: the library costs a worker ~3 MB that never greps

    try:
        return re2.compile(pattern, _options(re2))
    except re2.error as exc:
        detail = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ValueError(
            f"grep {pattern!r} is not a regular expression this worker runs: {detail} (RE2 syntax: no "
            "backreferences or lookaround)"
        ) from exc


def parse_time(value: str, name: str, now: datetime | None = None) -> int:
    """A `since`/`until` value as epoch milliseconds: an RFC 3339 time (`2024-05-01T12:00:00Z`, with a zone),
    unix seconds (`1714564800`, `1714564800.5`), or a duration before now (`90s`, `10m`, `1h30m`, `250ms`), as
    `docker logs` takes them. Raises ValueError naming `name`."""
    text = value.strip()
    if _DURATION.fullmatch(text):
        seconds = sum(float(number) * _UNIT_S[unit] for number, unit in _DURATION_PART.findall(text))
        return math.floor(((now or utcnow()) - timedelta(seconds=seconds)).timestamp() * 1000)
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(seconds):
            return math.floor(seconds * 1000)
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        moment = None
    if moment is None or "T" not in text.upper():
        raise ValueError(
            f"{name} {value!r} is not a time: give an RFC 3339 time (2024-05-01T12:00:00Z), unix seconds, "
            "or a duration before now (10m, 1h30m)"
        )
    if moment.tzinfo is None:
        raise ValueError(f"{name} {value!r} has no time zone: add one, e.g. Z for UTC")
    return math.floor(moment.timestamp() * 1000)


def log_filter(grep: str | None, since: str | None, until: str | None, now: datetime | None = None) -> LogFilter | None:
    """The filter the query asks for, or None when it asks for none. Raises ValueError on a bad value."""
    if grep is None and since is None and until is None:
        return None
    moment = now or utcnow()
    return LogFilter(
        pattern=None if grep is None else compile_pattern(grep),
        since_ms=None if since is None else parse_time(since, "since", moment),
        until_ms=None if until is None else parse_time(until, "until", moment),
    )
