"""Resources for a foreground run (`nbjobs run` without a server)."""

from __future__ import annotations

from nbjobs.config import Settings
from nbjobs.prepare import PreparedJob
from nbjobs.resources.allocation import Allocation
from nbjobs.resources.allocator import Allocator
from nbjobs.resources.capacity import detect_capacity


def allocate_here(prepared: PreparedJob, settings: Settings | None = None) -> Allocation:
    """Concrete resources of this host for a foreground run; InvalidInput if they can never fit.

    A foreground run does not queue: it only needs to know that the request is
    possible here, and which CPU ids and GPUs to give it. It cannot see other
    foreground runs, so its CPUs and GPUs are spread rather than packed (two
    runs at once seldom share one); the server's scheduler books across jobs.
    """
    settings = settings or Settings.from_env()
    resources = prepared.spec.resources
    allocator = Allocator(detect_capacity(settings.config, gpus=resources.gpus > 0), spread=True)
    allocator.check_fits(resources)
    allocation = allocator.try_allocate(resources)
    assert allocation is not None, "a request that fits an empty host is always allocated"
    return allocation
