"""What weight sharing buys on real data: ``kubenas bench oneshot EXPERIMENT``.

Three figures, from real training on this machine:

- **ranking**: the trainer's ``oneshot_check`` trains the experiment's supernet, scores sampled
  architectures with its inherited weights and trains each standalone: Kendall tau between the
  two, and the share of parameter-free operations among the derived architectures next to
  that among the best standalone ones (a collapsed supernet derives mostly skips);
- **result against cost**: the oneshot search itself (``kubenas run``), then the same experiment
  with each multi-trial strategy and ``--max-trials`` candidates; each one's best test accuracy
  once it has spent oneshot's trainer-seconds, and the trainer-seconds it needs to reach
  oneshot's best objective.

Runs go in processes of their own, as a user would start them; kubenas never imports torch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kubenas.api.records import TrialRecord, TrialRole, TrialState
from kubenas.runtime.store import RecordLog


@dataclass(frozen=True)
class SearchRun:
    """One finished local search: every trial's trainer-seconds in the order trials ended,
    with what the best trial so far scored (objective and test accuracy)."""

    label: str
    trainer_seconds: float
    best_objective: float | None
    best_test: float | None
    curve: tuple[tuple[float, float, float | None], ...]  # (seconds so far, objective, test)

    def at_cost(self, seconds: float) -> tuple[float | None, float | None]:
        """(objective, test accuracy) of the best trial once ``seconds`` were spent."""
        reached = [(objective, test) for spent, objective, test in self.curve if spent <= seconds]
        return reached[-1] if reached else (None, None)

    def cost_to_reach(self, objective: float, sign: float) -> float | None:
        """Trainer-seconds until the best trial's objective reached ``objective``."""
        return next(
            (spent for spent, value, _ in self.curve if sign * value >= sign * objective), None
        )


def _run_seconds(record: TrialRecord) -> float:
    if record.started_at is None or record.finished_at is None:
        return 0.0
    return record.finished_at - record.started_at


def search_run(label: str, records: Sequence[TrialRecord], metric: str, sign: float) -> SearchRun:
    """The cost curve of a search: stage trials (a supernet, a screen) are paid for first, as
    no candidate starts before they end; candidates in the order they finished."""
    stages = [r for r in records if r.role is not TrialRole.CANDIDATE]
    candidates = sorted(
        (r for r in records if r.role is TrialRole.CANDIDATE and r.finished_at is not None),
        key=lambda r: r.finished_at or 0.0,
    )
    spent = sum(_run_seconds(r) for r in stages)
    best: TrialRecord | None = None
    curve: list[tuple[float, float, float | None]] = []
    for r in candidates:
        spent += _run_seconds(r)
        value = r.metrics.get(metric)
        better = best is None or (value is not None and sign * value > sign * best.metrics[metric])
        if r.state is TrialState.SUCCEEDED and value is not None and better:
            best = r
        if best is not None:
            curve.append((spent, best.metrics[metric], best.metrics.get("test_accuracy")))
    return SearchRun(
        label=label,
        trainer_seconds=round(spent, 3),
        best_objective=best.metrics[metric] if best else None,
        best_test=best.metrics.get("test_accuracy") if best else None,
        curve=tuple(curve),
    )


def _kubenas_run(experiment: Path, out: Path) -> list[TrialRecord]:
    subprocess.run(
        [sys.executable, "-m", "kubenas.cli", "run", str(experiment), "--out", str(out), "--quiet"],
        check=True,
    )
    return list(RecordLog(out / "trials.jsonl").load().values())


def multi_trial_variant(doc: dict[str, Any], strategy: str, max_trials: int) -> dict[str, Any]:
    """The oneshot experiment searched trial by trial instead: same space, data, fidelity and
    training, with ``strategy`` and ``max_trials`` candidates."""
    variant: dict[str, Any] = json.loads(json.dumps(doc))
    variant["metadata"]["name"] = f"{doc['metadata']['name']}-{strategy}"[:40].rstrip("-")
    variant["spec"]["strategy"] = {"name": strategy}
    budget = variant["spec"]["budget"]
    budget["maxTrials"] = max_trials
    budget["parallelTrials"] = min(budget.get("parallelTrials", 1), max_trials)
    return variant


