"""The figures of the HTML report, drawn with matplotlib and returned as inline markup: plots
as base64 PNG ``<img>`` elements, architecture drawings as inline SVG whose labels stay text.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyBboxPatch

PLOT_DPI = 100
LARGE = 10_000  # an axis reaching this far reads 25k, 1.5M
FONT_SIZE = 11
DRAWING_FONT_SIZE = 13  # drawings are shown two abreast, so scaled down
ROLE_STYLE = {  # role: (colour, marker, legend label)
    "final": ("tab:orange", "^", "final (retrained)"),
    "baseline": ("tab:red", "s", "baseline"),
}
OPERATION_COLOURS = {
    "nor_conv_3x3": "tab:blue",
    "nor_conv_1x1": "tab:cyan",
    "avg_pool_3x3": "tab:green",
    "skip_connect": "dimgray",
}
NB201_NODE_X = (0.0, 2.4, 4.8, 7.2)  # in drawing units, as wide as the labels need
NODE_RADIUS = 0.3
NONE_OPERATION = "none"
BOX_WIDTH = 2.0  # a chain stage box, in drawing units
BOX_GAP = 2.6  # from one box to the next


@dataclass(frozen=True)
class TrialPoint:
    """One trial in the plane of a cost (x) and the objective (y)."""

    x: float
    y: float
    role: str
    fidelity: int | None = None


@dataclass(frozen=True)
class Axis:
    """A plotted metric, and which way is better (None: neither is)."""

    metric: str
    larger_better: bool | None = None
    log: bool = False

    @property
    def label(self) -> str:
        if self.larger_better is None:
            return self.metric
        return f"{self.metric} ({'higher' if self.larger_better else 'lower'} is better)"


def _new_figure(width: float, height: float, *, drawing: bool = False) -> Figure:
    """A figure laid out for axes with labels, or, for a ``drawing``, one bare axes filling it."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    if drawing:
        fig = Figure(figsize=(width, height), dpi=PLOT_DPI)
        fig.add_axes((0, 0, 1, 1)).axis("off")
        return fig
    return Figure(figsize=(width, height), dpi=PLOT_DPI, layout="constrained")


def _png(fig: Figure, alt: str) -> str:
    import matplotlib

    buffer = io.BytesIO()
    with matplotlib.rc_context({"font.size": FONT_SIZE}):
        fig.savefig(buffer, format="png")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _svg(fig: Figure, label: str, prefix: str) -> str:
    """Inline SVG with text kept as text; ids carry ``prefix`` so drawings never share one."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": prefix}):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    text = re.sub(r"<metadata>.*?</metadata>", "", text[text.index("<svg") :], flags=re.S)
    text = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}-\1"', text)
    text = re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}-\1)", text)
    text = re.sub(r'href="#([^"]+)"', rf'href="#{prefix}-\1"', text)
    return text.replace("<svg", f'<svg role="img" aria-label="{html.escape(label)}"', 1)


def _style_axes(ax: Axes, x: Axis, y: Axis) -> None:
    ax.set_xlabel(x.label, fontsize=FONT_SIZE)
    ax.set_ylabel(y.label, fontsize=FONT_SIZE)
    ax.tick_params(labelsize=FONT_SIZE - 1)
    ax.grid(alpha=0.3)
    if x.log:
        ax.set_xscale("log")
    elif max(abs(v) for v in ax.get_xlim()) >= LARGE:
        from matplotlib.ticker import EngFormatter

        ax.xaxis.set_major_formatter(EngFormatter(sep=""))


def best_so_far(values: Sequence[float], maximize: bool) -> list[float]:
    """The best value reached up to each position."""
    best: list[float] = []
    for value in values:
        incumbent = best[-1] if best else value
        best.append(max(incumbent, value) if maximize else min(incumbent, value))
    return best


def progress_plot(points: Sequence[tuple[int, float]], objective: Axis, alt: str) -> str:
    """Each candidate's objective by trial index, under the best-so-far step line."""
    fig = _new_figure(10.5, 4.2)
    ax = fig.add_subplot()
    indexes = [i for i, _ in points]
    values = [v for _, v in points]
    ax.scatter(indexes, values, s=24, color="tab:blue", label="candidate")
    ax.step(
        indexes,
        best_so_far(values, objective.larger_better is not False),
        where="post",
        color="tab:red",
        linewidth=2,
        label="best so far",
    )
    _style_axes(ax, Axis("trial index"), objective)
    ax.legend(fontsize=FONT_SIZE - 1, loc="best")
    return _png(fig, alt)


