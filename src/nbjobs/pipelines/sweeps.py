"""Sweeps: one job per combination of parameter values, as a group with an optional max-parallel.

The notebook, kernel and spec are checked once (with the first combination);
each further combination only has its values checked (they must render as
literals of the kernel's language). All jobs go in with one transaction, so a
thousand-element sweep is one request and a fraction of a second of work.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from nbjobs.errors import InvalidInput
from nbjobs.kernels.specs import resolve_kernel
from nbjobs.notebook.literals import render_value, supported_language
from nbjobs.pipelines.gate import sweep_reason
from nbjobs.pipelines.submit import upstream_ids
from nbjobs.spec import JobSpec
from nbjobs.spec_sources import describe_validation_error
from nbjobs.store import groups
from nbjobs.store.batch import HOLD_DEPENDENCIES, HOLD_SWEEP, NewJob, insert_jobs
from nbjobs.store.repository import utcnow

if TYPE_CHECKING:
    from nbjobs.service import JobService

Mode = Literal["grid", "zip"]
MAX_ELEMENTS = 100_000


def expand(axes: Mapping[str, Sequence[Any]], mode: Mode = "grid") -> list[dict[str, Any]]:
    """The parameter combinations: the grid product (last axis fastest), or the axes zipped."""
    if not axes:
        raise InvalidInput("A sweep needs at least one parameter with values: -p NAME V1,V2,...")
    for name, values in axes.items():
        if not values:
            raise InvalidInput(f"Sweep parameter {name!r} has no values.")
    names = list(axes)
    if mode == "zip":
        lengths = {name: len(values) for name, values in axes.items()}
        if len(set(lengths.values())) > 1:
            listed = ", ".join(f"{n}: {k}" for n, k in lengths.items())
            raise InvalidInput(f"--zip needs the same number of values for every parameter ({listed}).")
        combos = zip(*axes.values(), strict=True)
        size = next(iter(lengths.values()))
    else:
        size = 1
        for values in axes.values():
            size *= len(values)
        combos = itertools.product(*axes.values())
    if size > MAX_ELEMENTS:
        raise InvalidInput(f"The sweep has {size} elements; at most {MAX_ELEMENTS} go in one sweep.")
    return [dict(zip(names, combo, strict=True)) for combo in combos]


class SweepService:
    def __init__(self, jobs: JobService) -> None:
        self.jobs = jobs
        self.store = jobs.store

    def create(
        self,
        base: dict[str, Any] | JobSpec,
        axes: Mapping[str, Sequence[Any]],
        owner: str,
        *,
        mode: Mode = "grid",
        max_parallel: int | None = None,
    ) -> dict[str, Any]:
        elements = expand(axes, mode)
        spec = _parse_spec(base)
        if spec.idempotency_key:
            raise InvalidInput("A sweep takes no idempotency key: each of its jobs would need its own.")
        if max_parallel is not None and max_parallel < 1:
            raise InvalidInput(f"--max-parallel must be 1 or more, got {max_parallel}.")
        first = spec.model_copy(update={"parameters": {**spec.parameters, **elements[0]}})
        checked = self.jobs.validate(first)  # notebook, kernel, declared parameters, resources: once
        language = supported_language(resolve_kernel(checked.kernel or "python3").language or "python")
        for index, element in enumerate(elements):
            for name, value in element.items():
                try:
                    render_value(value, language, path=name)
                except InvalidInput as exc:
                    raise InvalidInput(f"Sweep element {index} ({_describe(element)}): {exc}") from None
        upstreams = upstream_ids(self.store, checked)
        template = checked.model_dump(mode="json")
        display = checked.display_name
        new = []
        for index, element in enumerate(elements):
            spec_json = {**template, "parameters": {**template["parameters"], **element}}
            hold, reason = None, None
            if upstreams:
                hold, reason = HOLD_DEPENDENCIES, "waiting for its upstream jobs"
            elif max_parallel is not None and index >= max_parallel:
                hold, reason = HOLD_SWEEP, None
            new.append(
                NewJob(
                    spec=checked,
                    spec_json=spec_json,
                    name=f"{display}[{index}]",
                    sweep_index=index,
                    hold=hold,
                    queue_reason=reason,
                    upstream_ids=upstreams,
                )
            )
        with self.store.session() as s, s.begin():
            sweep_id = groups.add_sweep(
                s,
                name=display,
                notebook=checked.notebook,
                owner=owner,
                axes={name: list(values) for name, values in axes.items()},
                mode=mode,
                size=len(elements),
                max_parallel=max_parallel,
            )
            for job in new:
                job.sweep_id = sweep_id
                if job.hold == HOLD_SWEEP and max_parallel is not None:
                    job.queue_reason = sweep_reason(sweep_id, max_parallel)
            ids = insert_jobs(s, new, owner=owner, host=self.jobs.host, now=utcnow())
        self.jobs.dispatcher.wake()
        return {"id": sweep_id, "name": display, "size": len(elements), "jobs": [ids[0], ids[-1]]}

    def view(self, sweep_id: int) -> dict[str, Any]:
        sweep = groups.get_sweep(self.store, sweep_id)
        axes = list(sweep.axes)
        counts: dict[str, int] = {}
        elements = []
        for job in groups.sweep_elements(self.store, sweep_id):
            counts[job.state.value] = counts.get(job.state.value, 0) + 1
            elements.append(
                {
                    "index": job.sweep_index,
                    "job_id": job.id,
                    "state": job.state.value,
                    "reason": job.reason or job.queue_reason,
                    "parameters": {name: job.parameters.get(name) for name in axes},
                    "results": job.results,
                    "duration": job.duration,
                }
            )
        return {
            "id": sweep.id,
            "name": sweep.name,
            "owner": sweep.owner,
            "notebook": sweep.notebook,
            "mode": sweep.mode,
            "size": sweep.size,
            "max_parallel": sweep.max_parallel,
            "axes": sweep.axes,
            "created": sweep.created,
            "counts": counts,
            "elements": elements,
        }

    def list(self, limit: int = 50, owner: str | None = None) -> list[dict[str, Any]]:
        """The newest sweeps (only `owner`'s, when given), each with its jobs counted by state."""
        return [
            {
                "id": w.id,
                "name": w.name,
                "owner": w.owner,
                "size": w.size,
                "mode": w.mode,
                "created": w.created,
                "counts": counts,
            }
            for w, counts in groups.list_sweeps(self.store, limit, owner)
        ]


def _parse_spec(base: dict[str, Any] | JobSpec) -> JobSpec:
    if isinstance(base, JobSpec):
        return base
    try:
        return JobSpec.model_validate(base)
    except ValidationError as exc:
        raise InvalidInput(describe_validation_error(exc, "the sweep's spec")) from None


def _describe(element: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in element.items())
