"""Host ports for jobs that serve: each name gets a free port from the configured range (or its source's own,
where a source has one: Fluster's jobs take theirs from `fluster.port_range`), never two jobs on one port,
released when the job ends."""

from __future__ import annotations

import random
import socket
from collections.abc import Mapping

from hatchway.errors import PortsExhausted


class PortAllocator:
    """Hands out host ports from [low, high] to jobs and takes them back; `ranges` are job sources' own ranges
    (inclusive too), by origin."""

    def __init__(self, low: int, high: int, *, ranges: Mapping[str, tuple[int, int]] | None = None) -> None:
        self._low = low
        self._high = high
        self._ranges = dict(ranges or {})
        self._owner: dict[int, str] = {}

    def allocate(self, job_id: str, names: list[str], *, origin: str | None = None) -> dict[str, int]:
        """A free port for each name, from the range of job source `origin` if it has one; all or nothing."""
        low, high = self._ranges.get(origin or "", (self._low, self._high))
        taken: dict[str, int] = {}
        try:
            for name in names:
                port = self._free_port(low, high)
                self._owner[port] = job_id
                taken[name] = port
        except PortsExhausted:
            self.release(job_id)
            raise
        return taken

    def claim(self, job_id: str, ports: dict[str, int]) -> None:
        """Mark ports as a job's again (a job re-attached after a restart keeps its ports)."""
        for port in ports.values():
            self._owner[port] = job_id

    def release(self, job_id: str) -> None:
        for port in [port for port, owner in self._owner.items() if owner == job_id]:
            del self._owner[port]

    def in_use(self) -> dict[int, str]:
        return dict(self._owner)

    def _free_port(self, low: int, high: int) -> int:
        # Start at a random place so a port a job just gave up (perhaps still in TIME_WAIT) is not next.
        size = high - low + 1
        start = random.randrange(size)
        for offset in range(size):
            port = low + (start + offset) % size
            if port not in self._owner and _bindable(port):
                return port
        raise PortsExhausted(f"no free port left in {low}-{high}")


def _bindable(port: int) -> bool:
    """Whether nothing on this host listens on `port` (TCP, any address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True