def _fidelity_shades(fidelities: Sequence[int | None]) -> dict[int | None, tuple[str, float]]:
    """A blue shade and a marker size per fidelity: darker and larger for longer training."""
    import matplotlib

    levels = sorted(set(fidelities), key=lambda f: -1 if f is None else f)
    blues = matplotlib.colormaps["Blues"]
    shades: dict[int | None, tuple[str, float]] = {}
    for rank, level in enumerate(levels):
        share = (rank + 1) / len(levels)
        shades[level] = (matplotlib.colors.to_hex(blues(0.35 + 0.6 * share)), 18 + 50 * share)
    return shades


def _candidate_label(fidelity: int | None, resource: str) -> str:
    if fidelity is None:
        return "candidate"
    return f"candidate, {fidelity} {resource.removesuffix('s') if fidelity == 1 else resource}"


def _scatter_trials(ax: Axes, points: Sequence[TrialPoint], resource: str) -> None:
    candidates = [p for p in points if p.role == "candidate"]
    for fidelity, (colour, size) in _fidelity_shades([p.fidelity for p in candidates]).items():
        shown = [p for p in candidates if p.fidelity == fidelity]
        ax.scatter(
            [p.x for p in shown],
            [p.y for p in shown],
            s=size,
            color=colour,
            edgecolors="navy",
            linewidths=0.5,
            label=_candidate_label(fidelity, resource),
        )
    for role, (colour, marker, label) in ROLE_STYLE.items():
        shown = [p for p in points if p.role == role]
        if shown:
            ax.scatter(
                [p.x for p in shown],
                [p.y for p in shown],
                s=60,
                color=colour,
                marker=marker,
                edgecolors="black",
                linewidths=0.6,
                label=label,
            )


