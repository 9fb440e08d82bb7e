"""The CRDs in crds/ and the pydantic models in kubenas.api describe the same resources.

The CRD is what the API server enforces, the models are what the engine and ``kubenas run``
enforce; if they drift, an experiment that runs locally is refused in the cluster (or the other
way round). So this test walks each model's JSON schema alongside the CRD's structural schema and
asserts, at every level, the same property names, required fields, enums, bounds, patterns and
defaults. A change to either side without the other fails here.

Where a structural schema cannot say what the model says, the CRD says it another way and this
test checks that it does: a discriminated union is one object with every variant's fields, whose
variant-only fields carry no default and are guarded by a CEL rule (``has(self.<field>)``) or a
schema junctor; an enum or pattern that differs between variants lives in the parent's CEL rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from kubenas.api import experiment, space, trial
from kubenas.api.builtin_trainer import BUILTIN_TRAINER_MODULE, DATASET_PATTERN
from kubenas.api.experiment import ExperimentSpec, NASExperiment
from kubenas.api.trial import TrialSpec, TrialStatus
from kubenas.api.vocabulary import CHAIN_OPERATION_PATTERN, NB201_OPERATIONS

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"
Schema = dict[str, Any]

# Keywords that must agree when the model sets them. The CRD may add maxItems/maxLength of its
# own: they bound the cost of CEL rules, which the API server requires.
BOUNDS = ("minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems", "pattern")


def load_crd(plural: str) -> Schema:
    crd: Schema = yaml.safe_load((CRD_DIR / f"{plural}.kubenas.io.yaml").read_text())
    return crd


def version_of(crd: Schema) -> Schema:
    (version,) = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1"
    return version  # type: ignore[no-any-return]


def openapi_of(crd: Schema) -> Schema:
    return version_of(crd)["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def _model_classes() -> dict[str, type[BaseModel]]:
    """Model classes by name, as pydantic names them in ``$defs``."""
    found: dict[str, type[BaseModel]] = {}
    for module in (experiment, space, trial):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseModel):
                found[value.__name__] = value
    return found


MODELS = _model_classes()


class ModelSchema:
    """A model's JSON schema with ``$ref`` resolved and defaults from the model's fields.

    ``model_json_schema`` leaves out defaults made by a ``default_factory``; the fields have them.
    """

    def __init__(self, model: type[BaseModel]) -> None:
        self.root = model.model_json_schema(by_alias=True)
        self.defs: dict[str, Schema] = self.root.get("$defs", {})

    def resolve(self, node: Schema) -> Schema:
        """The node itself, with a reference followed and ``X | None`` read as ``X``."""
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            return {**self.defs[name], **{k: v for k, v in node.items() if k != "$ref"}}
        options = node.get("anyOf", [])
        if len(options) == 2 and {"type": "null"} in options:
            (inner,) = [o for o in options if o != {"type": "null"}]
            return self.resolve(inner)
        return node

    def defaults(self, node: Schema) -> dict[str, Any]:
        """Each property's default as it appears on the wire (None when it has none)."""
        model = MODELS.get(node.get("title", ""))
        if model is None:
            return {}
        by_alias = {f.alias or name: f for name, f in model.model_fields.items()}
        result: dict[str, Any] = {}
        for alias, info in by_alias.items():
            if info.is_required():
                continue
            value = info.get_default(call_default_factory=True)
            result[alias] = to_jsonable_python(value, by_alias=True, exclude_none=True)
        return result


def crd_default(node: Schema) -> Any:
    """A CRD default as the API server leaves it: the node's own, then nested defaults."""
    if "default" not in node:
        return None
    return _fill_defaults(node["default"], node)


def _fill_defaults(value: Any, node: Schema) -> Any:
    if isinstance(value, dict) and "properties" in node:
        filled = dict(value)
        for name, child in node["properties"].items():
            if name in filled:
                filled[name] = _fill_defaults(filled[name], child)
            elif "default" in child:
                filled[name] = _fill_defaults(child["default"], child)
        return filled
    if isinstance(value, list) and "items" in node:
        return [_fill_defaults(item, node["items"]) for item in value]
    return value


def rule_text(node: Schema) -> str:
    return "\n".join(rule["rule"] for rule in node.get("x-kubernetes-validations", []))


