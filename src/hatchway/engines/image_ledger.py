"""The ledger of images hatchway made: which it pulled, built or imported, how large and when last used, kept in a
small JSON file so a size budget holds across restarts; and which jobs use one now (in this process only).

Thread-safe: the image service calls it from the engine's thread pool. Forgetting is the safe direction: an image
the ledger does not know is never evicted, so an unreadable file starts it empty.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from hatchway.engines.base import ImageSource, ManagedImage
from hatchway.files import write_atomically

log = logging.getLogger(__name__)

_STATE_VERSION = 1


@dataclass(frozen=True)
class Entry:
    """What the state file keeps for one managed image."""

    name: str
    source: ImageSource
    size_bytes: int
    last_used: float


class ImageLedger:
    """Managed images and their use, persisted to `state_path`; chooses what to evict, least recently used first."""

    def __init__(self, state_path: Path) -> None:
        self._state_path = state_path
        self._lock = threading.Lock()  # guards _entries, _in_use and the state file
        self._entries = self._load()
        self._in_use: Counter[str] = Counter()

    def record(self, name: str, source: ImageSource, size_bytes: int, *, keep_existing: bool = False) -> ManagedImage:
        """Note image `name` as made by hatchway, just now (an entry already there stays with `keep_existing`)."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or not keep_existing:
                entry = Entry(name=name, source=source, size_bytes=size_bytes, last_used=time.time())
                self._entries[name] = entry
                self._save()
            return self._as_managed(entry)

    def acquire(self, name: str) -> None:
        """A job uses `name`: it is not evicted until released, and counts as just used."""
        with self._lock:
            self._in_use[name] += 1
            entry = self._entries.get(name)
            if entry is not None:
                self._entries[name] = replace(entry, last_used=time.time())
                self._save()

    def release(self, name: str) -> None:
        """Undo one `acquire`."""
        with self._lock:
            if self._in_use[name] <= 1:
                del self._in_use[name]
            else:
                self._in_use[name] -= 1

    def entries(self) -> list[Entry]:
        with self._lock:
            return list(self._entries.values())

    def forget(self, gone: Iterable[Entry]) -> None:
        """Drop these entries, each only if nothing recorded its image again since it was read."""
        with self._lock:
            for entry in gone:
                if self._entries.get(entry.name) == entry:
                    del self._entries[entry.name]
            self._save()

    def evict(self, budget_bytes: int, remove: Callable[[str], bool]) -> list[str]:
        """Remove unused built and pulled images, least recently used first, until they fit `budget_bytes`.
        `remove(name)` removes one from the engine, or answers False to leave it for a later round (a container
        still uses it); either way it is chosen and removed under the lock, so no `acquire` can take it between.
        Imported images are never evicted. Returns the names removed."""
        removed: list[str] = []
        skipped: set[str] = set()
        while True:
            with self._lock:
                cached = [e for e in self._entries.values() if e.source != "imported"]
                if sum(e.size_bytes for e in cached) <= budget_bytes:
                    return removed
                candidates = [e for e in cached if not self._in_use[e.name] and e.name not in skipped]
                if not candidates:
                    return removed
                victim = min(candidates, key=lambda e: e.last_used)
                if not remove(victim.name):
                    skipped.add(victim.name)
                    continue
                removed.append(victim.name)
                del self._entries[victim.name]
                self._save()

    def managed(self) -> list[ManagedImage]:
        """Every image in the ledger, least recently used first."""
        with self._lock:
            entries = sorted(self._entries.values(), key=lambda e: e.last_used)
            return [self._as_managed(entry) for entry in entries]

    def _as_managed(self, entry: Entry) -> ManagedImage:
        return ManagedImage(in_use=self._in_use.get(entry.name, 0), **asdict(entry))

    def _load(self) -> dict[str, Entry]:
        try:
            data = json.loads(self._state_path.read_text())
            return {item["name"]: Entry(**item) for item in data["images"]}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning(
                "image state unreadable; starting empty",
                extra={"event": "image_state_unreadable", "path": str(self._state_path), "error": str(exc)},
            )
            return {}

    def _save(self) -> None:
        """Write the state atomically: a reader (or a crash) sees the old file or the new one, never half of one."""
        data = {"version": _STATE_VERSION, "images": [asdict(entry) for entry in self._entries.values()]}
        write_atomically(self._state_path, json.dumps(data).encode(), durable=True)
