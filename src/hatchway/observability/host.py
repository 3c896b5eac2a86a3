"""Host figures for /health (CPU load, memory, temperature where the host exposes it) and what the host is, for
/info."""

from __future__ import annotations

import functools
import os
import platform
import socket
import time

import psutil
from pydantic import BaseModel

MIB = 1024 * 1024


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


class HostFacts(BaseModel):
    """What the host is, as the worker-agent system's `/info` says it: fixed while the worker runs."""

    hostname: str
    os: str
    """The distribution and kernel: `Debian GNU/Linux 12 (bookworm) (linux 6.1.0-18-amd64)`."""
    os_architecture: str
    """In Node.js's words (`x64`, `arm64`, `arm`, `ia32`, ...), as that system's workers report it."""
    cpu_model: str | None
    cpu_cores: int | None
    """Physical cores, where the host says (null otherwise)."""
    cpu_threads: int
    memory_mb: int


# platform.machine() -> Node.js's os.arch(), which the worker-agent system's workers report.
_NODE_ARCH = {
    "x86_64": "x64",
    "amd64": "x64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "i386": "ia32",
    "i686": "ia32",
    "armv6l": "arm",
    "armv7l": "arm",
    "ppc64le": "ppc64",
    "ppc64": "ppc64",
    "loongarch64": "loong64",
}


@functools.cache
def host_facts() -> HostFacts:
    """Read once: none of it changes while the worker runs."""
    machine = platform.machine()
    return HostFacts(
        hostname=socket.gethostname(),
        os=_os_name(),
        os_architecture=_NODE_ARCH.get(machine.lower(), machine),
        cpu_model=_cpu_model(),
        cpu_cores=psutil.cpu_count(logical=False),
        cpu_threads=os.cpu_count() or 1,
        memory_mb=round(psutil.virtual_memory().total / MIB),
    )


def uptime_s() -> int:
    """Whole seconds since the worker's process started."""
    return round(time.time() - psutil.Process().create_time())


def _os_name() -> str:
    kernel = f"{platform.system().lower()} {platform.release()}"
    try:
        release = platform.freedesktop_os_release()
    except OSError:
        return kernel
    pretty = release.get("PRETTY_NAME")
    return f"{pretty} ({kernel})" if pretty else kernel


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or None
