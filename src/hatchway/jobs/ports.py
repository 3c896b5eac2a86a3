"""Host ports for jobs that serve: each name gets a free port from the configured range, never two jobs
on one port, released when the job ends."""

from __future__ import annotations

import random
import socket

from hatchway.errors import PortsExhausted


class PortAllocator:
    """Hands out host ports from [low, high] to jobs and takes them back."""

    def __init__(self, low: int, high: int) -> None:
        self._low = low
        self._high = high
        self._owner: dict[int, str] = {}

    def allocate(self, job_id: str, names: list[str]) -> dict[str, int]:
        """A free port for each name; all or nothing."""
        taken: dict[str, int] = {}
        try:
            for name in names:
                port = self._free_port()
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

    def _free_port(self) -> int:
        # Start at a random place so a port a job just gave up (perhaps still in TIME_WAIT) is not next.
        size = self._high - self._low + 1
        start = random.randrange(size)
        for offset in range(size):
            port = self._low + (start + offset) % size
            if port not in self._owner and _bindable(port):
                return port
        raise PortsExhausted(f"no free port left in {self._low}-{self._high}")


def _bindable(port: int) -> bool:
    """Whether nothing on this host listens on `port` (TCP, any address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True