def junctor_required(node: Schema) -> set[str]:
    """Field names that the node's anyOf/oneOf/allOf/not junctors require or forbid."""
    names: set[str] = set(node.get("required", []))
    for key in ("anyOf", "oneOf", "allOf"):
        for option in node.get(key, []):
            names |= junctor_required(option)
    if "not" in node:
        names |= junctor_required(node["not"])
    return names


def is_mixed_scalar(node: Schema) -> bool:
    """``str | int | float | bool``: no single structural type exists for it."""
    options = node.get("anyOf", [])
    return len(options) > 1 and all(o.get("type") != "null" for o in options)


def compare(
    model: ModelSchema,
    node: Schema,
    crd: Schema,
    path: str,
    default: Any = None,
    variant_rules: str | None = None,
) -> Iterator[str]:
    """Every difference between a model node and a CRD node, as ``path: what`` lines.

    ``variant_rules`` is set for a field of some variants of a union: its enum or pattern may
    then live in the union's CEL rules, and the CRD must not default it.
    """
    node = model.resolve(node)
    if variant_rules is None:
        if crd_default(crd) != default:
            yield f"{path}: default {crd_default(crd)!r} in the CRD, {default!r} in the model"
    elif "default" in crd:
        yield f"{path}: a variant's field must not have a CRD default (it would fill every variant)"
    if "discriminator" in node:
        yield from compare_union(model, node, crd, path)
        return
    if is_mixed_scalar(node) or node.get("additionalProperties") is True:
        if not crd.get("x-kubernetes-preserve-unknown-fields"):
            yield f"{path}: free-form in the model, needs x-kubernetes-preserve-unknown-fields"
        return
    kind = node.get("type")
    if crd.get("type") != kind:
        yield f"{path}: type {crd.get('type')!r} in the CRD, {kind!r} in the model"
        return
    enum = node.get("enum", [node["const"]] if "const" in node else None)
    enum_in_rules = variant_rules is not None and all(f"'{v}'" in variant_rules for v in enum or [])
    if enum is not None and sorted(crd.get("enum", [])) != sorted(enum) and not enum_in_rules:
        yield f"{path}: enum {crd.get('enum')} in the CRD, {enum} in the model"
    for key in BOUNDS:
        if key in node and crd.get(key) != node[key]:
            if key == "pattern" and variant_rules and node[key][1:-1] in variant_rules:
                continue
            yield f"{path}: {key} {crd.get(key)!r} in the CRD, {node[key]!r} in the model"
    if kind == "array":
        yield from compare(
            model,
            node["items"],
            crd.get("items", {}),
            f"{path}[]",
            variant_rules=variant_rules and (variant_rules + rule_text(crd)),
        )
    elif kind == "object" and "properties" in node:
        yield from compare_object(model, node, crd, path)
    elif kind == "object":
        values = node.get("additionalProperties")
        if isinstance(values, dict) and not is_mixed_scalar(values):
            yield from compare(model, values, crd.get("additionalProperties", {}), f"{path}{{}}")
        elif not crd.get("x-kubernetes-preserve-unknown-fields"):
            yield f"{path}: free-form in the model, needs x-kubernetes-preserve-unknown-fields"


def compare_object(model: ModelSchema, node: Schema, crd: Schema, path: str) -> Iterator[str]:
    props, crd_props = node["properties"], crd.get("properties", {})
    if set(props) != set(crd_props):
        yield f"{path}: properties {sorted(crd_props)} in the CRD, {sorted(props)} in the model"
    if set(node.get("required", [])) != set(crd.get("required", [])):
        yield f"{path}: required {crd.get('required')} in the CRD, {node.get('required')}"
    if crd.get("x-kubernetes-preserve-unknown-fields"):
        yield f"{path}: the model refuses unknown fields, the CRD keeps them"
    defaults = model.defaults(node)
    for name in sorted(set(props) & set(crd_props)):
        yield from compare(
            model, props[name], crd_props[name], f"{path}.{name}", default=defaults.get(name)
        )


