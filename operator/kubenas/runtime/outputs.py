"""The results folder of a local run: summary JSON, tables, best architecture, a plot."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

from kubenas.api.experiment import NASExperiment
from kubenas.api.records import TrialRecord, TrialRole, TrialState
from kubenas.engine import Decisions, planner
from kubenas.final_results import best_network, final_results
from kubenas.front import Front, infeasible_count
from kubenas.oneshot import supernet_summary
from kubenas.runtime.front_plot import PlotPoint, plot_front
from kubenas.screening import screening_summary
from kubenas.transitions import INFEASIBLE

REPORTED_METRICS = ("val_accuracy", "test_accuracy", "params", "flops")
FINAL_MODEL_DIR = "final-model"  # the best retrained network's exported files


def _metrics(record: TrialRecord, objective: str) -> dict[str, float]:
    wanted = (objective, *REPORTED_METRICS)
    return {k: record.metrics[k] for k in wanted if k in record.metrics}


def write_outputs(
    out: Path,
    experiment: NASExperiment,
    records: list[TrialRecord],
    decisions: Decisions,
    gpus: float = 0.0,
) -> dict[str, Any]:
    """summary.json/md/csv, best.json and the plots; ``gpus``: GPUs per trial, for the
    GPU-seconds of a stage."""
    spec = experiment.spec
    space = planner(spec).space
    metric = spec.objective.metric
    records = sorted(records, key=lambda r: r.index)
    candidates = [r for r in records if r.role is TrialRole.CANDIDATE]
    best = decisions.best
    summary: dict[str, Any] = {
        "experiment": experiment.name,
        "finished": decisions.finished,
        "succeeded": decisions.succeeded,
        "reason": str(decisions.reason)
        if decisions.reason
        else ("AwaitingApproval" if decisions.awaiting_approval else None),
        "message": decisions.message,
        "trials": {
            "total": len(candidates),
            "succeeded": sum(r.state == TrialState.SUCCEEDED for r in candidates),
            "failed": sum(r.state == TrialState.FAILED for r in candidates),
            "stopped": sum(r.state == TrialState.STOPPED for r in candidates),
        },
        "stages": stage_costs(records),
        "best": None,
    }
    screening = screening_summary(spec, space, records)
    if screening is not None:
        summary["screening"] = screening
    supernet = supernet_summary(spec, space, records, gpus)
    if supernet is not None:
        summary["supernet"] = supernet
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
    if spec.objective.constraints:
        summary["trials"]["infeasible"] = infeasible_count(spec.objective, candidates)
    front = decisions.front
    if front is not None:
        summary["pareto"] = {
            "size": front.size,
            "hypervolume": front.hypervolume,
            "referencePoint": front.reference,
            "members": [
                {
                    "trial": r.name,
                    "hash": space.arch_hash(r.params),
                    "architecture": space.to_architecture(space.active(r.params)),
                    "metrics": r.metrics,
                    "device": r.device,
                }
                for r in front.members
            ],
        }
    final = final_results(spec, records)
    if final is not None:
        summary["final"] = {
            **final,
            "awaitingApproval": decisions.awaiting_approval,
            "finalists": [r.name for r in decisions.finalists],
            "model": _copy_final_model(out, final),
        }
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    _write_tables(
        out, records, metric, space.arch_hash, summary.get("pareto"), spec.objective.metrics
    )
    if final is not None:
        with (out / "summary.md").open("a", encoding="utf-8") as f:
            f.write("\n".join(_final_tables(summary["final"])) + "\n")
    _plot(out / "progress.png", records, metric, spec.objective.direction == "maximize")
    if front is not None:
        _plot_front(out / "pareto.png", experiment, candidates, front)
    return summary


def _copy_final_model(out: Path, final: dict[str, Any]) -> str | None:
    """Copy the best retrained network's export (its first seed's) to ``final-model/``."""
    best = best_network(final)
    exported = Path(best["export"]) if best is not None and best["export"] else None
    if exported is None or not exported.is_dir():
        return None
    target = out / FINAL_MODEL_DIR
    shutil.copytree(exported, target, dirs_exist_ok=True)
    return str(target)


def _final_tables(final: dict[str, Any]) -> list[str]:
    """summary.md's final stage: every retrained network and baseline over its seeds, then
    the best searched network against each baseline."""
    metric = final["metric"]
    costs = [
        k
        for k in ("params", "flops", "latency_ms")
        if any(k in n["metrics"] for n in final["networks"])
    ]
    lines = [
        "",
        f"## Final stage: trained on {final['trainOn']}, {final['seeds']} seeds each",
        "",
    ]
    if final["awaitingApproval"]:
        lines += [
            "Awaiting approval to retrain: " + ", ".join(final["finalists"]) + ".",
            "",
        ]
    lines += [
        f"| network | kind | seeds | {metric} (mean ± std) | " + " | ".join(costs) + " |",
        "|" + "---|" * (4 + len(costs)),
    ]
    for n in final["networks"]:
        figure = n["metrics"].get(metric)
        shown = f"{figure['mean']:.4f} ± {figure['std']:.4f}" if figure else ""
        extra = [_figure(n["metrics"][k]["mean"]) if k in n["metrics"] else "" for k in costs]
        failed = f" ({n['failed']} failed)" if n["failed"] else ""
        lines.append(
            f"| {n['name']} | {n['kind']} | {n['seeds']}{failed} | {shown} | "
            + " | ".join(extra)
            + " |"
        )
    if final["comparison"]:
        lines += ["", "### NAS vs baseline, at equal training", ""]
        for c in final["comparison"]:
            verdict = "better" if c["nas_better"] else "not better"
            cost_text = "; ".join(
                f"{k} {_figure(v['nas'])} vs {_figure(v['baseline'])}"
                for k, v in c["costs"].items()
            )
            lines.append(
                f"- {c['nas']} vs {c['baseline']}: {metric} {c['nas_mean']:.4f} vs "
                f"{c['baseline_mean']:.4f} ({c['difference']:+.4f}, {verdict})"
                + (f"; {cost_text}" if cost_text else "")
            )
    if final["model"]:
        lines += ["", f"Exported model of {final['best']}: {final['model']}/"]
    return lines


def _figure(value: float) -> str:
    """Counts (parameters, FLOPs) in full with separators; other figures to four digits."""
    return f"{value:,.0f}" if value >= 1000 and float(value).is_integer() else f"{value:.4g}"


def _plot_front(
    path: Path, experiment: NASExperiment, candidates: list[TrialRecord], front: Front
) -> None:
    """The main objective against the first additional one: every finished trial, the front,
    and the infeasible ones (an untrained one sits at the lowest value shown)."""
    objective = experiment.spec.objective
    x_objective = objective.additional[0]
    on_front = {r.name for r in front.members}
    shown = [r for r in candidates if not r.state.active and x_objective.metric in r.metrics]
    ys = [r.metrics[objective.metric] for r in shown if objective.metric in r.metrics]
    floor = (min(ys) if objective.direction == "maximize" else max(ys)) if ys else 0.0
    points = [
        PlotPoint(
            x=r.metrics[x_objective.metric],
            y=r.metrics.get(objective.metric, floor),
            feasible=objective.violation(r.metrics) == 0 and objective.metric in r.metrics,
            on_front=r.name in on_front,
            label=r.name.rsplit("-", 1)[-1],
        )
        for r in shown
    ]
    xs = [p.x for p in points if p.x > 0]
    plot_front(
        path,
        points,
        x_objective.metric,
        objective.metric,
        x_larger_better=x_objective.direction == "maximize",
        y_larger_better=objective.direction == "maximize",
        x_log=bool(xs) and max(xs) > 20 * min(xs),
        title=f"{experiment.name}: {front.size} on the front",
    )


def _run_seconds(record: TrialRecord) -> float | None:
    if record.finished_at is None or record.started_at is None:
        return None
    return record.finished_at - record.started_at


def stage_costs(records: list[TrialRecord]) -> dict[str, dict[str, float]]:
    """Trials and trainer-seconds per role, so what a stage cost (or saved) is a figure. A
    promoted trial counts its last run only."""
    stages: dict[str, dict[str, float]] = {}
    for r in records:
        stage = stages.setdefault(r.role.value, {"trials": 0, "trainerSeconds": 0.0})
        stage["trials"] += 1
        stage["trainerSeconds"] = round(stage["trainerSeconds"] + (_run_seconds(r) or 0.0), 3)
    return stages


def _write_tables(
    out: Path,
    records: list[TrialRecord],
    metric: str,
    arch_hash: Any,
    pareto: dict[str, Any] | None = None,
    searched: tuple[str, ...] = (),
) -> None:
    """summary.csv and summary.md: one row per trial, with a column for every metric the
    search reads (``searched``: its other objectives and constrained metrics)."""
    fixed = (metric, "test_accuracy", "params")
    extra = [m for m in searched if m not in fixed]
    columns = [
        "trial",
        "role",
        "state",
        "fidelity",
        *fixed,
        *extra,
        "seconds",
        "architecture",
        "reason",
    ]
    rows = []
    for r in records:
        seconds = _run_seconds(r)
        many = r.role in (TrialRole.SCREEN, TrialRole.SUPERNET)  # no one architecture
        rows.append(
            {
                "trial": r.name,
                "role": r.role.value,
                "state": r.state.value,
                "fidelity": r.fidelity if r.fidelity is not None else "",
                metric: f"{r.metrics[metric]:.4f}" if metric in r.metrics else "",
                "test_accuracy": f"{r.metrics['test_accuracy']:.4f}"
                if "test_accuracy" in r.metrics
                else "",
                "params": int(r.metrics["params"]) if "params" in r.metrics else "",
                "seconds": f"{seconds:.1f}" if seconds is not None else "",
                "architecture": ""
                if many
                else f"baseline:{r.baseline}"
                if r.role is TrialRole.BASELINE
                else arch_hash(r.params),
                "reason": ": ".join(filter(None, (r.reason, r.message)))
                if r.reason == INFEASIBLE
                else r.reason or "",
                **{m: f"{r.metrics[m]:.4g}" if m in r.metrics else "" for m in extra},
            }
        )
    with (out / "summary.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
    if pareto is not None:
        lines += _front_table(pareto)
    (out / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _front_table(pareto: dict[str, Any]) -> list[str]:
    """The Pareto front section of summary.md: its size, hypervolume and members."""
    reference = ", ".join(f"{k} {v:.4g}" for k, v in pareto["referencePoint"].items())
    volume = pareto["hypervolume"]
    members = pareto["members"]
    metrics = sorted({k for m in members for k in m["metrics"]})
    lines = [
        "",
        f"## Pareto front: {pareto['size']} trials"
        + (f", {len(members)} listed" if len(members) < pareto["size"] else ""),
        "",
        f"Hypervolume {volume:.6g} from the reference point ({reference})."
        if volume is not None
        else "No hypervolume yet.",
        "",
        "| trial | architecture | " + " | ".join(metrics) + " | device |",
        "|" + "---|" * (len(metrics) + 3),
    ]
    for m in members:
        values = [f"{m['metrics'][k]:.4g}" if k in m["metrics"] else "" for k in metrics]
        lines.append(
            f"| {m['trial']} | {m['hash']} | " + " | ".join(values) + f" | {m['device'] or ''} |"
        )
    return lines


def _plot(path: Path, records: list[TrialRecord], metric: str, maximize: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [
        (r.index, r.metrics[metric])
        for r in records
        if metric in r.metrics and r.role is TrialRole.CANDIDATE
    ]
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
