"""What a person watching ``kubenas run`` sees: a live panel, or plain log lines with --quiet."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from kubenas.api.experiment import NASExperiment
from kubenas.api.records import TrialRecord, TrialState
from kubenas.engine import Decisions
from kubenas.failures import explain_failures
from kubenas.final_results import best_network
from kubenas.oneshot import supernet_line


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:d}:{secs:02d}"


class Display:
    def __init__(self, experiment: NASExperiment, *, quiet: bool) -> None:
        self.experiment = experiment
        self.quiet = quiet
        self.console = Console(stderr=True)
        self.live: Live | None = None
        self.recent: list[str] = []

    def __enter__(self) -> Display:
        if not self.quiet:
            self.live = Live(console=self.console, refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.live is not None:
            self.live.__exit__(kind, value, tb)
            self.live = None

    def note(self, line: str) -> None:
        stamped = f"{time.strftime('%H:%M:%S')} {line}"
        if self.live is None:
            self.console.print(stamped, highlight=False, markup=False)
        else:
            self.recent = [*self.recent[-7:], stamped]

    def update(self, records: list[TrialRecord], decisions: Decisions, elapsed: float) -> None:
        if self.live is None:
            return
        spec = self.experiment.spec
        counts = {state: sum(r.state == state for r in records) for state in TrialState}
        done = counts[TrialState.SUCCEEDED] + counts[TrialState.FAILED] + counts[TrialState.STOPPED]
        summary = Table.grid(padding=(0, 2))
        summary.add_row(
            Text(f"kubenas run {self.experiment.name}", style="bold"),
            f"elapsed {_clock(elapsed)}",
            f"trials {len(records)}/{spec.budget.max_trials} created, {done} done",
        )
        summary.add_row(
            f"running {counts[TrialState.RUNNING]}",
            f"succeeded {counts[TrialState.SUCCEEDED]}  failed {counts[TrialState.FAILED]}"
            f"  stopped {counts[TrialState.STOPPED]}",
            f"remaining budget {spec.budget.max_trials - len(records)} trials",
        )
        best = decisions.best
        metric = spec.objective.metric
        if best is not None:
            summary.add_row(
                Text(f"best {best.name}", style="green"), f"{metric} {best.metrics[metric]:.4f}", ""
            )
        running = Table(title="running", show_edge=False, expand=False)
        for column in ("trial", "fidelity", "epoch", metric):
            running.add_column(column)
        for r in records:
            if r.state == TrialState.RUNNING:
                last = r.intermediate[-1] if r.intermediate else None
                running.add_row(
                    r.name,
                    str(r.fidelity or "-"),
                    str(last[0]) if last else "-",
                    f"{last[1]:.4f}" if last else "-",
                )
        self.live.update(Group(summary, running, Text("\n".join(self.recent), style="dim")))

    def done(self, summary: dict[str, Any], records: list[TrialRecord], out: Any) -> None:
        """The final line: the best trial, and why trials failed when any did."""
        best = summary.get("best")
        trials = summary["trials"]
        outcome = f"best {best['trial']} {best.get('metrics', {})}" if best else "no best trial"
        if trials["failed"]:
            outcome += f"; {explain_failures(records)}"
        elif summary.get("finished") and not summary.get("succeeded") and summary.get("message"):
            outcome += f"; {summary['message']}"  # e.g. the screen trial failed
        counted = f"{trials['succeeded']} succeeded, {trials['failed']} failed"
        if trials.get("infeasible"):
            counted += f", {trials['infeasible']} infeasible"
        pareto = summary.get("pareto")
        if pareto:
            outcome += f"; Pareto front of {pareto['size']}"
        supernet = summary.get("supernet")
        if supernet:
            outcome += f"; supernet {supernet_line(supernet)}"
        final = summary.get("final")
        if final:
            outcome += f"; {final_outcome(final, out)}"
        ended = "finished" if summary.get("finished") else "paused"
        self.console.print(
            f"{ended}: {summary.get('reason')} - {trials['total']} trials "
            f"({counted}); {outcome}; results in {out}",
            highlight=False,
            markup=False,
            soft_wrap=True,  # one line, whatever the width, for logs and scripts
        )


def final_outcome(final: dict[str, Any], out: Any) -> str:
    """The final stage in a phrase: what awaits approval, or the best retrained network and
    how it did against each baseline."""
    if final["awaitingApproval"]:
        return (
            f"final stage awaits approval to retrain {', '.join(final['finalists'])}: "
            f"run kubenas approve {out}"
        )
    metric = final["metric"]
    best = best_network(final)
    if best is None:
        return "final stage trained no network"
    figure = best["metrics"][metric]
    text = f"final {best['name']} {metric} {figure['mean']:.4f} ± {figure['std']:.4f}"
    for c in final["comparison"]:
        text += f", {c['difference']:+.4f} vs baseline {c['baseline']}"
    return text
