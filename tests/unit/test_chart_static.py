"""Chart files that must stay in step with the rest of the repository, checked without helm:
the CRD copies the chart ships, and dashboards that work with any Prometheus data source."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kubenas"
DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))
OPERATOR_METRICS = (REPO / "operator/kubenas/k8s/operator_metrics.py").read_text()
TRAINER_PUSH = (REPO / "trainer/kubenas_trainer/pushgateway.py").read_text()


def test_chart_ships_the_crds_byte_for_byte() -> None:
    """crds/ is the one source of truth; Helm cannot read outside the chart, so it keeps a copy."""
    source = {p.name: p.read_bytes() for p in (REPO / "crds").glob("*.yaml")}
    shipped = {p.name: p.read_bytes() for p in (CHART / "files" / "crds").glob("*.yaml")}
    assert source and shipped == source, "copy crds/*.yaml to charts/kubenas/files/crds/"


def test_crd_metadata_is_where_the_template_injects_labels() -> None:
    for path in (CHART / "files" / "crds").glob("*.yaml"):
        text = path.read_text()
        assert (
            text.count("\nmetadata:\n") == 1
            and "\n  annotations:" not in text.split("\nspec:", 1)[0]
        ), f"{path.name}: templates/crds.yaml replaces the top-level 'metadata:' line"


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.name for p in DASHBOARDS])
def test_dashboard_uses_a_datasource_variable(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    variables = dashboard["templating"]["list"]
    assert {"name": "datasource", "type": "datasource", "query": "prometheus"}.items() <= (
        variables[0].items()
    )
    for node in _walk(dashboard):
        datasource = node.get("datasource")
        if datasource is not None:
            assert datasource == {"type": "prometheus", "uid": "${datasource}"}, datasource
    assert dashboard["uid"].startswith("kubenas-") and dashboard["panels"]


def test_dashboards_cover_what_operators_ask() -> None:
    exprs = " ".join(
        node["expr"]
        for path in DASHBOARDS
        for node in _walk(json.loads(path.read_text()))
        if "expr" in node
    )
    for metric in (
        "kubenas_experiments",
        "kubenas_trials",
        "kubenas_best_objective",
        "kubenas_trial_metric",
        "kubenas_trial_gpu_seconds_total",
        "kubenas_trial_duration_seconds_bucket",
        "kubenas_reconcile_duration_seconds_bucket",
        "kubenas_reconcile_errors_total",
    ):
        assert metric in exprs, f"no panel shows {metric}"


def test_dashboard_metrics_exist() -> None:
    """Every metric a dashboard queries is one the operator exports or the trainer pushes."""
    known = set(re.findall(r'"(kubenas_\w+)"', OPERATOR_METRICS + TRAINER_PUSH))
    used: set[str] = set()
    for path in DASHBOARDS:
        for node in _walk(json.loads(path.read_text())):
            for key in ("expr", "definition"):
                if isinstance(node.get(key), str):
                    used |= set(re.findall(r"\b(kubenas_\w+)", node[key]))
    stripped = {re.sub(r"_(bucket|count|sum)$", "", m) for m in used}
    assert stripped <= known, f"unknown metrics: {sorted(stripped - known)}"


def test_operate_doc_shows_the_health_check_as_shipped() -> None:
    doc = (REPO / "docs" / "operate.md").read_text()
    block = doc.split("resource.customizations.health.kubenas.io_NASExperiment: |\n", 1)[1]
    shown = block.split("```", 1)[0]
    lua = (CHART / "argocd" / "health.lua").read_text()
    assert shown.replace("\n    ", "\n").strip() == lua.strip()
