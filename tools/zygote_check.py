"""Zygote kernels on a host with a real GPU: which GPUs a job sees, and its cgroup.

Run from the repository root: `python tools/zygote_check.py`. The zygote preloads torch
(imported, CUDA not initialised, as a preloaded module must leave it). For a kernel forked
on demand and for a spare handed to a job, it prints what the job saw for an allocation of
no GPU and of GPU 0 (CUDA_VISIBLE_DEVICES, torch's device count), and, for a memory limit,
whether the kernel ended up in the attempt's cgroup (where the host lets us create one).
One JSON line per check; exit status 1 if a job saw other GPUs than it was given.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from nbjobs.kernels import KernelRequest, resolve_kernel
from nbjobs.kernels.zygote import ZygoteProvider
from nbjobs.resources.allocation import Allocation
from nbjobs.resources.enforce import Enforcement

GPU_PROBE = (
    "import os, json, torch\nprint(json.dumps([os.environ.get('CUDA_VISIBLE_DEVICES'), torch.cuda.device_count()]))"
)
CGROUP_PROBE = "print(open('/proc/self/cgroup').read().strip())"


async def printed_by(client: Any, code: str) -> str:
    msg_id = client.execute(code)
    texts = []
    while True:
        msg = await client.get_iopub_msg(timeout=120)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] in ("stream", "error"):
            texts.append(msg["content"].get("text") or msg["content"].get("evalue", ""))
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return "".join(texts).strip()


async def check(provider: ZygoteProvider, path: str, allocation: Allocation, probe: str, work: Path) -> dict:
    enforcement = Enforcement.create(allocation, f"zygote-check-{path.replace(' ', '-')}-{len(allocation.gpus)}")
    request = KernelRequest(
        "python3",
        work,
        work / "kernel.log",
        allocation=allocation,
        cgroup=enforcement.cgroup,
        address_space=enforcement.address_space,
    )
    kernel = await provider.start(request)
    try:
        enforcement.attach(kernel.pid)
        seen = await printed_by(kernel.client, probe)
        return {"path": path, "allocation": allocation.to_dict(), "enforcement": enforcement.mode, "seen": seen}
    finally:
        await kernel.kill()
        enforcement.close()
        await provider.warm()


async def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="zygote-check-"))
    wrong = 0
    for ready, path in ((0, "forked on demand"), (1, "spare")):
        provider = ZygoteProvider(resolve_kernel("python3"), preload=["torch"], ready=ready)
        try:
            await provider.warm()
            for gpus in ((), ("0",)):
                result = await check(provider, path, Allocation(gpus=gpus), GPU_PROBE, work)
                print(json.dumps(result), flush=True)
                try:
                    wrong += json.loads(result["seen"])[1] != len(gpus)
                except (ValueError, IndexError, TypeError):  # the probe failed: say so by the exit status
                    wrong += 1
            memory = Allocation(memory=4 << 30)
            print(json.dumps(await check(provider, path, memory, CGROUP_PROBE, work)), flush=True)
        finally:
            await provider.close()
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
