"""The pipeline file: a pydantic model (with its JSON Schema) and its loading from YAML or TOML.

```yaml
name: daily-report
params: {day: "2026-11-25"}          # run parameters, `${params.day}` in tasks; -p overrides
tasks:
  extract: {notebook: extract.ipynb, params: {day: "${params.day}"}}
  train:
    notebook: train.ipynb
    depends_on: [extract]
    params: {rows: "${extract.rows}"}  # a result recorded by extract, with its JSON type
  report: {notebook: report.ipynb, depends_on: [train], run_if: all_done}
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, model_validator

from nbjobs.errors import InvalidInput
from nbjobs.spec import Identifier, Outputs, Resources, RetryPolicy, RunIf, Seconds
from nbjobs.spec_sources import describe_validation_error, read_structured_file

# Task names appear in references (`${extract.rows}`): no dots; "params" names the run's parameters.
TaskName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$", max_length=100)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Task(_Model):
    """One notebook of a pipeline; it becomes one job of each run."""

    notebook: str = Field(min_length=1, description="Notebook path, relative to the pipeline file")
    params: dict[str, Any] = Field(
        default_factory=dict,
        validation_alias=AliasChoices("params", "parameters"),
        description="Parameters; `${task.result}` and `${params.name}` are replaced when the task starts",
    )
    depends_on: list[TaskName] = Field(default_factory=list, description="Tasks that must end before this one")
    run_if: RunIf = Field(RunIf.ALL_SUCCEEDED, description="Condition on the upstream tasks' end states")
    resources: Resources = Field(default_factory=Resources)
    retries: int | None = Field(None, ge=0, le=99, description="Extra tries after a retryable failure")
    retry: RetryPolicy | None = Field(None, description="Full retry policy (instead of `retries`)")
    timeout: Seconds | None = Field(None, description="Whole-task limit, seconds")
    cell_timeout: Seconds | None = None
    kernel: str | None = None
    cwd: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    priority: int | None = Field(None, ge=-1000, le=1000)
    pool: Identifier | None = None
    outputs: Outputs | None = None
    allow_errors: bool | None = None
    allow_unknown_params: bool | None = None

    @model_validator(mode="after")
    def _one_retry_form(self) -> Task:
        if self.retries is not None and self.retry is not None:
            raise ValueError("give either `retries` (a count) or `retry` (a policy), not both")
        if len(set(self.depends_on)) != len(self.depends_on):
            raise ValueError("`depends_on` lists a task twice")
        return self

    def spec_fields(self) -> dict[str, Any]:
        """The job spec fields this task sets (a layer over the notebook's own metadata)."""
        # Defaults are left out so the notebook's own metadata still applies to what the task leaves alone.
        fields = self.model_dump(
            mode="json",
            exclude_defaults=True,
            exclude={"params", "depends_on", "run_if", "retries", "notebook"},
        )
        if self.params:
            fields["parameters"] = self.params
        if self.retries is not None:
            fields["retry"] = {"attempts": self.retries + 1}
        return fields


class Pipeline(_Model):
    """Notebooks as tasks with dependencies; `nbjobs pipeline run` makes one run of it."""

    name: str = Field(min_length=1, max_length=150, description="Shown in run lists; jobs are named NAME/TASK")
    params: dict[Identifier, Any] = Field(
        default_factory=dict,
        validation_alias=AliasChoices("params", "parameters"),
        description="Run parameters with their defaults, `${params.NAME}` in tasks; -p NAME VALUE overrides",
    )
    tasks: dict[TaskName, Task] = Field(min_length=1, description="Task name -> task, in running order")

    @model_validator(mode="after")
    def _reserved_names(self) -> Pipeline:
        if "params" in self.tasks:
            raise ValueError("`params` is reserved for the run's parameters; rename that task")
        return self

    def to_json(self) -> dict[str, Any]:
        """The definition as stored with a run and sent to the server (parses back to an equal model)."""
        return self.model_dump(mode="json", exclude_defaults=True)

    def graph(self) -> dict[str, list[str]]:
        return {name: list(task.depends_on) for name, task in self.tasks.items()}


def pipeline_schema() -> dict[str, Any]:
    """JSON Schema of a pipeline file (what `nbjobs schema pipeline` prints)."""
    return Pipeline.model_json_schema(by_alias=False)


def parse_pipeline(data: Any, source: str) -> Pipeline:
    if not isinstance(data, dict):
        raise InvalidInput(f"{source} must hold a mapping with `name` and `tasks`, not a {type(data).__name__}.")
    try:
        return Pipeline.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(describe_validation_error(exc, source, "pipeline", Pipeline.model_fields)) from None


def load_pipeline_file(path: str | Path) -> Pipeline:
    """A pipeline file with its notebook (and cwd) paths made absolute against its folder."""
    file = Path(path)
    data = read_structured_file(file, "Pipeline file")
    if isinstance(data, dict) and "name" not in data:
        data["name"] = file.stem
    pipeline = parse_pipeline(data, f"pipeline file {str(file)!r}")
    return absolute_paths(pipeline, file.resolve().parent)


def absolute_paths(pipeline: Pipeline, base: Path) -> Pipeline:
    tasks = {}
    for name, task in pipeline.tasks.items():
        update: dict[str, Any] = {"notebook": str((base / Path(task.notebook).expanduser()).resolve())}
        if task.cwd is not None:
            update["cwd"] = str((base / Path(task.cwd).expanduser()).resolve())
        tasks[name] = task.model_copy(update=update)
    return pipeline.model_copy(update={"tasks": tasks})
