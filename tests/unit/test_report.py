"""The HTML report of a run folder, built from a simulated run shaped like a real one: what a
reader sees in it, and that it needs nothing but the file itself."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubenas.api.experiment import NASExperiment
from kubenas.api.records import TrialRecord, TrialRole, TrialState
from kubenas.report import ReportError, render_report, summary_from_run
from kubenas.runtime.outputs import write_outputs
from kubenas.runtime.simulated import simulate
from kubenas.space import Assignment

from .conftest import learning_curve, make_spec, quality

RESNET_CELL = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"
ASHA = {"resource": "epochs", "min": 1, "max": 9, "scheduler": "asha", "reductionFactor": 3}
SECTIONS = (
    "Search progress",
    "Every trial: val_accuracy against params",
    "Pareto front",
    "Architectures",
    "Searched networks vs baselines",
    "Cost per stage",
)
BASELINE_PARAMS = 210_000.0


def params_of(params: Assignment) -> dict[str, float]:
    """A parameter count that grows with an architecture's quality, give or take: a trade-off
    for the front. A baseline (no search parameters) is the largest network."""
    if not params:
        return {"params": BASELINE_PARAMS}
    spread = hashlib.sha256(repr(sorted(params.items())).encode()).digest()[1]
    return {"params": float(round(400_000 * (quality(params) - 0.5) + 300 * spread + 5000))}


def _with_test_accuracy(record: TrialRecord) -> TrialRecord:
    """A retrained network reports its held-out accuracy, a little different on every seed."""
    if record.role not in (TrialRole.FINAL, TrialRole.BASELINE) or not record.metrics:
        return record
    test = record.metrics["val_accuracy"] - 0.02 + 0.01 * (record.replica or 0)
    return record.with_changes(metrics={**record.metrics, "test_accuracy": test})


def _experiment(name: str, spec: dict[str, Any]) -> NASExperiment:
    return NASExperiment.model_validate(
        {
            "apiVersion": "kubenas.io/v1alpha1",
            "kind": "NASExperiment",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


def write_run(out: Path, experiment: NASExperiment, **simulation: Any) -> Path:
    """Simulate ``experiment`` and leave the folder ``kubenas run`` leaves: the experiment,
    every snapshot of every trial (the last one of each wins) and the outputs."""
    sim = simulate(experiment.spec, learning_curve, costs=params_of, **simulation)
    records = [_with_test_accuracy(r) for r in sim.records.values()]
    out.mkdir(parents=True, exist_ok=True)
    (out / "experiment.yaml").write_text(yaml.safe_dump(experiment.to_wire()), encoding="utf-8")
    earlier = [r.with_changes(state=TrialState.RUNNING, metrics={}) for r in records]
    lines = [r.model_dump_json() + "\n" for r in (*earlier, *records)]
    (out / "trials.jsonl").write_text("".join(lines), encoding="utf-8")
    write_outputs(out, experiment, records, sim.final)
    return out


def nb201_experiment(name: str = "cifar-demo", **final: Any) -> NASExperiment:
    """A multi-objective nb201-cell search with ASHA, a final stage and a ResNet-like baseline."""
    spec = make_spec(max_trials=16, parallel=2, seed=5, fidelity=ASHA).to_wire()
    spec["objective"] = {
        "metric": "val_accuracy",
        "additional": [{"metric": "params", "direction": "minimize"}],
    }
    spec["final"] = {"topK": 2, "seeds": 3, "fidelity": 3, **final}
    resnet = {"cell": RESNET_CELL, "stem_channels": 16, "cells_per_stage": 1}
    spec["baselines"] = [{"name": "resnet", "architecture": resnet}]
    return _experiment(name, spec)


def chain_experiment() -> NASExperiment:
    """A chain search shaped like examples/mnist1d.yaml, with no final stage."""
    space = {
        "stemChannels": 32,
        "stages": 3,
        "depth": {"min": 1, "max": 2},
        "widths": [[32, 48], [64, 96], [128]],
        "operations": ["conv3x3", "conv5x5", "sepconv5x5", "mbconv5x5_e3", "identity"],
    }
    spec = make_spec("local-search", family="chain", max_trials=10, seed=7, space=space)
    return _experiment("mnist1d-chain", spec.to_wire())


@pytest.fixture(scope="module")
def nb201_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_run(tmp_path_factory.mktemp("nb201"), nb201_experiment())


@pytest.fixture(scope="module")
def nb201_html(nb201_run: Path) -> str:
    return render_report(*summary_from_run(nb201_run))


def _figure_of(page: str, caption_start: str) -> str:
    """The markup of the one figure whose caption starts with ``caption_start``."""
    (figure,) = [f for f in page.split("<figure") if f"<figcaption>{caption_start}" in f]
    return figure


def _svg_texts(markup: str) -> list[str]:
    return re.findall(r"<text[^>]*>([^<]*)</text>", markup)


def test_the_sections_come_in_order_each_saying_what_it_shows(nb201_html: str) -> None:
    assert "<h1>cifar-demo</h1>" in nb201_html
    positions = [nb201_html.index(f"<h2>{title}</h2>") for title in SECTIONS]
    assert positions == sorted(positions)
    assert nb201_html.count("<p class='what'>") == len(SECTIONS) + 1  # and the header's


def test_the_header_says_how_the_run_ended_and_which_trial_is_best(
    nb201_run: Path, nb201_html: str
) -> None:
    summary, page = summary_from_run(nb201_run)[2], nb201_html
    assert "Finished successfully. Reason: BudgetSpent." in page
    assert "16 candidate trials: 16 succeeded, 0 failed, 0 stopped." in page
    best = summary["best"]
    assert (
        f"Best trial: {best['trial']} (val_accuracy {best['metrics']['val_accuracy']:.4g}" in page
    )


def test_the_last_snapshot_of_each_trial_is_the_one_reported(nb201_run: Path) -> None:
    _, records, _ = summary_from_run(nb201_run)
    assert len(records) == len({r.name for r in records})
    assert all(r.state is TrialState.SUCCEEDED and r.metrics for r in records)


def test_searched_networks_and_baselines_appear_with_their_seed_statistics(
    nb201_run: Path, nb201_html: str
) -> None:
    final = summary_from_run(nb201_run)[2]["final"]
    section = nb201_html[nb201_html.index("<h2>Searched networks vs baselines</h2>") :]
    for network in final["networks"]:
        figure = network["metrics"]["test_accuracy"]
        assert f"<td>{network['name']}</td>" in section
        assert f"{figure['mean']:.4f} ± {figure['std']:.4f}" in section
    (comparison,) = final["comparison"]
    assert comparison["baseline"] == "resnet" and comparison["nas_better"]
    assert (
        f"{comparison['nas']} vs resnet: test_accuracy {comparison['nas_mean']:.4f} vs "
        f"{comparison['baseline_mean']:.4f} ({comparison['difference']:+.4f}, the searched "
        "network is better); params "
    ) in section
    assert "210,000" in section  # the baseline's parameter count, in full


def test_a_run_awaiting_approval_names_the_finalists_it_waits_for(tmp_path: Path) -> None:
    run = write_run(tmp_path, nb201_experiment(approval="manual"))
    experiment, records, summary = summary_from_run(run)
    finalists = summary["final"]["finalists"]
    page = render_report(experiment, records, summary)
    assert f"Awaiting approval to retrain these finalists: {', '.join(finalists)}." in page
    assert "No final-stage network has been trained yet." in page
    assert f"<figcaption>{finalists[-1]}: finalist awaiting approval" in page


def test_an_nb201_cell_is_drawn_with_each_edge_labelled_by_its_operation(nb201_html: str) -> None:
    drawing = _figure_of(nb201_html, "resnet: hand-designed baseline")
    assert "<svg" in drawing and 'aria-label="Drawing of the architecture of resnet' in drawing
    labels = _svg_texts(drawing)
    operations = sorted(t for t in labels if "_" in t)
    assert operations == ["nor_conv_3x3", "nor_conv_3x3", "skip_connect", "skip_connect"]
    assert "none" not in labels  # its two `none` edges are dashed, not labelled
    assert {"0", "1", "2", "3", "input", "output"} == set(labels) - set(operations)


def test_the_best_trial_and_the_front_members_are_drawn_and_listed(
    nb201_run: Path, nb201_html: str
) -> None:
    summary = summary_from_run(nb201_run)[2]
    assert _figure_of(nb201_html, f"{summary['best']['trial']}: best trial")
    front = nb201_html[
        nb201_html.index("<h2>Pareto front</h2>") : nb201_html.index("<h2>Architectures</h2>")
    ]
    for member in summary["pareto"]["members"]:
        assert f"<td>{member['trial']}</td><td>{member['hash']}</td>" in front
    assert 'alt="The Pareto front of val_accuracy against params' in front


def test_a_chain_architecture_is_drawn_as_its_stages_and_blocks(tmp_path: Path) -> None:
    run = write_run(tmp_path, chain_experiment())
    experiment, records, summary = summary_from_run(run)
    page = render_report(experiment, records, summary)
    drawing = _figure_of(page, f"{summary['best']['trial']}: best trial")
    labels = _svg_texts(drawing)
    architecture = summary["best"]["architecture"]
    expected = ["stem", f"{architecture['stem_channels']} channels"]
    for number, stage in enumerate(architecture["stages"], start=1):
        expected += [f"stage {number}", f"width {stage['width']}", *stage["blocks"]]
    assert labels == expected
    assert "<h2>Searched networks vs baselines</h2>" not in page  # no final stage, no section


def test_a_custom_architecture_is_shown_as_a_table_of_its_parameters(tmp_path: Path) -> None:
    parameters = [
        {"name": "learning_rate", "type": "float", "low": 0.001, "high": 0.1},
        {"name": "activation", "type": "categorical", "choices": ["relu", "gelu"]},
    ]
    spec = make_spec(family="custom", max_trials=4, space={"parameters": parameters})
    run = write_run(tmp_path, _experiment("own-trainer", spec.to_wire()))
    experiment, records, summary = summary_from_run(run)
    figure = _figure_of(render_report(experiment, records, summary), "sim-")
    chosen = summary["best"]["architecture"]
    assert "<svg" not in figure and f"<td>activation</td><td>{chosen['activation']}</td>" in figure
    assert f"<td>learning_rate</td><td class='number'>{chosen['learning_rate']:.4g}</td>" in figure


def test_user_text_is_escaped(nb201_run: Path) -> None:
    experiment, records, summary = summary_from_run(nb201_run)
    hostile = {**summary, "message": "<script>alert('x')</script> & <b>"}
    page = render_report(experiment, records, hostile)
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &lt;b&gt;" in page
    assert page.count("<script>") == 1  # the report's own, at the end
    assert "<b>" not in page


def test_the_report_needs_no_network(nb201_html: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", nb201_html)
    assert not re.search(r"""url\(\s*["']?\s*(https?:)?//|@import""", nb201_html)
    sources = re.findall(r"<img [^>]*src=\"([^\"]*)\"", nb201_html)
    assert len(sources) == nb201_html.count("<img ") == 4
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert nb201_html.count("<img ") == len(re.findall(r"<img [^>]*alt=\"[^\"]+\"", nb201_html))


def test_a_folder_without_its_trials_is_refused_by_name(nb201_run: Path, tmp_path: Path) -> None:
    for name in ("experiment.yaml", "summary.json"):
        (tmp_path / name).write_bytes((nb201_run / name).read_bytes())
    with pytest.raises(ReportError, match=r"no trials\.jsonl"):
        summary_from_run(tmp_path)


def test_the_trials_plot_warns_when_final_trials_saw_the_validation_split(
    nb201_html: str, tmp_path: Path
) -> None:
    warning = "so their val_accuracy is not held out"
    assert warning in nb201_html  # trainOn defaults to train+val
    run = write_run(tmp_path, nb201_experiment(trainOn="train"))
    assert warning not in render_report(*summary_from_run(run))
