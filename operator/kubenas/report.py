"""One self-contained HTML page about a run (local, or read back from the cluster), for someone
who never used the CLI: what was searched, what it found, how it compares with the baselines,
what it cost.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kubenas.api import ExperimentError, load_experiment
from kubenas.api.experiment import NASExperiment
from kubenas.api.records import TrialRecord, TrialRole
from kubenas.api.vocabulary import CHAIN_FAMILY, NB201_FAMILY, parse_nb201_cell
from kubenas.contract import record_architecture
from kubenas.final_results import COMPARED_COSTS
from kubenas.report_drawings import (
    Axis,
    TrialPoint,
    chain_drawing,
    front_plot,
    nb201_drawing,
    progress_plot,
    stage_bars,
    trials_plot,
)

RUN_FILES = ("experiment.yaml", "trials.jsonl", "summary.json")
DEFAULT_COST = "params"
MAX_DRAWINGS = 6
PLOTTED_ROLES = (TrialRole.CANDIDATE, TrialRole.FINAL, TrialRole.BASELINE)

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
p.what { color: #555; font-style: italic; }
table { border-collapse: collapse; margin: 0.8em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: left; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; } figcaption { color: #444; font-size: 0.95em; }
figure img, figure svg { max-width: 100%; height: auto; }
.drawings { display: grid; grid-template-columns: repeat(auto-fill, minmax(480px, 1fr));
            gap: 1em; }
.drawings figure.wide { grid-column: 1 / -1; }
.message { background: #f6f6f6; padding: 0.5em 0.8em; border-left: 4px solid #999; }
"""

# On load, says how many images decoded and how many drawings there are (a browser test reads it).
SCRIPT = """
window.addEventListener("load", () => {
  const loaded = Array.from(document.images).filter((i) => i.complete && i.naturalWidth > 0);
  document.body.dataset.images = String(loaded.length);
  document.body.dataset.drawings = String(document.querySelectorAll("svg").length);
  document.body.dataset.ready = "1";
});
"""


class ReportError(Exception):
    """The run folder cannot be reported on (a file is missing or unreadable)."""


def summary_from_run(run_dir: Path) -> tuple[NASExperiment, list[TrialRecord], dict[str, Any]]:
    """The experiment, its trials (the last line of each wins) and the summary of a run folder."""
    for name in RUN_FILES:
        if not (run_dir / name).is_file():
            raise ReportError(f"{run_dir}: no {name}; is this the folder `kubenas run` wrote?")
    try:
        experiment = load_experiment(str(run_dir / "experiment.yaml"))
    except ExperimentError as exc:
        raise ReportError(str(exc)) from exc
    try:
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ReportError(f"{run_dir / 'summary.json'}: not JSON ({exc})") from exc
    return experiment, _read_records(run_dir / "trials.jsonl"), summary


def _read_records(path: Path) -> list[TrialRecord]:
    records: dict[str, TrialRecord] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = TrialRecord.model_validate(json.loads(line))
        except (json.JSONDecodeError, ValidationError):
            continue  # a line cut short by a kill, as the run's own log skips it
        records[record.name] = record
    return sorted(records.values(), key=lambda r: r.index)


def render_report(
    experiment: NASExperiment, records: Sequence[TrialRecord], summary: Mapping[str, Any]
) -> str:
    """The report's HTML: header, progress, all trials, front, architectures, final, costs."""
    records = sorted(records, key=lambda r: r.index)
    sections = [
        _header(summary),
        _progress_section(experiment, records),
        _trials_section(experiment, records),
        _front_section(experiment, records, summary),
        _architectures_section(experiment, records, summary),
        _final_section(summary),
        _stages_section(summary),
    ]
    title = html.escape(f"kubenas report: {experiment.name}")
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>\n"
        f"<title>{title}</title>\n<link rel='icon' href='data:,'>\n<style>{STYLE}</style>\n"
        "</head>\n<body>\n"
        + "\n".join(s for s in sections if s)
        + f"\n<script>{SCRIPT}</script>\n</body>\n</html>\n"
    )


# -- small HTML pieces -------------------------------------------------------------------------


