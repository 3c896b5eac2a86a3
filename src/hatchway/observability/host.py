"""Host figures for /health: CPU load, memory, temperature where the host exposes it."""

from __future__ import annotations

import os

import psutil
from pydantic import BaseModel


class HostMetrics(BaseModel):
    """A snapshot of the host the worker runs on."""

    cpu_count: int
    cpu_percent: float
    load_average: tuple[float, float, float]
    memory_total_bytes: int
    memory_used_bytes: int
    memory_percent: float
    temperature_c: float | None
    worker_rss_bytes: int


def host_metrics() -> HostMetrics:
    """Read the host's figures now (non-blocking: CPU use is measured since the previous call)."""
    memory = psutil.virtual_memory()
    return HostMetrics(
        cpu_count=os.cpu_count() or 1,
        cpu_percent=psutil.cpu_percent(interval=None),
        load_average=os.getloadavg(),
        memory_total_bytes=memory.total,
        memory_used_bytes=memory.total - memory.available,
        memory_percent=memory.percent,
        temperature_c=_temperature(),
        worker_rss_bytes=psutil.Process().memory_info().rss,
    )


def _temperature() -> float | None:
    reader = getattr(psutil, "sensors_temperatures", None)
    if reader is None:
        return None
    try:
        sensors = reader()
    except OSError:
        return None
    readings = [entry.current for entries in sensors.values() for entry in entries if entry.current]
    return round(max(readings), 1) if readings else None
