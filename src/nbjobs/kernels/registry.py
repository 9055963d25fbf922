"""Which kernel provider serves a kernelspec, from the host's `[kernels]` config."""

from __future__ import annotations

import logging

from nbjobs.config import KernelConfig
from nbjobs.kernels.base import KernelHandle, KernelProvider, KernelRequest
from nbjobs.kernels.plain import PlainProvider
from nbjobs.kernels.pool import PoolProvider
from nbjobs.kernels.specs import KernelInfo, resolve_kernel
from nbjobs.kernels.zygote import ZygoteProvider, is_ipykernel

log = logging.getLogger(__name__)


def make_provider(config: KernelConfig, kernel: KernelInfo, *, single_job: bool = False) -> KernelProvider:
    """The provider for jobs on `kernel`.

    `auto` picks the zygote for Python ipykernel specs and plain kernels for the rest. With
    `single_job` (a foreground `nbjobs run`), nothing outlives the job, so nothing is kept
    ahead of demand, and `auto` picks plain: a zygote started for one job must import
    everything a plain kernel imports before it can fork, and forking adds to that
    (bench/RESULTS.md, "Kernel start-up").
    """
    choice = config.provider
    ready = 0 if single_job else config.ready
    if choice == "auto":
        choice = "zygote" if is_ipykernel(kernel) and not single_job else "plain"
    if choice == "zygote" and not is_ipykernel(kernel):
        log.info("kernel %r is not an ipykernel: it gets plain kernels, not forked ones", kernel.name)
        choice = "plain"
    if choice == "zygote":
        return ZygoteProvider(kernel, preload=config.preload, ready=ready)
    if choice == "pool" and ready:
        return PoolProvider(ready)
    return PlainProvider()


class ConfiguredProviders(KernelProvider):
    """One provider per kernelspec, made by `make_provider` on first use: what a long-lived
    process (the server) holds, so each Python kernelspec gets its own zygote."""

    name = "configured"

    def __init__(self, config: KernelConfig) -> None:
        self.config = config
        self.providers: dict[str, KernelProvider] = {}

    def provider_for(self, kernel_name: str) -> KernelProvider:
        if kernel_name not in self.providers:
            self.providers[kernel_name] = make_provider(self.config, resolve_kernel(kernel_name))
        return self.providers[kernel_name]

    async def start(self, request: KernelRequest, *, timeout: float = 60.0) -> KernelHandle:
        return await self.provider_for(request.kernel_name).start(request, timeout=timeout)

    async def warm(self) -> None:
        for provider in list(self.providers.values()):
            await provider.warm()

    async def close(self) -> None:
        providers, self.providers = list(self.providers.values()), {}
        for provider in providers:
            await provider.close()
