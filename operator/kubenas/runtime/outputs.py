"""The results folder of a local run: summary JSON, tables, best architecture, a plot."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

from kubenas.api.experiment import NASExperiment
from kubenas.api.records import TrialRecord, TrialState
from kubenas.engine import Decisions, planner

REPORTED_METRICS = ("val_accuracy", "test_accuracy", "params", "flops")


def _metrics(record: TrialRecord, objective: str) -> dict[str, float]:
    wanted = (objective, *REPORTED_METRICS)
    return {k: record.metrics[k] for k in wanted if k in record.metrics}


def write_outputs(
    out: Path, experiment: NASExperiment, records: list[TrialRecord], decisions: Decisions
) -> dict[str, Any]:
    spec = experiment.spec
    space = planner(spec).space
    metric = spec.objective.metric
    records = sorted(records, key=lambda r: r.index)
    best = decisions.best
    summary: dict[str, Any] = {
        "experiment": experiment.name,
        "finished": decisions.finished,
        "succeeded": decisions.succeeded,
        "reason": str(decisions.reason) if decisions.reason else None,
        "message": decisions.message,
        "trials": {
            "total": len(records),
            "succeeded": sum(r.state == TrialState.SUCCEEDED for r in records),
            "failed": sum(r.state == TrialState.FAILED for r in records),
            "stopped": sum(r.state == TrialState.STOPPED for r in records),
        },
        "best": None,
    }
    if best is not None:
        architecture = space.to_architecture(space.active(best.params))
        summary["best"] = {
            "trial": best.name,
            "architecture": architecture,
            "hash": space.arch_hash(best.params),
            "fidelity": best.fidelity,
            "metrics": _metrics(best, metric),
        }
        (out / "best.json").write_text(json.dumps(summary["best"], indent=2), encoding="utf-8")
        if best.checkpoint and Path(best.checkpoint).exists():
            shutil.copyfile(best.checkpoint, out / "best-checkpoint.pt")
    if decisions.pareto:
        summary["pareto"] = [{"trial": r.name, "metrics": r.metrics} for r in decisions.pareto]
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    _write_tables(out, records, metric, space.arch_hash)
    _plot(out / "progress.png", records, metric, spec.objective.direction == "maximize")
    return summary


def _write_tables(out: Path, records: list[TrialRecord], metric: str, arch_hash: Any) -> None:
    columns = [
        "trial",
        "state",
        "fidelity",
        metric,
        "test_accuracy",
        "params",
        "seconds",
        "architecture",
        "reason",
    ]
    rows = []
    for r in records:
        seconds = (r.finished_at - r.started_at) if r.finished_at and r.started_at else None
        rows.append(
            {
                "trial": r.name,
                "state": r.state.value,
                "fidelity": r.fidelity if r.fidelity is not None else "",
                metric: f"{r.metrics[metric]:.4f}" if metric in r.metrics else "",
                "test_accuracy": f"{r.metrics['test_accuracy']:.4f}"
                if "test_accuracy" in r.metrics
                else "",
                "params": int(r.metrics["params"]) if "params" in r.metrics else "",
                "seconds": f"{seconds:.1f}" if seconds is not None else "",
                "architecture": arch_hash(r.params),
                "reason": r.reason or "",
            }
        )
    with (out / "summary.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
    (out / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _plot(path: Path, records: list[TrialRecord], metric: str, maximize: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(r.index, r.metrics[metric]) for r in records if metric in r.metrics]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if points:
        xs, ys = zip(*points, strict=True)
        ax.scatter(xs, ys, s=14, label=f"trial {metric}")
        best_so_far, incumbent = [], None
        for y in ys:
            incumbent = (
                y if incumbent is None else (max(incumbent, y) if maximize else min(incumbent, y))
            )
            best_so_far.append(incumbent)
        ax.step(xs, best_so_far, where="post", color="tab:red", label="best so far")
        ax.legend(loc="lower right" if maximize else "upper right")
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
