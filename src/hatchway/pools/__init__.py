"""Pools of started containers for plain jobs: `manager` keeps them, `execution` runs a job in one."""

from hatchway.pools.execution import PooledRuns
from hatchway.pools.manager import Pools
from hatchway.pools.slot import PoolKey, Slot

__all__ = ["PoolKey", "PooledRuns", "Pools", "Slot"]
