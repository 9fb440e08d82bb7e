"""What the final stage found, per network: the metrics of its seeds as mean ± std, and the
searched networks set against the hand-designed baselines trained the same way.

One function feeds both the local summary and the experiment's status, so they never disagree.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import PurePath
from typing import Any

from kubenas.api.builtin_trainer import EXPORT_DIR
from kubenas.api.experiment import ExperimentSpec
from kubenas.api.records import TrialRecord, TrialRole, TrialState
from kubenas.api.vocabulary import TIMED_COST_METRICS

# What the comparison lists besides the objective on the test split, when trials report it.
COMPARED_COSTS = ("params", "flops", *TIMED_COST_METRICS)


def held_out_metric(objective_metric: str) -> str:
    """The held-out figure of an objective: ``val_accuracy`` is judged by ``test_accuracy``."""
    if objective_metric.startswith("val_"):
        return "test_" + objective_metric.removeprefix("val_")
    return objective_metric


def _spread(values: Sequence[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def final_results(spec: ExperimentSpec, records: Sequence[TrialRecord]) -> dict[str, Any] | None:
    """Per retrained candidate and per baseline: seeds trained and failed, each metric over its
    seeds, and a retrained one's export folder (its first seed's); then the best searched
    network against every baseline. None without a final stage."""
    if spec.final is None:
        return None
    judged = held_out_metric(spec.objective.metric)
    maximize = spec.objective.direction == "maximize"
    groups: dict[tuple[str, str], list[TrialRecord]] = {}
    for r in sorted(records, key=lambda r: r.index):
        if r.role is TrialRole.FINAL and r.source is not None:
            groups.setdefault(("nas", r.source), []).append(r)
        elif r.role is TrialRole.BASELINE and r.baseline is not None:
            groups.setdefault(("baseline", r.baseline), []).append(r)
    networks: list[dict[str, Any]] = []
    for (kind, name), trials in groups.items():
        trained = [r for r in trials if r.state is TrialState.SUCCEEDED]
        names = sorted({k for r in trained for k in r.metrics})
        metrics = {
            k: _spread([r.metrics[k] for r in trained if k in r.metrics])
            for k in names
            if k == judged or k == spec.objective.metric or k in COMPARED_COSTS
        }
        exports = [
            str(PurePath(r.checkpoint).parent / EXPORT_DIR)
            for r in trained
            if r.checkpoint and kind == "nas"
        ]
        networks.append(
            {
                "name": name,
                "kind": kind,
                "trials": [r.name for r in trials],
                "seeds": len(trained),
                "failed": sum(r.state is TrialState.FAILED for r in trials),
                "running": sum(r.state.active for r in trials),
                "metrics": metrics,
                "export": exports[0] if exports else None,
            }
        )

    def score(network: dict[str, Any]) -> float | None:
        figure = network["metrics"].get(judged)
        return None if figure is None else float(figure["mean"])

    scored = [(s, n) for n in networks if n["kind"] == "nas" and (s := score(n)) is not None]
    best = max(scored, key=lambda pair: pair[0] if maximize else -pair[0], default=(0.0, None))[1]
    comparison = []
    for baseline in (n for n in networks if n["kind"] == "baseline"):
        theirs = score(baseline)
        if best is None or theirs is None:
            continue
        ours = score(best)
        assert ours is not None
        better = ours > theirs if maximize else ours < theirs
        comparison.append(
            {
                "nas": best["name"],
                "baseline": baseline["name"],
                "metric": judged,
                "nas_mean": ours,
                "baseline_mean": theirs,
                "difference": ours - theirs,
                "nas_better": better,
                "costs": {
                    k: {
                        "nas": best["metrics"][k]["mean"],
                        "baseline": baseline["metrics"][k]["mean"],
                    }
                    for k in COMPARED_COSTS
                    if k in best["metrics"] and k in baseline["metrics"]
                },
            }
        )
    return {
        "metric": judged,
        "trainOn": spec.final.train_on,
        "seeds": spec.final.seeds,
        "best": best["name"] if best is not None else None,
        "networks": networks,
        "comparison": comparison,
    }


def best_network(results: Mapping[str, Any]) -> dict[str, Any] | None:
    """The best retrained network's entry of :func:`final_results`, if any trained."""
    return next((n for n in results["networks"] if n["name"] == results["best"]), None)
