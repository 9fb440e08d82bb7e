"""Load a NASExperiment from YAML and turn every validation problem into one readable line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from kubenas.api.experiment import NASExperiment
from kubenas.api.vocabulary import CHAIN_FAMILY, CUSTOM_FAMILY, NB201_FAMILY

# Discriminated unions put the tag into the error path (spec.strategy.evolution.sampleSize);
# users never wrote that segment, so it is dropped.
_UNION_TAGS = frozenset(
    {
        NB201_FAMILY,
        CHAIN_FAMILY,
        CUSTOM_FAMILY,
        "random",
        "grid",
        "evolution",
        "tpe",
        "local-search",
        "bananas",
        "reinforce",
        "categorical",
        "int",
        "float",
    }
)


class ExperimentError(Exception):
    """An experiment that cannot be accepted; ``problems`` holds one ``path: message`` per issue."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: invalid experiment\n" + "\n".join(f"  {p}" for p in problems))


def _is_internal(part: str, is_last: bool) -> bool:
    """Path segments pydantic adds that a user never wrote: union tags, validator names."""
    return (part in _UNION_TAGS and not is_last) or part.startswith(("function-", "literal["))


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _is_internal(part, i + 1 == len(loc)):
            out += f".{part}" if out else part
    return out


def _message(error: ErrorDetails) -> tuple[str, str]:
    """Return (extra path, message) worded for a person writing YAML."""
    kind, ctx = error["type"], error.get("ctx", {})
    if kind == "kubenas_field":
        return str(ctx["field"]), str(ctx["message"])
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        field = str(ctx.get("discriminator", "")).strip("'\"")
        if kind == "union_tag_not_found":
            return field, "is required"
        return field, f"must be one of {ctx.get('expected_tags')}"
    messages = {
        "missing": "is required",
        "extra_forbidden": "is not a known field",
        "greater_than_equal": f"must be >= {ctx.get('ge')}",
        "greater_than": f"must be > {ctx.get('gt')}",
        "less_than_equal": f"must be <= {ctx.get('le')}",
        "less_than": f"must be < {ctx.get('lt')}",
        "too_short": f"must have at least {ctx.get('min_length')} item(s)",
        "string_too_short": "must not be empty",
        "string_too_long": f"must be at most {ctx.get('max_length')} characters",
        "string_pattern_mismatch": f"must match {ctx.get('pattern')}",
        "literal_error": f"must be one of {ctx.get('expected')}",
        "union_tag_invalid": f"must be one of {ctx.get('expected_tags')}",
        "union_tag_not_found": f"needs the field {ctx.get('discriminator')}",
        "int_parsing": "must be an integer",
        "int_from_float": "must be an integer",
        "float_parsing": "must be a number",
        "bool_parsing": "must be true or false",
        "string_type": "must be a string",
        "list_type": "must be a list",
        "dict_type": "must be a mapping",
        "model_type": "must be a mapping",
        "model_attributes_type": "must be a mapping",
    }
    return "", messages.get(kind, error["msg"])


def format_validation_error(exc: ValidationError) -> list[str]:
    problems: list[str] = []
    for error in exc.errors():
        extra, message = _message(error)
        loc = error["loc"]
        if extra:
            head, _, tail = extra.partition("[")
            loc = (*loc, head)
            path = _path(loc) + (f"[{tail}" if tail else "")
        else:
            path = _path(loc)
        line = f"{path or '(document)'}: {message}"
        if line not in problems:
            problems.append(line)
    return problems


def parse_experiment(document: Any, source: str = "<experiment>") -> NASExperiment:
    """Validate a decoded YAML/JSON document, raising ExperimentError with readable problems."""
    if not isinstance(document, dict):
        raise ExperimentError(source, ["(document): must be a mapping with apiVersion, kind, spec"])
    try:
        return NASExperiment.model_validate(document)
    except ValidationError as exc:
        raise ExperimentError(source, format_validation_error(exc)) from None


def load_experiment(path: str | Path) -> NASExperiment:
    """Read one NASExperiment from a YAML file."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ExperimentError(source, [f"(file): cannot read: {exc.strerror}"]) from None
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        raise ExperimentError(source, [f"(yaml): not valid YAML at {where}"]) from None
    if len(documents) != 1:
        raise ExperimentError(
            source, [f"(file): must hold exactly one document, found {len(documents)}"]
        )
    return parse_experiment(documents[0], source)
