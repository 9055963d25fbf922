"""An allocation: the concrete resources given to one attempt."""

from __future__ import annotations

from dataclasses import dataclass, field

THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "NUMEXPR_MAX_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "BLIS_NUM_THREADS",
    "RAYON_NUM_THREADS",
    "POLARS_MAX_THREADS",
)


@dataclass(frozen=True)
class Allocation:
    """Concrete CPU ids, GPU ids, a memory limit and custom counts for one attempt."""

    cpus: tuple[int, ...] = ()  # CPU ids for affinity; () means not pinned
    memory: int | None = None  # bytes; None means no limit
    gpus: tuple[str, ...] = ()  # GPU indexes or UUIDs, as CUDA_VISIBLE_DEVICES takes them
    custom: dict[str, int] = field(default_factory=dict)

    def kernel_env(self) -> dict[str, str]:
        """Variables the kernel must see before anything imports a thread pool or CUDA."""
        env: dict[str, str] = {}
        if self.cpus:
            env.update(dict.fromkeys(THREAD_VARIABLES, str(len(self.cpus))))
        # Always set, so a job that asked for no GPU sees none rather than all of them.
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        env["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpus)
        return env

    def to_dict(self) -> dict[str, object]:
        return {"cpus": list(self.cpus), "memory": self.memory, "gpus": list(self.gpus), "custom": dict(self.custom)}