def trials_plot(points: Sequence[TrialPoint], x: Axis, y: Axis, resource: str, alt: str) -> str:
    """Every trial, coloured by role; candidates shaded and sized by their fidelity."""
    fig = _new_figure(10.5, 5)
    ax = fig.add_subplot()
    _scatter_trials(ax, points, resource)
    _style_axes(ax, x, y)
    ax.legend(fontsize=FONT_SIZE - 1, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _png(fig, alt)


def front_plot(
    others: Sequence[tuple[float, float]],
    members: Sequence[tuple[float, float, str]],
    x: Axis,
    y: Axis,
    alt: str,
) -> str:
    """The trials in grey and the front's members highlighted, joined by the boundary they
    attain: it holds each member's y towards worse x ("pre" steps when larger x is better)."""
    fig = _new_figure(10.5, 5)
    ax = fig.add_subplot()
    ax.scatter([p[0] for p in others], [p[1] for p in others], s=20, color="silver", label="trial")
    front = sorted(members)
    ax.step(
        [m[0] for m in front],
        [m[1] for m in front],
        where="pre" if x.larger_better else "post",
        color="tab:purple",
        linewidth=1.5,
    )
    ax.scatter(
        [m[0] for m in front],
        [m[1] for m in front],
        s=70,
        color="tab:purple",
        edgecolors="black",
        zorder=3,
        label="Pareto front",
    )
    for mx, my, name in front:
        ax.annotate(name, (mx, my), xytext=(5, 5), textcoords="offset points", fontsize=9)
    _style_axes(ax, x, y)
    ax.legend(fontsize=FONT_SIZE - 1, loc="best")
    return _png(fig, alt)


def stage_bars(seconds: Mapping[str, float], alt: str) -> str:
    """Trainer-seconds per stage as horizontal bars, each labelled with its figure."""
    fig = _new_figure(8, 0.6 * len(seconds) + 1.3)
    ax = fig.add_subplot()
    roles = list(seconds)
    bars = ax.barh(roles, [seconds[r] for r in roles], color="tab:blue")
    ax.bar_label(bars, labels=[f"{seconds[r]:,.1f} s" for r in roles], padding=4)
    ax.invert_yaxis()
    ax.set_xlabel("trainer-seconds", fontsize=FONT_SIZE)
    ax.margins(x=0.15)
    ax.set_xlim(left=0)
    ax.tick_params(labelsize=FONT_SIZE)
    return _png(fig, alt)


# -- architectures -----------------------------------------------------------------------------


def _edge_geometry(to_node: int, from_node: int) -> tuple[float, tuple[float, float]]:
    """An edge's arc3 bend and the midpoint of its curve, where its label goes: neighbours
    are joined straight, skips of two bend up (0->2) or down (1->3), 0->3 bends higher."""
    start, end = NB201_NODE_X[from_node], NB201_NODE_X[to_node]
    rad = {(2, 0): -0.45, (3, 1): 0.45, (3, 0): -0.55}.get((to_node, from_node), 0.0)
    # arc3 puts its control point rad * length off the chord, so the curve's middle is at half.
    height = -rad * (end - start) / 2
    return rad, ((start + end) / 2, height + (0.22 if rad == 0 else 0.0))


def nb201_drawing(operations: Mapping[tuple[int, int], str], label: str, prefix: str) -> str:
    """The cell as its 4-node DAG: edge j->i labelled with its operation, ``none`` dashed."""
    from matplotlib.patches import Circle, FancyArrowPatch

    fig = _new_figure(7.0, 3.2, drawing=True)
    ax = fig.axes[0]
    nodes = [
        Circle((x, 0), NODE_RADIUS, facecolor="white", edgecolor="black") for x in NB201_NODE_X
    ]
    for number, node in enumerate(nodes):
        ax.add_patch(node)
        ax.text(NB201_NODE_X[number], 0, str(number), ha="center", va="center", fontsize=14)
    ax.text(NB201_NODE_X[0], -0.6, "input", ha="center", va="top", fontsize=DRAWING_FONT_SIZE)
    ax.text(NB201_NODE_X[-1], -0.6, "output", ha="center", va="top", fontsize=DRAWING_FONT_SIZE)
    for (to_node, from_node), operation in sorted(operations.items()):
        rad, (lx, ly) = _edge_geometry(to_node, from_node)
        missing = operation == NONE_OPERATION
        colour = "lightgray" if missing else OPERATION_COLOURS.get(operation, "black")
        arrow = FancyArrowPatch(
            patchA=nodes[from_node],
            patchB=nodes[to_node],
            posA=(NB201_NODE_X[from_node], 0),
            posB=(NB201_NODE_X[to_node], 0),
            connectionstyle=f"arc3,rad={rad}",
            arrowstyle="-|>",
            mutation_scale=14,
            color=colour,
            linestyle="--" if missing else "-",
            linewidth=1.6,
        )
        ax.add_patch(arrow)
        if not missing:
            box = {"facecolor": "white", "edgecolor": "none", "pad": 1}
            ax.text(
                lx,
                ly,
                operation,
                ha="center",
                va="center",
                fontsize=DRAWING_FONT_SIZE,
                color=colour,
                bbox=box,
            )
    ax.set_xlim(NB201_NODE_X[0] - 0.6, NB201_NODE_X[-1] + 0.6)
    ax.set_ylim(-1.4, 2.45)
    ax.set_aspect("equal")
    return _svg(fig, label, prefix)


def _box(
    ax: Axes, x: float, height: float, title: str, blocks: Sequence[str] = ()
) -> FancyBboxPatch:
    """A stage box at ``x``: its title on top, then one small box per block, top to bottom."""
    from matplotlib.patches import FancyBboxPatch

    outer = FancyBboxPatch(
        (x, 0),
        BOX_WIDTH,
        height,
        boxstyle="round,pad=0.05",
        facecolor="aliceblue",
        edgecolor="steelblue",
    )
    ax.add_patch(outer)
    ax.text(
        x + BOX_WIDTH / 2, height - 0.12, title, ha="center", va="top", fontsize=DRAWING_FONT_SIZE
    )
    for row, block in enumerate(blocks):
        top = height - 1.0 - 0.6 * row
        ax.add_patch(
            FancyBboxPatch(
                (x + 0.15, top - 0.45),
                BOX_WIDTH - 0.3,
                0.45,
                boxstyle="round,pad=0.02",
                facecolor="white",
                edgecolor="gray",
            )
        )
        ax.text(
            x + BOX_WIDTH / 2,
            top - 0.225,
            block,
            ha="center",
            va="center",
            fontsize=DRAWING_FONT_SIZE,
        )
    return outer


def chain_drawing(architecture: Mapping[str, Any], label: str, prefix: str) -> str:
    """The stem, then each stage as a box holding its blocks in order, left to right."""
    from matplotlib.patches import FancyArrowPatch

    stages: list[Mapping[str, Any]] = list(architecture.get("stages", []))
    depth = max((len(s.get("blocks", [])) for s in stages), default=0)
    height = 1.1 + 0.6 * max(depth, 1)
    width = BOX_WIDTH + BOX_GAP * len(stages) + 0.4
    fig = _new_figure(0.9 * width, 0.9 * (height + 0.4), drawing=True)
    ax = fig.axes[0]
    boxes = [_box(ax, 0.0, height, f"stem\n{architecture.get('stem_channels', '?')} channels")]
    for number, stage in enumerate(stages, start=1):
        title = f"stage {number}\nwidth {stage.get('width', '?')}"
        boxes.append(_box(ax, number * BOX_GAP, height, title, stage.get("blocks", [])))
    for before, after in itertools.pairwise(boxes):
        middle = height / 2
        ax.add_patch(
            FancyArrowPatch(
                (before.get_x() + BOX_WIDTH, middle),
                (after.get_x(), middle),
                arrowstyle="-|>",
                mutation_scale=14,
                color="black",
                shrinkA=4,
                shrinkB=4,
            )
        )
    ax.set_xlim(-0.2, width - 0.2)
    ax.set_ylim(-0.2, height + 0.2)
    ax.set_aspect("equal")
    return _svg(fig, label, prefix)
