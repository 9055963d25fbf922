"""Where a job spec comes from: notebook metadata < job file < flags.

Each source is a plain dict ("layer"). Layers are validated one by one first, so
an error names the source that holds the bad field, then deep-merged and
validated as a whole.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from nbjobs.errors import InvalidInput
from nbjobs.spec import JobSpec
from nbjobs.vcs.git import is_url

Layer = tuple[str, Mapping[str, Any]]  # (source description, fields)

SPEC_FILE_SUFFIXES = (".yaml", ".yml", ".toml", ".json")


def describe_validation_error(
    exc: ValidationError, source: str, what: str = "job spec", fields: Iterable[str] = JobSpec.model_fields
) -> str:
    """One paragraph naming each bad field and what would be valid."""
    problems = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            problem = "is not a known field"
        elif err["type"] == "missing":
            problem = "is required"
        else:
            problem = err["msg"].removeprefix("Value error, ")
            if "input" in err and err["type"] not in ("value_error",):
                problem += f" (got {err['input']!r})"
        problems.append(f"`{field}` {problem}")
    valid = ", ".join(fields)
    hint = f" Known top-level fields: {valid}." if any(e["type"] == "extra_forbidden" for e in exc.errors()) else ""
    return f"Invalid {what} in {source}: " + "; ".join(problems) + "." + hint


def read_structured_file(path: str | Path, what: str) -> Any:
    """The data of a YAML, TOML or JSON file (by its suffix); InvalidInput names the file and line."""
    file = Path(path)
    if not file.is_file():
        raise InvalidInput(f"{what} {str(file)!r} does not exist.")
    suffix = file.suffix.lower()
    if suffix not in SPEC_FILE_SUFFIXES:
        raise InvalidInput(f"{what} {str(file)!r} has an unknown type; use one of {', '.join(SPEC_FILE_SUFFIXES)}.")
    text = file.read_text(encoding="utf-8")
    try:
        if suffix == ".toml":
            return tomllib.loads(text)
        if suffix == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{what} {str(file)!r} is not valid TOML: {exc}.") from None
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{what} {str(file)!r} is not valid JSON: {exc}.") from None
    except yaml.YAMLError as exc:
        where = ""
        if (mark := getattr(exc, "problem_mark", None)) is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise InvalidInput(f"{what} {str(file)!r} is not valid YAML{where}: {problem}.") from None


def load_spec_file(path: str | Path) -> dict[str, Any]:
    """A YAML, TOML or JSON job file as a layer; relative paths resolved against its folder."""
    file = Path(path)
    data = read_structured_file(file, "Job file")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidInput(
            f"Job file {str(file)!r} must hold a mapping of spec fields (notebook, parameters, ...), "
            f"not a {type(data).__name__}."
        )
    # Relative paths are relative to the file, except a notebook in `repo`: relative to the repository root.
    keys = ["cwd", "notebook"] if data.get("repo") is None else ["cwd"]
    if isinstance(data.get("repo"), str) and not is_url(data["repo"]):
        keys.append("repo")
    for key in keys:
        value = data.get(key)
        if isinstance(value, str) and not Path(value).expanduser().is_absolute():
            data[key] = str(file.parent / value)
    return data


def notebook_metadata_layer(metadata: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The `metadata.nbjobs` mapping of a notebook, checked to be a mapping."""
    layer = metadata.get("nbjobs", {})
    if not isinstance(layer, dict):
        raise InvalidInput(f"{source}: `metadata.nbjobs` must be a mapping of spec fields.")
    if misplaced := sorted(set(layer) & {"git_ref", "repo"}):
        raise InvalidInput(
            f"{source}: `metadata.nbjobs` sets {', '.join(misplaced)}, which say where the notebook is read "
            "from, so the notebook cannot set them itself; use --git-ref/--repo or a job file."
        )
    # A notebook does not name itself; run records go under `metadata.nbjobs_run`, not here.
    return {k: v for k, v in layer.items() if k != "notebook"}


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` wins; nested mappings merge key by key; lists are replaced whole."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def build_spec(layers: Iterable[Layer]) -> JobSpec:
    """Merge layers (lowest precedence first) into one validated JobSpec."""
    merged: dict[str, Any] = {}
    sources = []
    for source, layer in layers:
        try:
            JobSpec.model_validate({"notebook": "-", **layer})
        except ValidationError as exc:
            raise InvalidInput(describe_validation_error(exc, source)) from None
        merged = deep_merge(merged, layer)
        sources.append(source)
    try:
        return JobSpec.model_validate(merged)
    except ValidationError as exc:
        raise InvalidInput(describe_validation_error(exc, " + ".join(sources) or "spec")) from None