def _number(value: float) -> str:
    """Large figures (parameters, FLOPs) whole with separators; others to four digits."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def _cell(value: Any) -> str:
    if isinstance(value, float | int) and not isinstance(value, bool):
        return f"<td class='number'>{html.escape(_number(value))}</td>"
    return f"<td>{html.escape('' if value is None else str(value))}</td>"


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>\n" for row in rows)
    return f"<table>\n<tr>{head}</tr>\n{body}</table>"


def _section(title: str, what: str, *parts: str) -> str:
    return (
        f"<section>\n<h2>{html.escape(title)}</h2>\n<p class='what'>{html.escape(what)}</p>\n"
        + "\n".join(parts)
        + "\n</section>"
    )


def _figure(markup: str, caption: str, *, wide: bool = False) -> str:
    """A figure with its caption; a ``wide`` one takes a whole row of the drawings' grid."""
    opening = "<figure class='wide'>" if wide else "<figure>"
    return f"{opening}\n{markup}\n<figcaption>{html.escape(caption)}</figcaption>\n</figure>"


def _paragraph(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def _metrics_text(metrics: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {_number(v)}" for k, v in metrics.items())


# -- sections ----------------------------------------------------------------------------------


def _outcome(summary: Mapping[str, Any]) -> str:
    if not summary.get("finished"):
        return "Not finished."
    return "Finished successfully." if summary.get("succeeded") else "Finished without success."


def _header(summary: Mapping[str, Any]) -> str:
    counts = summary.get("trials", {})
    count_text = f"{counts.get('total', 0)} candidate trials: " + ", ".join(
        f"{v} {k}" for k, v in counts.items() if k != "total"
    )
    best = summary.get("best")
    best_text = (
        f"Best trial: {best['trial']} ({_metrics_text(best['metrics'])})."
        if best
        else "No trial has finished yet, so there is no best one."
    )
    reason = summary.get("reason")
    parts = [
        f"<h1>{html.escape(str(summary.get('experiment', '')))}</h1>",
        "<p class='what'>A report of one kubenas search: how it ended, what it found and "
        "what it cost.</p>",
        _paragraph(_outcome(summary) + (f" Reason: {reason}." if reason else "")),
    ]
    if summary.get("message"):
        parts.append(f"<p class='message'>{html.escape(str(summary['message']))}</p>")
    parts += [_paragraph(count_text + "."), _paragraph(best_text)]
    return "<header>\n" + "\n".join(parts) + "\n</header>"


def _objective_axis(experiment: NASExperiment) -> Axis:
    objective = experiment.spec.objective
    return Axis(objective.metric, objective.direction == "maximize")


def _progress_section(experiment: NASExperiment, records: Sequence[TrialRecord]) -> str:
    y = _objective_axis(experiment)
    points = [
        (r.index, r.metrics[y.metric])
        for r in records
        if r.role is TrialRole.CANDIDATE and y.metric in r.metrics
    ]
    what = f"Each candidate's {y.metric} by trial index, and the best value found so far."
    if not points:
        return _section("Search progress", what, _paragraph(f"No candidate reported {y.metric}."))
    caption = f"{len(points)} candidates; the red step line is the best {y.metric} so far."
    alt = f"Scatter of {y.metric} per candidate trial with a best-so-far step line"
    return _section("Search progress", what, _figure(progress_plot(points, y, alt), caption))


def _cost_axis(experiment: NASExperiment, values: Sequence[float] = ()) -> Axis:
    """The first additional objective when there is one, else the parameter count."""
    additional = experiment.spec.objective.additional
    metric = additional[0].metric if additional else DEFAULT_COST
    larger_better = additional[0].direction == "maximize" if additional else False
    positive = [v for v in values if v > 0]
    spread = bool(positive) and max(positive) > 20 * min(positive)
    return Axis(metric, larger_better, log=spread and len(positive) == len(values))


def _trial_points(records: Sequence[TrialRecord], x_metric: str, y_metric: str) -> list[TrialPoint]:
    return [
        TrialPoint(r.metrics[x_metric], r.metrics[y_metric], r.role.value, r.fidelity)
        for r in records
        if r.role in PLOTTED_ROLES and x_metric in r.metrics and y_metric in r.metrics
    ]


def _trials_section(experiment: NASExperiment, records: Sequence[TrialRecord]) -> str:
    y = _objective_axis(experiment)
    x_metric = _cost_axis(experiment).metric
    title = f"Every trial: {y.metric} against {x_metric}"
    what = (
        f"Each trained network's {y.metric} against its {x_metric}, coloured by stage; "
        "darker, larger candidate dots were trained longer."
    )
    points = _trial_points(records, x_metric, y.metric)
    if not points:
        text = f"No trial reported both {y.metric} and {x_metric}, so there is nothing to plot."
        return _section(title, what, _paragraph(text))
    x = _cost_axis(experiment, [p.x for p in points])
    resource = experiment.spec.fidelity.resource if experiment.spec.fidelity else "epochs"
    alt = f"Scatter of {y.metric} against {x_metric} for {len(points)} trials, by stage"
    caption = f"{len(points)} trials; the legend names each stage and candidate fidelity."
    final = experiment.spec.final
    if final is not None and final.train_on == "train+val":
        caption += (
            f" Final and baseline trials trained on the validation split too, so their "
            f"{y.metric} is not held out: compare them by the test figures below."
        )
    return _section(title, what, _figure(trials_plot(points, x, y, resource, alt), caption))


def _front_section(
    experiment: NASExperiment, records: Sequence[TrialRecord], summary: Mapping[str, Any]
) -> str:
    pareto = summary.get("pareto")
    if not pareto:
        return ""
    y = _objective_axis(experiment)
    x = _cost_axis(experiment)
    members = pareto["members"]
    on_front = {m["trial"] for m in members}
    others = [
        (r.metrics[x.metric], r.metrics[y.metric])
        for r in records
        if r.role is TrialRole.CANDIDATE
        and r.name not in on_front
        and {x.metric, y.metric} <= r.metrics.keys()
    ]
    shown = [
        (m["metrics"][x.metric], m["metrics"][y.metric], m["trial"])
        for m in members
        if {x.metric, y.metric} <= m["metrics"].keys()
    ]
    x = _cost_axis(experiment, [p[0] for p in others] + [m[0] for m in shown])
    volume = pareto.get("hypervolume")
    what = (
        f"The trials no other trial beats on both {y.metric} and {x.metric}: "
        f"{pareto['size']} on the front"
        + (f", hypervolume {_number(volume)}." if volume is not None else ".")
    )
    alt = f"The Pareto front of {y.metric} against {x.metric}, members highlighted"
    caption = f"Purple: the {len(shown)} listed front members; grey: the other candidates."
    reported = {k for m in members for k in m["metrics"]}
    wanted = (*experiment.spec.objective.metrics, "test_accuracy", "params", "flops", "latency_ms")
    metrics = [k for k in dict.fromkeys(wanted) if k in reported]
    rows = [[m["trial"], m["hash"], *(m["metrics"].get(k) for k in metrics)] for m in members]
    table = _table(["trial", "architecture", *metrics], rows)
    devices = sorted({str(m["device"]) for m in members if m.get("device")})
    if devices:
        caption += f" Costs measured on {'; '.join(devices)}."
    return _section(
        "Pareto front", what, _figure(front_plot(others, shown, x, y, alt), caption), table
    )


def _searched_to_draw(summary: Mapping[str, Any]) -> dict[str, str]:
    """The searched networks worth drawing, best first, each with why it is shown."""
    final = summary.get("final") or {}
    best = (summary.get("best") or {}).get("trial")
    shown = {best: "best trial"} if best else {}
    for network in final.get("networks", []):
        if network["kind"] == "nas":
            shown.setdefault(network["name"], "retrained in the final stage")
    waiting = "finalist awaiting approval" if final.get("awaitingApproval") else "finalist"
    for name in final.get("finalists", []):
        shown.setdefault(name, waiting)
    return shown


def _architectures_to_draw(
    experiment: NASExperiment, records: Sequence[TrialRecord], summary: Mapping[str, Any]
) -> list[tuple[str, dict[str, Any]]]:
    """(caption, architecture) of the searched networks, then of the baselines; at most
    MAX_DRAWINGS, half of them kept for baselines when there are that many."""
    by_name = {r.name: r for r in records}
    metric = experiment.spec.objective.metric
    searched = []
    for name, why in _searched_to_draw(summary).items():
        if name in by_name:
            record = by_name[name]
            figure = (
                f", {metric} {_number(record.metrics[metric])}" if metric in record.metrics else ""
            )
            searched.append((f"{name}: {why}{figure}", record_architecture(experiment, record)))
    baselines = [
        (f"{b.name}: hand-designed baseline", dict(b.architecture))
        for b in experiment.spec.baselines[: MAX_DRAWINGS // 2]
    ]
    return searched[: MAX_DRAWINGS - len(baselines)] + baselines


def _architecture_figure(family: str, caption: str, architecture: dict[str, Any], n: int) -> str:
    alt = f"Drawing of the architecture of {caption}"
    if family == NB201_FAMILY and isinstance(architecture.get("cell"), str):
        operations = parse_nb201_cell(architecture["cell"])
        detail = (
            f" Stem channels {architecture.get('stem_channels')}, cells per stage "
            f"{architecture.get('cells_per_stage')}; dashed: no connection (none)."
        )
        return _figure(nb201_drawing(operations, alt, f"arch{n}"), caption + "." + detail)
    if family == CHAIN_FAMILY:
        return _figure(chain_drawing(architecture, alt, f"arch{n}"), caption + ".", wide=True)
    rows = [
        [k, v if isinstance(v, int | float | str) else json.dumps(v)]
        for k, v in architecture.items()
    ]
    return _figure(_table(["parameter", "value"], rows), caption + ".")


def _architectures_section(
    experiment: NASExperiment, records: Sequence[TrialRecord], summary: Mapping[str, Any]
) -> str:
    what = "The best networks found and the hand-designed baselines, as the trainer builds them."
    shown = _architectures_to_draw(experiment, records, summary)
    if not shown:
        return _section("Architectures", what, _paragraph("No architecture to show yet."))
    family = experiment.spec.search_space.family
    figures = [_architecture_figure(family, c, a, n) for n, (c, a) in enumerate(shown)]
    return _section("Architectures", what, "<div class='drawings'>", *figures, "</div>")


def _spread(figure: Mapping[str, float] | None) -> str:
    return f"{figure['mean']:.4f} ± {figure['std']:.4f}" if figure else ""


def _seeds_text(network: Mapping[str, Any]) -> str:
    extra = [f"{network[k]} {k}" for k in ("failed", "running") if network.get(k)]
    return str(network["seeds"]) + (f" ({', '.join(extra)})" if extra else "")


def _comparison_line(c: Mapping[str, Any]) -> str:
    verdict = (
        "the searched network is better" if c["nas_better"] else "the baseline is as good or better"
    )
    costs = "; ".join(
        f"{k} {_number(v['nas'])} vs {_number(v['baseline'])}" for k, v in c["costs"].items()
    )
    return (
        f"{c['nas']} vs {c['baseline']}: {c['metric']} {c['nas_mean']:.4f} vs "
        f"{c['baseline_mean']:.4f} ({c['difference']:+.4f}, {verdict})"
        + (f"; {costs}" if costs else "")
    )


def _final_section(summary: Mapping[str, Any]) -> str:
    final = summary.get("final")
    if not final:
        return ""
    metric, networks = final["metric"], final["networks"]
    what = (
        f"The searched networks and the baselines, each trained the same way on "
        f"{final['trainOn']} over {final['seeds']} seeds: {metric} as mean ± std over the seeds."
    )
    parts = []
    if final.get("awaitingApproval"):
        names = ", ".join(final.get("finalists", [])) or "none proposed"
        parts.append(_paragraph(f"Awaiting approval to retrain these finalists: {names}."))
    costs = [k for k in COMPARED_COSTS if any(k in n["metrics"] for n in networks)]
    rows = [
        [
            n["name"],
            "searched" if n["kind"] == "nas" else "baseline",
            _seeds_text(n),
            _spread(n["metrics"].get(metric)),
            *(n["metrics"][k]["mean"] if k in n["metrics"] else None for k in costs),
        ]
        for n in networks
    ]
    if rows:
        parts.append(_table(["network", "kind", "seeds", f"{metric} (mean ± std)", *costs], rows))
    else:
        parts.append(_paragraph("No final-stage network has been trained yet."))
    lines = [f"<li>{html.escape(_comparison_line(c))}</li>" for c in final.get("comparison", [])]
    if lines:
        parts.append(
            "<p>Best searched network against each baseline:</p>\n<ul>" + "".join(lines) + "</ul>"
        )
    if final.get("model"):
        parts.append(_paragraph(f"Exported model of {final['best']}: {final['model']}/"))
    return _section("Searched networks vs baselines", what, *parts)


def _stages_section(summary: Mapping[str, Any]) -> str:
    stages: Mapping[str, Mapping[str, float]] = summary.get("stages") or {}
    what = "What each stage cost: its trials and the seconds their trainers ran."
    if not stages:
        return _section("Cost per stage", what, _paragraph("No trial has run yet."))
    rows = [[role, int(s["trials"]), s["trainerSeconds"]] for role, s in stages.items()]
    seconds = {role: float(s["trainerSeconds"]) for role, s in stages.items()}
    alt = "Bar chart of trainer-seconds per stage: " + ", ".join(
        f"{role} {_number(v)} s" for role, v in seconds.items()
    )
    caption = "Trainer-seconds per stage; a promoted trial counts its last run only."
    table = _table(["stage", "trials", "trainer-seconds"], rows)
    if not any(seconds.values()):
        return _section("Cost per stage", what, table, _paragraph("No trainer time was recorded."))
    return _section("Cost per stage", what, table, _figure(stage_bars(seconds, alt), caption))
