"""The stock of volumes made ahead and given back, so that neither a pooled container nor a cold job waits for a
disk to be made (`volumes` makes them)."""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid

from hatchway.engines.volumes import MIB, Volume, Volumes
from hatchway.errors import DiskUnavailable

log = logging.getLogger(__name__)

_TRIM_ABOVE_BYTES = 4 * MIB


class VolumeStock:
    """Volumes made ahead and given back: a volume whose owner is done is wiped and kept (up to `spares` of
    them) for the next owner with the same disk limit, so that neither a pooled container nor a cold job waits
    for mkfs and mount. A wiped volume is as good as a new one: its files are gone, and blocks freed inside it
    read as zeros to whoever gets them next (ext4 never hands out another file's old data); a volume that held
    much is trimmed first, so the host gets the space back."""

    def __init__(self, volumes: Volumes, *, spares: int) -> None:
        self.volumes = volumes
        self._spares = spares
        self._stock: dict[int, list[Volume]] = {}
        self._lock = threading.Lock()  # its methods run in worker threads

    def take(self, name: str, disk_mb: int) -> Volume:
        """A fresh volume named `name` for up to `disk_mb`: a spare if one is in stock. Blocking."""
        with self._lock:
            stock = self._stock.get(disk_mb)
            spare = stock.pop() if stock else None
        if spare is not None:
            volume = self.volumes.rename(spare, name)
            self.volumes.limit(volume, disk_mb)
            return volume
        return self.volumes.create(name, disk_mb)

    def give_back(self, volume: Volume, disk_mb: int) -> None:
        """The owner is done with `volume` (its container removed): keep it wiped as a spare, or remove it.
        Blocking; never raises for a volume it cannot keep."""
        with self._lock:
            room = sum(len(stock) for stock in self._stock.values()) < self._spares
        if room:
            try:
                used = self.volumes.used_bytes(volume)
                self.volumes.wipe(volume)
                if used > _TRIM_ABOVE_BYTES:
                    self.volumes.trim(volume)
                spare = self.volumes.rename(volume, f"spare-{uuid.uuid4().hex[:12]}")  # its old name may come back
                with self._lock:
                    self._stock.setdefault(disk_mb, []).append(spare)
                return
            except (OSError, DiskUnavailable) as exc:
                log.warning("a used volume is not kept: %s", exc, extra={"event": "volume_not_kept"})
        self.volumes.remove(volume)

    def clear(self) -> None:
        """Remove every spare (at shutdown)."""
        with self._lock:
            spares = [volume for stock in self._stock.values() for volume in stock]
            self._stock.clear()
        for volume in spares:
            with contextlib.suppress(DiskUnavailable):
                self.volumes.remove(volume)