def ranking_check(
    experiment: Path, architectures: int, data_dir: str | None, seed_ceiling: bool = False
) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "kubenas_trainer.oneshot_check",
        "--experiment",
        str(experiment),
        "--architectures",
        str(architectures),
        "--json",
    ]
    if data_dir:
        command += ["--data-dir", data_dir]
    if seed_ceiling:
        command.append("--seed-ceiling")
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    sys.stderr.write(done.stderr[-4000:])
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def compare(
    experiment: Path, out: Path, strategies: Sequence[str], max_trials: int
) -> dict[str, Any]:
    """Run the oneshot search and each multi-trial strategy; their results side by side."""
    doc = yaml.safe_load(experiment.read_text(encoding="utf-8"))
    objective = doc["spec"].get("objective") or {}
    metric = objective.get("metric", "val_accuracy")
    sign = -1.0 if objective.get("direction") == "minimize" else 1.0
    oneshot = search_run("oneshot", _kubenas_run(experiment, out / "oneshot"), metric, sign)
    rows: list[dict[str, Any]] = [
        {
            "search": oneshot.label,
            "trainerSeconds": oneshot.trainer_seconds,
            "best": oneshot.best_objective,
            "bestTest": oneshot.best_test,
        }
    ]
    for strategy in strategies:
        variant = multi_trial_variant(doc, strategy, max_trials)
        path = out / f"{strategy}.yaml"
        path.write_text(yaml.safe_dump(variant, sort_keys=False), encoding="utf-8")
        run = search_run(strategy, _kubenas_run(path, out / strategy), metric, sign)
        at_objective, at_test = run.at_cost(oneshot.trainer_seconds)
        needed = (
            run.cost_to_reach(oneshot.best_objective, sign)
            if oneshot.best_objective is not None
            else None
        )
        rows.append(
            {
                "search": strategy,
                "trainerSeconds": run.trainer_seconds,
                "best": run.best_objective,
                "bestTest": run.best_test,
                "atOneshotCost": {"best": at_objective, "bestTest": at_test},
                "secondsToOneshotBest": None if needed is None else round(needed, 3),
                "costRatio": None
                if needed is None or not needed
                else round(oneshot.trainer_seconds / needed, 3),
            }
        )
    return {"metric": metric, "searches": rows}


def _figure(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_report(ranking: dict[str, Any] | None, comparison: dict[str, Any]) -> str:
    lines: list[str] = []
    if ranking is not None:
        shares = ranking.get("parameter_free_share") or {}
        derived = shares.get("supernet_top_k") or {}
        standalone = shares.get("standalone_top") or {}
        lines.append(
            f"ranking: Kendall tau {_figure(ranking.get('kendall_tau'), 3)} over "
            f"{len(ranking.get('architectures') or [])} sampled architectures (supernet score "
            f"vs standalone val_accuracy after {ranking.get('standalone_epochs')} epochs)"
        )
        if ranking.get("seed_ceiling_tau") is not None:
            lines.append(
                f"ceiling: Kendall tau {_figure(ranking['seed_ceiling_tau'], 3)} between two "
                "seeds of the same standalone training"
            )
        lines.append(
            "collapse: parameter-free share of operations, derived top-K "
            + ", ".join(f"{op} {share:.2f}" for op, share in derived.items())
            + f"; best {shares.get('standalone_top_count')} standalone "
            + ", ".join(f"{op} {share:.2f}" for op, share in standalone.items())
        )
        lines.append(
            f"supernet {ranking.get('supernet_train_seconds')} trainer-s; standalone training "
            f"of the sampled {ranking.get('standalone_train_seconds')} trainer-s"
        )
    metric = comparison["metric"]
    lines.append(
        f"{'search':<14}{'trainer-s':>11}{'best ' + metric:>20}{'best test':>11}"
        f"{'test @ oneshot cost':>21}{'s to oneshot best':>19}{'oneshot/that':>14}"
    )
    for row in comparison["searches"]:
        at = row.get("atOneshotCost") or {}
        lines.append(
            f"{row['search']:<14}{row['trainerSeconds']:>11.1f}{_figure(row['best']):>20}"
            f"{_figure(row['bestTest']):>11}{_figure(at.get('bestTest')):>21}"
            f"{_figure(row.get('secondsToOneshotBest'), 1):>19}"
            f"{_figure(row.get('costRatio'), 3):>14}"
        )
    return "\n".join(lines)