def compare_union(model: ModelSchema, node: Schema, crd: Schema, path: str) -> Iterator[str]:
    """A discriminated union against one CRD object that holds every variant's fields."""
    tag = node["discriminator"]["propertyName"]
    variants = [model.resolve(option) for option in node["oneOf"]]
    tags = [v["properties"][tag]["const"] for v in variants]
    crd_props = crd.get("properties", {})
    if sorted(crd_props.get(tag, {}).get("enum", [])) != sorted(tags):
        yield f"{path}.{tag}: enum {crd_props.get(tag, {}).get('enum')} in the CRD, {tags}"
    every = set.intersection(*(set(v["properties"]) for v in variants))
    union = set.union(*(set(v["properties"]) for v in variants))
    if set(crd_props) != union:
        yield f"{path}: properties {sorted(crd_props)} in the CRD, {sorted(union)} in the variants"
    always = set.intersection(*(set(v.get("required", [])) for v in variants))
    if set(crd.get("required", [])) != always:
        yield f"{path}: required {crd.get('required')}, every variant requires {sorted(always)}"
    rules = rule_text(crd)
    guarded = set(re.findall(r"has\(self\.(\w+)\)", rules)) | junctor_required(crd)
    for name in sorted((union - every) | {r for v in variants for r in v.get("required", [])}):
        if name not in guarded | always:
            yield f"{path}.{name}: no CEL rule or junctor ties it to its variants"
    for variant, value in zip(variants, tags, strict=True):
        defaults = model.defaults(variant)
        for name, prop in variant["properties"].items():
            if name == tag or name not in crd_props:
                continue
            yield from compare_variant_field(
                model,
                name,
                prop,
                crd_props[name],
                f"{path}.{name} ({tag} {value})",
                rules,
                defaults.get(name),
            )


def compare_variant_field(
    model: ModelSchema, name: str, prop: Schema, crd: Schema, path: str, rules: str, default: Any
) -> Iterator[str]:
    """A variant's field. When variants disagree on its type, the CRD node is either type-free
    and carries each variant's bounds (a JSON schema keyword applies only to values of its
    type), or a number that a CEL rule requires to be whole where the model wants an integer."""
    prop = model.resolve(prop)
    if (prop.get("type"), crd.get("type")) == ("integer", "number"):
        if f"int(self.{name})" not in rules:
            yield f"{path}: integer in the model, a number in the CRD without a CEL rule"
        prop = {**prop, "type": "number"}
    if "type" in crd or not crd.get("x-kubernetes-preserve-unknown-fields"):
        yield from compare(model, prop, crd, path, default=default, variant_rules=rules)
        return
    for key in BOUNDS:
        if key in prop and crd.get(key) != prop[key]:
            yield f"{path}: {key} {crd.get(key)!r} in the CRD, {prop[key]!r} in the model"
    if prop.get("type") == "array":
        yield from compare(model, prop["items"], crd.get("items", {}), f"{path}[]")


def differences(model: type[BaseModel], crd: Schema, path: str) -> list[str]:
    schema = ModelSchema(model)
    return list(compare(schema, schema.root, crd, path))


def test_experiment_spec_matches_model() -> None:
    spec = openapi_of(load_crd("nasexperiments"))["properties"]["spec"]
    schema = ModelSchema(ExperimentSpec)
    assert list(compare(schema, schema.root, spec, "spec")) == []


def test_experiment_root_fields_match_model() -> None:
    root = openapi_of(load_crd("nasexperiments"))
    assert set(root["properties"]) == set(
        NASExperiment.model_json_schema(by_alias=True)["properties"]
    )


def test_trial_spec_and_status_match_model() -> None:
    props = openapi_of(load_crd("nastrials"))["properties"]
    assert differences(TrialSpec, props["spec"], "spec") == []
    assert differences(TrialStatus, props["status"], "status") == []


def test_sync_check_notices_drift() -> None:
    """The comparison is not vacuous: a renamed field, a changed default and a lost enum value
    in the CRD each show up."""
    spec = openapi_of(load_crd("nasexperiments"))["properties"]["spec"]
    budget = spec["properties"]["budget"]["properties"]
    budget["maxTrial"] = budget.pop("maxTrials")
    budget["parallelTrials"]["default"] = 2
    spec["properties"]["strategy"]["properties"]["name"]["enum"].remove("tpe")
    found = "\n".join(differences(ExperimentSpec, spec, "spec"))
    assert "spec.budget: properties" in found
    assert "spec.budget.parallelTrials: default 2" in found
    assert "spec.strategy.name: enum" in found


