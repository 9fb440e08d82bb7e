"""A picture of a multi-objective search: every trial, and the Pareto front it reached."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PlotPoint:
    """One trial in objective space; a front member is drawn as such whatever `feasible` says."""

    x: float
    y: float
    feasible: bool
    on_front: bool
    label: str = ""


def plot_front(
    path: Path,
    points: Sequence[PlotPoint],
    x_label: str,
    y_label: str,
    *,
    x_larger_better: bool,
    y_larger_better: bool,
    x_log: bool = False,
    title: str = "",
) -> None:
    """Write a PNG of the trials, with the front drawn as the boundary of what it attains.

    Each axis label says which way is better, since objectives mix the two directions.

    Along rising x a front's y rises when the two objectives pull the same way (one larger-, the
    other smaller-is-better) and falls otherwise; either way the boundary holds each member's y
    towards worse x, so the step is "pre" when larger x is better and "post" when smaller is.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    front = sorted((p for p in points if p.on_front), key=lambda p: (p.x, p.y))
    feasible = [p for p in points if p.feasible and not p.on_front]
    infeasible = [p for p in points if not p.feasible and not p.on_front]

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    if feasible:
        ax.scatter(
            [p.x for p in feasible], [p.y for p in feasible], s=14, color="tab:gray", label="trial"
        )
    if infeasible:
        ax.scatter(
            [p.x for p in infeasible],
            [p.y for p in infeasible],
            s=22,
            marker="x",
            color="tab:red",
            label="infeasible",
        )
    if front:
        ax.step(
            [p.x for p in front],
            [p.y for p in front],
            where="pre" if x_larger_better else "post",
            color="tab:blue",
            linewidth=1.2,
            marker="o",
            markersize=6,
            markeredgecolor="black",
            markeredgewidth=0.6,
            zorder=3,
            label="Pareto front",
        )
        for p in front:
            if p.label:
                ax.annotate(
                    p.label, (p.x, p.y), xytext=(4, 4), textcoords="offset points", fontsize=7
                )
    if points:
        ax.legend(loc="best", fontsize=8)
    if x_log:
        ax.set_xscale("log")
    ax.set_xlabel(_with_direction(x_label, x_larger_better))
    ax.set_ylabel(_with_direction(y_label, y_larger_better))
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _with_direction(label: str, larger_better: bool) -> str:
    return f"{label} ({'higher' if larger_better else 'lower'} is better)"
