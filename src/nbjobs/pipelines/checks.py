"""Every check of a pipeline before anything runs, and the job spec of each task.

Refused (InvalidInput, nothing stored): unknown upstream tasks, a cycle (named),
malformed references, `${params.x}` without such a parameter, `${task.result}`
where the task is not upstream of the one using it, a result the upstream
notebook visibly never records, and every problem a single job would have
(missing notebook, unknown kernel, undeclared parameter, resources).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbformat import NotebookNode

from nbjobs.errors import InvalidInput
from nbjobs.notebook.io import load_notebook
from nbjobs.notebook.results import RESULT_MIME_TYPE
from nbjobs.pipelines.model import Pipeline
from nbjobs.prepare import prepare
from nbjobs.scheduler import dag
from nbjobs.spec import JobSpec, RunIf
from nbjobs.spec_sources import build_spec, notebook_metadata_layer

SpecCheck = Callable[[JobSpec], JobSpec]  # the server's full check of one job spec (pools, capacity, prepare)


@dataclass
class PlannedTask:
    name: str
    spec: JobSpec  # checked; `${params.x}` filled in, `${task.result}` left for release time
    upstreams: list[str]
    run_if: RunIf


@dataclass
class Plan:
    pipeline: Pipeline
    params: dict[str, Any]  # the run's parameters: the file's defaults, then -p
    tasks: list[PlannedTask]  # upstreams first
    levels: list[list[str]]
    warnings: list[str] = field(default_factory=list)


def plan_pipeline(pipeline: Pipeline, params: Mapping[str, Any] | None = None, check: SpecCheck | None = None) -> Plan:
    """Check `pipeline` run with `params`; the job spec of every task, upstreams first."""
    graph = pipeline.graph()
    for task, missing in dag.unknown_upstreams(graph):
        known = ", ".join(graph)
        raise InvalidInput(f"Task {task!r} depends on unknown task {missing!r}; the tasks are: {known}.")
    cycle = dag.find_cycle(graph)
    if cycle:
        raise InvalidInput(f"The pipeline's dependencies form a cycle: {dag.describe_cycle(cycle)}.")
    references = {name: _references(name, task.params) for name, task in pipeline.tasks.items()}
    run_params = _run_params(pipeline, dict(params or {}), references)
    notebooks: dict[str, NotebookNode] = {}
    planned: dict[str, PlannedTask] = {}
    for name in dag.topological_order(graph):
        task = pipeline.tasks[name]
        _check_task_references(name, references[name], graph, run_params)
        filled = dag.resolve(task.params, lambda ref: _params_only(ref, run_params))
        try:
            nb = notebooks[name] = load_notebook(task.notebook)
            fields = task.spec_fields() | {
                "notebook": task.notebook,
                "name": f"{pipeline.name}/{name}",
                "parameters": filled,
                "depends_on": [{"job": up, "run_if": task.run_if.value} for up in task.depends_on],
            }
            spec = build_spec(
                [
                    (f"metadata.nbjobs of {task.notebook!r}", notebook_metadata_layer(nb.metadata, task.notebook)),
                    (f"task {name!r}", fields),
                ]
            )
            spec = check(spec) if check is not None else prepare(spec, nb).spec
        except InvalidInput as exc:
            raise InvalidInput(f"Task {name!r}: {exc}") from None
        planned[name] = PlannedTask(name, spec, list(task.depends_on), task.run_if)
    warnings = _check_recorded_results(pipeline, references, notebooks)
    return Plan(pipeline, run_params, list(planned.values()), dag.levels(graph), warnings)


def _references(task: str, params: Mapping[str, Any]) -> dict[str, list[dag.Reference]]:
    found = {}
    for param, value in params.items():
        try:
            found[param] = dag.find_references(value)
        except dag.BadReference as exc:
            raise InvalidInput(f"Task {task!r}, parameter {param!r}: {exc}.") from None
    return found


def _run_params(
    pipeline: Pipeline, given: dict[str, Any], references: Mapping[str, Mapping[str, list[dag.Reference]]]
) -> dict[str, Any]:
    used = {
        ref.name
        for refs in references.values()
        for param_refs in refs.values()
        for ref in param_refs
        if ref.source == dag.PARAMS_SOURCE
    }
    unknown = sorted(set(given) - set(pipeline.params) - used)
    if unknown:
        known = ", ".join(sorted(set(pipeline.params) | used)) or "none"
        raise InvalidInput(
            f"Run parameter(s) {', '.join(map(repr, unknown))} are neither declared in the pipeline's `params` "
            f"nor used as `${{params.NAME}}` by any task; known run parameters: {known}."
        )
    return {**pipeline.params, **given}


def _check_task_references(
    task: str, references: Mapping[str, list[dag.Reference]], graph: dag.Graph, run_params: Mapping[str, Any]
) -> None:
    upstream = dag.ancestors(graph, task)
    for param, refs in references.items():
        where = f"Task {task!r}, parameter {param!r}: `{{}}`"
        for ref in refs:
            if ref.source == dag.PARAMS_SOURCE:
                if ref.name not in run_params:
                    known = ", ".join(sorted(run_params)) or "none"
                    raise InvalidInput(
                        where.format(ref.text) + f" names no run parameter (run parameters: {known}); "
                        f"declare it under `params` or pass `-p {ref.name} VALUE`."
                    )
                try:
                    dag.follow_path(run_params[ref.name], ref)
                except KeyError as exc:
                    raise InvalidInput(where.format(ref.text) + f": {exc.args[0]}.") from None
            elif ref.source not in graph:
                raise InvalidInput(where.format(ref.text) + f" names no task {ref.source!r}.")
            elif ref.source not in upstream:
                ups = ", ".join(sorted(upstream)) or "none"
                raise InvalidInput(
                    where.format(ref.text) + f" uses a result of {ref.source!r}, which is not upstream of "
                    f"{task!r} (its upstreams: {ups}); add {ref.source!r} to `depends_on`."
                )


def _params_only(ref: dag.Reference, run_params: Mapping[str, Any]) -> Any:
    """Fill in run parameters now; leave task results in place for the release."""
    if ref.source == dag.PARAMS_SOURCE:
        return dag.follow_path(run_params[ref.name], ref)
    return ref.text


# ---------------------------------------------------------------- recorded results

_RECORD_CALL = re.compile(r"\brecord\s*\(")
_LITERAL_RECORD = re.compile(r"""\brecord\s*\(\s*(?:name\s*=\s*)?(?P<q>['"])(?P<name>[^'"\\]+)(?P=q)""")


@dataclass(frozen=True)
class RecordScan:
    names: frozenset[str]  # result names recorded with a literal name
    certain: bool  # every record call has a literal name (nothing recorded another way)


def scan_recorded_results(nb: NotebookNode) -> RecordScan:
    """Result names a notebook records, as far as its source shows."""
    names: set[str] = set()
    calls = literal = 0
    dynamic = False
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        source = cell.source
        calls += len(_RECORD_CALL.findall(source))
        found = [m.group("name") for m in _LITERAL_RECORD.finditer(source)]
        literal += len(found)
        names.update(found)
        dynamic = dynamic or RESULT_MIME_TYPE in source
    return RecordScan(frozenset(names), certain=calls > 0 and calls == literal and not dynamic)


def _check_recorded_results(
    pipeline: Pipeline,
    references: Mapping[str, Mapping[str, list[dag.Reference]]],
    notebooks: Mapping[str, NotebookNode],
) -> list[str]:
    warnings = []
    scans = {name: scan_recorded_results(nb) for name, nb in notebooks.items()}
    for task, refs in references.items():
        for param, param_refs in refs.items():
            for ref in param_refs:
                if ref.source == dag.PARAMS_SOURCE:
                    continue
                scan = scans[ref.source]
                if ref.name in scan.names:
                    continue
                notebook = Path(pipeline.tasks[ref.source].notebook).name
                if scan.certain:
                    raise InvalidInput(
                        f"Task {task!r}, parameter {param!r}: `{ref.text}` names a result {ref.source!r} never "
                        f"records: {notebook} records only {', '.join(sorted(scan.names))} "
                        f"(with nbjobs.record(NAME, value))."
                    )
                warnings.append(
                    f"task {task!r}, parameter {param!r}: cannot tell from {notebook} whether it records "
                    f"{ref.name!r}; if it does not, {task!r} fails when it is released"
                )
    return warnings