@pytest.mark.parametrize(
    ("plural", "kind", "short", "columns"),
    [
        (
            "nasexperiments",
            "NASExperiment",
            "nasx",
            {
                "State": '.status.conditions[?(@.type=="Ready")].reason',
                "Done": ".status.trials.done",
                "Total": ".spec.budget.maxTrials",
                "Best": ".status.bestTrial.objective",
                "Front": ".status.pareto.size",
                "Age": ".metadata.creationTimestamp",
            },
        ),
        (
            "nastrials",
            "NASTrial",
            "nast",
            {
                "Experiment": ".spec.experiment",
                "State": ".status.state",
                "Role": ".spec.role",
                "Reason": ".status.reason",
                "Fidelity": ".status.fidelity",
                "Objective": ".status.metrics.val_accuracy",
                "Age": ".metadata.creationTimestamp",
            },
        ),
    ],
)
def test_names_columns_and_status_subresource(
    plural: str, kind: str, short: str, columns: dict[str, str]
) -> None:
    crd = load_crd(plural)
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == f"{plural}.kubenas.io"
    assert crd["spec"]["group"] == "kubenas.io"
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"]) == (kind, plural)
    assert names["shortNames"] == [short]
    assert names["categories"] == ["kubenas"]
    version = version_of(crd)
    assert version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    shown = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert shown == columns


def test_experiment_status_follows_kubernetes_conventions() -> None:
    status = openapi_of(load_crd("nasexperiments"))["properties"]["status"]["properties"]
    conditions = status["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert set(conditions["items"]["properties"]) == {
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
        "observedGeneration",
    }
    assert set(status) == {
        "observedGeneration",
        "conditions",
        "trials",
        "bestTrial",
        "paretoFront",
        "pareto",
        "screening",
        "supernet",
        "final",
        "startTime",
        "completionTime",
        "finishReason",
    }
    assert status["paretoFront"]["maxItems"] == 20


@pytest.mark.parametrize(
    "field",
    ["searchSpace", "objective", "strategy", "seed", "fidelity", "screening", "final", "baselines"],
)
def test_search_defining_fields_are_immutable(field: str) -> None:
    spec = openapi_of(load_crd("nasexperiments"))["properties"]["spec"]
    rules = spec["properties"][field].get("x-kubernetes-validations", [])
    assert {"rule": "self == oldSelf", "message": "cannot change while the experiment runs"} in [
        {k: r[k] for k in ("rule", "message")} for r in rules
    ]
    assert "x-kubernetes-validations" not in spec["properties"]["budget"]["properties"]["maxTrials"]


def _spec_schema() -> Schema:
    return openapi_of(load_crd("nasexperiments"))["properties"]["spec"]  # type: ignore[no-any-return]


def test_crd_operation_rules_hold_the_vocabularys_exact_names_and_pattern() -> None:
    """The CEL rules spell the operations out (a structural schema cannot vary by family);
    they must say exactly what kubenas.api.vocabulary says, not merely overlap with it."""
    rules = rule_text(_spec_schema()["properties"]["searchSpace"])
    (chain_pattern,) = re.findall(r"o\.matches\(\s*'([^']*)'\)", rules)
    assert chain_pattern == CHAIN_OPERATION_PATTERN
    (nb201_list,) = re.findall(r"o in\s*\[([^\]]*)\]", rules)
    assert tuple(re.findall(r"'([^']*)'", nb201_list)) == NB201_OPERATIONS


def test_crd_dataset_rule_is_the_builtin_trainers_pattern_for_its_command_only() -> None:
    rules = rule_text(_spec_schema()["properties"]["trial"])
    (guard, pattern) = re.fullmatch(
        r"!\('(\w+)' in self\.command\)\s*\|\| self\.dataset\.matches\('([^']*)'\)", rules
    ).groups()  # type: ignore[union-attr]
    assert guard == BUILTIN_TRAINER_MODULE
    assert pattern == DATASET_PATTERN


@pytest.mark.parametrize(
    ("dataset", "accepted"),
    [
        ("digits", True),
        ("mnist1d", True),
        ("npz:data/x.npz", True),
        ("idx:/data/mnist", True),
        ("synthetic:3x32x32:10", True),
        ("synthetic:2x50:4:500", True),
        ("cifar10", False),
        ("digits:8", False),
        ("npz:", False),
        ("synthetic:3x32x32", False),
        ("synthetic:0x8:2", False),
        ("synthetic:1x2x3x4:2", False),
    ],
)
def test_dataset_pattern_accepts_exactly_the_documented_forms(dataset: str, accepted: bool) -> None:
    """RE2 (the API server's CEL) and Python agree on this pattern: it uses no construct they
    read differently (no look-around, back-references or lazy quantifiers)."""
    assert (re.fullmatch(DATASET_PATTERN, dataset) is not None) is accepted
