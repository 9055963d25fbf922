"""Kernel providers: where a job's fresh kernel comes from.

Every provider hands out a `KernelHandle` for exactly one job; a used kernel is
discarded, never reused, so no state leaks between jobs. `plain` launches one kernel per
job; `pool` keeps plain kernels started ahead; `zygote` forks ipykernels from a process
that has imported them. `registry.make_provider` picks one from the host's config.
"""

from nbjobs.kernels.base import KernelHandle, KernelProvider, KernelRequest
from nbjobs.kernels.plain import PlainProvider
from nbjobs.kernels.specs import KernelInfo, resolve_kernel

__all__ = ["KernelHandle", "KernelInfo", "KernelProvider", "KernelRequest", "PlainProvider", "resolve_kernel"]
