"""Turn user input into a job that is ready to run, or refuse it.

Everything that can be wrong with a request is checked here, before a job row
exists: the spec, the notebook file, the kernel, the parameters, the output
location. A refused request leaves nothing behind.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nbformat import NotebookNode

from nbjobs.errors import InvalidInput
from nbjobs.kernels.specs import KernelInfo, resolve_kernel
from nbjobs.notebook.io import load_notebook
from nbjobs.notebook.params import inject_parameters
from nbjobs.spec import JobSpec
from nbjobs.spec_sources import Layer, build_spec, load_spec_file, notebook_metadata_layer


@dataclass(frozen=True)
class PreparedJob:
    spec: JobSpec  # notebook and cwd made absolute
    nb: NotebookNode  # parameters injected, ready to execute
    kernel: KernelInfo
    cwd: Path
    output: Path | None  # an explicit output path (papermill's OUTPUT argument)


def load_spec(
    notebook: str | None = None,
    *,
    spec_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[JobSpec, NotebookNode]:
    """The job spec from notebook metadata < job file < overrides, and the loaded notebook."""
    file_layer = load_spec_file(spec_file) if spec_file else {}
    path = notebook or file_layer.get("notebook")
    if not path:
        raise InvalidInput("No notebook given: pass a NOTEBOOK argument or set `notebook` in the job file.")
    nb = load_notebook(path)
    layers: list[Layer] = [(f"metadata.nbjobs of {path!r}", notebook_metadata_layer(nb.metadata, str(path)))]
    if spec_file:
        layers.append((f"job file {str(spec_file)!r}", file_layer))
    flags = dict(overrides or {})
    flags["notebook"] = str(Path(path).resolve())
    layers.append(("the command line", flags))
    return build_spec(layers), nb


def prepare(spec: JobSpec, nb: NotebookNode | None = None, output: str | Path | None = None) -> PreparedJob:
    """Check everything a run needs; InvalidInput names the first problem found."""
    notebook = Path(spec.notebook).resolve()
    if nb is None:
        nb = load_notebook(notebook)
    kernel_name = spec.kernel or nb.metadata.get("kernelspec", {}).get("name") or "python3"
    kernel = resolve_kernel(kernel_name)
    language = kernel.language or nb.metadata.get("kernelspec", {}).get("language") or "python"
    injected = inject_parameters(nb, spec.parameters, language, allow_unknown=spec.allow_unknown_params)
    cwd = Path(spec.cwd).expanduser().resolve() if spec.cwd else notebook.parent
    if not cwd.is_dir():
        raise InvalidInput(f"Working directory {str(cwd)!r} (`cwd`) does not exist or is not a directory.")
    explicit = Path(output).expanduser().resolve() if output else None
    if explicit is not None:
        check_writable_file(explicit, "Output path")
    elif spec.outputs.path:
        check_writable_file(_static_prefix(spec.outputs.path) / "x", "`outputs.path`")
    spec = spec.model_copy(update={"notebook": str(notebook), "cwd": str(cwd), "kernel": kernel_name})
    return PreparedJob(spec=spec, nb=injected, kernel=kernel, cwd=cwd, output=explicit)


def check_writable_file(path: Path, what: str) -> None:
    parent = path.parent
    if path.is_dir():
        raise InvalidInput(
            f"{what} {str(path)!r} is a directory; give a file path such as {str(path / 'out.ipynb')!r}."
        )
    if not parent.is_dir():
        raise InvalidInput(f"{what} {str(path)!r}: directory {str(parent)!r} does not exist; create it first.")
    # Create a probe file rather than trust os.access, which says yes to root on any folder.
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".nbjobs-probe-"):
            pass
    except OSError as exc:
        raise InvalidInput(
            f"{what} {str(path)!r}: directory {str(parent)!r} is not writable ({exc.strerror})."
        ) from None


def _static_prefix(template: str) -> Path:
    """The directory part of a template before its first field: it must exist already."""
    head = template.split("{", 1)[0]
    path = Path(head).expanduser()
    return (path if head.endswith(("/", os.sep)) else path.parent).resolve()


def render_output_path(prepared: PreparedJob, *, job_id: int, attempt: int, default: Path) -> Path:
    """Where attempt `attempt` of job `job_id` writes its output notebook."""
    if prepared.output is not None:
        return prepared.output
    template = prepared.spec.outputs.path
    if not template:
        return default
    path = (
        Path(
            template.format(
                job_id=job_id,
                name=prepared.spec.display_name,
                notebook=Path(prepared.spec.notebook).stem,
                date=datetime.now(UTC).date().isoformat(),
                attempt=attempt,
            )
        )
        .expanduser()
        .resolve()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
