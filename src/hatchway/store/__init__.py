"""Job stores: where jobs live durably. `JobStore` is the seam; SQLite is the embedded default."""

from hatchway.store.base import JobPage, JobQuery, JobStore
from hatchway.store.memory import MemoryStore
from hatchway.store.sqlite import SqliteStore

__all__ = ["JobPage", "JobQuery", "JobStore", "MemoryStore", "SqliteStore"]
