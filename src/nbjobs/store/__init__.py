"""The store: the source of truth for jobs, attempts, cells and state history."""

from nbjobs.store.records import AttemptRecord, CellRecord, JobRecord, StateChange, UsageRecord
from nbjobs.store.repository import Store

__all__ = ["AttemptRecord", "CellRecord", "JobRecord", "StateChange", "Store", "UsageRecord"]
