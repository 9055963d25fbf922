"""Backends: where attempts run. `local` runs them in this process's event loop,
each on its own kernel process; `dask` (later) on Dask distributed workers."""

from nbjobs.backends.base import Backend, FinishedCallback, Launch

__all__ = ["Backend", "FinishedCallback", "Launch"]
