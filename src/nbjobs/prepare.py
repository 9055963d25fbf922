"""Turn user input into a job that is ready to run, or refuse it.

Everything that can be wrong with a request is checked here, before a job row
exists: the spec, the notebook file (or the git ref it is read at), the kernel,
the parameters, the output location. A refused request leaves nothing behind.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nbformat import NotebookNode

from nbjobs.checkout import NotebookSource, locate, read_at_ref
from nbjobs.config import Settings
from nbjobs.errors import InvalidInput
from nbjobs.kernels.specs import KernelInfo, resolve_kernel
from nbjobs.notebook.clean import clean_input
from nbjobs.notebook.io import load_notebook
from nbjobs.notebook.params import inject_parameters
from nbjobs.spec import JobSpec
from nbjobs.spec_sources import Layer, build_spec, load_spec_file, notebook_metadata_layer
from nbjobs.vcs import Snapshot


@dataclass(frozen=True)
class PreparedJob:
    spec: JobSpec  # as stored: notebook and cwd absolute, or the notebook's path in `repo`
    nb: NotebookNode  # parameters injected, ready to execute
    kernel: KernelInfo
    cwd: Path
    output: Path | None  # an explicit output path (papermill's OUTPUT argument)
    git: dict[str, Any] | None = None  # the repository's state (nbjobs.vcs.RepoState.as_record())
    snapshot: Snapshot | None = None  # held for this job; the run releases it when the job ends


def load_spec(
    notebook: str | None = None,
    *,
    spec_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    settings: Settings | None = None,
) -> tuple[JobSpec, NotebookNode]:
    """The job spec from notebook metadata < job file < overrides, and the loaded notebook.

    With `git_ref` or `repo` (from the file or the overrides), the notebook is read
    at that ref, and `notebook` is its path inside the repository.
    """
    file_layer = load_spec_file(spec_file) if spec_file else {}
    path = notebook or file_layer.get("notebook")
    if not path:
        raise InvalidInput("No notebook given: pass a NOTEBOOK argument or set `notebook` in the job file.")
    flags = dict(overrides or {})
    file_source = f"job file {str(spec_file)!r}"
    # Where to read the notebook (git_ref, repo) comes from the file and flags, never the notebook itself.
    early: list[Layer] = [(file_source, file_layer)] if spec_file else []
    where = build_spec([*early, ("the command line", {**flags, "notebook": "-"})])
    if where.git_ref is None and where.repo is None:
        nb = load_notebook(path)
        flags["notebook"] = str(Path(path).resolve())
        described = repr(path)
    else:
        home = (settings or Settings.from_env()).home
        nb, flags["notebook"], flags["repo"] = read_at_ref(str(path), repo=where.repo, ref=where.git_ref, home=home)
        described = f"{flags['notebook']!r} at {where.git_ref or 'HEAD'}"
    layers: list[Layer] = [(f"metadata.nbjobs of {described}", notebook_metadata_layer(nb.metadata, described))]
    if spec_file:
        layers.append((file_source, file_layer))
    layers.append(("the command line", flags))
    return build_spec(layers), nb


def prepare(
    spec: JobSpec,
    nb: NotebookNode | None = None,
    output: str | Path | None = None,
    *,
    snapshot: Snapshot | None = None,
    settings: Settings | None = None,
) -> PreparedJob:
    """Check everything a run needs; InvalidInput names the first problem found.

    A job with `git_ref` or `repo` takes a lease on a snapshot of that commit (or
    on `snapshot`, one the caller holds, e.g. a pipeline's); the run releases it.
    """
    source = locate(spec, home=(settings or Settings.from_env()).home, snapshot=snapshot)
    try:
        return _prepare_from(source, nb, output)
    except BaseException:
        if source.snapshot is not None:
            source.snapshot.release()
        raise


def _prepare_from(source: NotebookSource, nb: NotebookNode | None, output: str | Path | None) -> PreparedJob:
    spec = source.spec
    if source.snapshot is not None:
        at_commit = load_notebook(source.notebook)
        if nb is not None and nb != at_commit:
            raise InvalidInput(
                f"Ref {spec.git_ref or 'HEAD'!r} of {spec.repo!r} moved while the job was being prepared "
                "(the notebook differs from the one read a moment ago); run it again."
            )
        nb = at_commit
    elif nb is None:
        nb = load_notebook(source.notebook)
    if spec.outputs.clean_input:
        nb = copy.deepcopy(nb)
        clean_input(nb)
    kernel_name = spec.kernel or nb.metadata.get("kernelspec", {}).get("name") or "python3"
    kernel = resolve_kernel(kernel_name)
    language = kernel.language or nb.metadata.get("kernelspec", {}).get("language") or "python"
    injected = inject_parameters(nb, spec.parameters, language, allow_unknown=spec.allow_unknown_params)
    if not source.cwd.is_dir():
        raise InvalidInput(f"Working directory {str(source.cwd)!r} (`cwd`) does not exist or is not a directory.")
    explicit = Path(output).expanduser().resolve() if output else None
    if explicit is not None:
        check_writable_file(explicit, "Output path")
    elif spec.outputs.path:
        check_writable_file(_static_prefix(spec.outputs.path) / "x", "`outputs.path`")
    spec = spec.model_copy(update={"kernel": kernel_name})
    return PreparedJob(
        spec=spec,
        nb=injected,
        kernel=kernel,
        cwd=source.cwd,
        output=explicit,
        git=source.git,
        snapshot=source.snapshot,
    )


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
