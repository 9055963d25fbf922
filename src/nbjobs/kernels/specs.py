"""Kernelspec lookup with errors a user can act on."""

from __future__ import annotations

from dataclasses import dataclass

from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

from nbjobs.errors import InvalidInput


@dataclass(frozen=True)
class KernelInfo:
    name: str
    language: str
    argv: tuple[str, ...]


def resolve_kernel(name: str) -> KernelInfo:
    """The installed kernelspec `name`, or InvalidInput listing the installed ones."""
    manager = KernelSpecManager()
    try:
        spec = manager.get_kernel_spec(name)
    except NoSuchKernel:
        installed = ", ".join(sorted(manager.find_kernel_specs())) or "none"
        raise InvalidInput(
            f"Unknown kernel {name!r}. Installed kernels: {installed}. "
            "Pass one with --kernel, or install the kernel (e.g. `python -m ipykernel install --user`)."
        ) from None
    return KernelInfo(name=name, language=(spec.language or "").lower(), argv=tuple(spec.argv))
