"""``NASExperiment.status`` in the CRD and :class:`kubenas.api.status.ExperimentStatus` describe
the same object: the API server prunes what the CRD does not declare, so a field the operator
writes but the CRD lacks would vanish silently. This walks both schemas together and asserts,
at every level, the same properties, required fields, types, enums, bounds and defaults."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from kubenas.api import status as status_models
from kubenas.api.status import PARETO_LIMIT, ExperimentStatus

REPO = Path(__file__).resolve().parents[2]
Schema = dict[str, Any]
BOUNDS = ("minimum", "maximum", "minItems", "maxItems", "minLength", "maxLength", "pattern")
MODELS: dict[str, type[BaseModel]] = {
    v.__name__: v
    for v in vars(status_models).values()
    if isinstance(v, type) and issubclass(v, BaseModel)
}


def crd_status(folder: Path = REPO / "crds") -> Schema:
    crd = yaml.safe_load((folder / "nasexperiments.kubenas.io.yaml").read_text())
    (version,) = crd["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]["properties"]["status"]  # type: ignore[no-any-return]


class Walker:
    def __init__(self, model: type[BaseModel]) -> None:
        self.root = model.model_json_schema(by_alias=True)
        self.defs: dict[str, Schema] = self.root.get("$defs", {})

    def resolve(self, node: Schema) -> Schema:
        if "$ref" in node:
            return self.resolve(self.defs[node["$ref"].rsplit("/", 1)[-1]])
        options = node.get("anyOf", [])
        if len(options) == 2 and {"type": "null"} in options:
            (inner,) = [o for o in options if o != {"type": "null"}]
            return {**self.resolve(inner), **{k: v for k, v in node.items() if k != "anyOf"}}
        return node

    @staticmethod
    def defaults(node: Schema) -> dict[str, Any]:
        model = MODELS.get(node.get("title", ""))
        if model is None:
            return {}
        return {
            info.alias or name: to_jsonable_python(info.get_default(call_default_factory=True))
            for name, info in model.model_fields.items()
            if not info.is_required()
        }

    def compare(self, node: Schema, crd: Schema, path: str, default: Any = None) -> Iterator[str]:
        node = self.resolve(node)
        if crd.get("default") != default:
            yield f"{path}: default {crd.get('default')!r} in the CRD, {default!r} in the model"
        if node.get("additionalProperties") is True:
            if not crd.get("x-kubernetes-preserve-unknown-fields"):
                yield f"{path}: free-form in the model, needs x-kubernetes-preserve-unknown-fields"
            return
        kind = node.get("type")
        if crd.get("type") != kind:
            yield f"{path}: type {crd.get('type')!r} in the CRD, {kind!r} in the model"
            return
        if sorted(node.get("enum", [])) != sorted(crd.get("enum", [])):
            yield f"{path}: enum {crd.get('enum')} in the CRD, {node.get('enum')} in the model"
        for key in BOUNDS:
            if node.get(key) != crd.get(key):
                yield f"{path}: {key} {crd.get(key)!r} in the CRD, {node.get(key)!r} in the model"
        if kind == "array":
            yield from self.compare(node["items"], crd.get("items", {}), f"{path}[]")
        elif kind == "object" and "properties" in node:
            props, crd_props = node["properties"], crd.get("properties", {})
            if set(props) != set(crd_props):
                yield f"{path}: properties {sorted(crd_props)} in the CRD, {sorted(props)}"
            if set(node.get("required", [])) != set(crd.get("required", [])):
                yield f"{path}: required {crd.get('required')} in the CRD, {node.get('required')}"
            defaults = self.defaults(node)
            for name in sorted(set(props) & set(crd_props)):
                yield from self.compare(
                    props[name], crd_props[name], f"{path}.{name}", defaults.get(name)
                )
        elif kind == "object":
            values = node.get("additionalProperties", {})
            yield from self.compare(values, crd.get("additionalProperties", {}), f"{path}{{}}")


def differences(crd: Schema) -> list[str]:
    walker = Walker(ExperimentStatus)
    return list(walker.compare(walker.root, crd, "status"))


def test_experiment_status_matches_its_model() -> None:
    assert differences(crd_status()) == []


def test_the_charts_crd_has_the_same_status() -> None:
    assert crd_status(REPO / "charts" / "kubenas" / "files" / "crds") == crd_status()


def test_the_pareto_front_is_bounded_as_the_engine_bounds_it() -> None:
    assert crd_status()["properties"]["paretoFront"]["maxItems"] == PARETO_LIMIT


def test_the_walk_notices_drift() -> None:
    """Not vacuous: a lost queue field, a changed default and a lost enum value show up."""
    crd = crd_status()
    trials = crd["properties"]["trials"]["properties"]
    del trials["queueSeconds"]
    trials["meanQueueSeconds"]["default"] = 1
    crd["properties"]["conditions"]["items"]["properties"]["status"]["enum"].remove("Unknown")
    found = "\n".join(differences(crd))
    assert "status.trials: properties" in found
    assert "status.trials.meanQueueSeconds: default 1" in found
    assert "status.conditions[].status: enum" in found
