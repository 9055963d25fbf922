"""The store: the source of truth for jobs, attempts, cells and state history."""

from nbjobs.store.records import AttemptRecord, CellRecord, GitRecord, JobRecord, StateChange, UsageRecord
from nbjobs.store.repository import Store

__all__ = ["AttemptRecord", "CellRecord", "GitRecord", "JobRecord", "StateChange", "Store", "UsageRecord"]
