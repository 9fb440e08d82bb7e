"""``kubenas bench reuse`` without a cluster: the experiment it runs twice, and the figures it
reads from what the API holds after each run (here hand-written NASTrial bodies)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kubenas.api import parse_experiment
from kubenas.bench.reuse import RunFigures, bench_experiment, figures_of, format_table

DEMO = Path(__file__).resolve().parents[2] / "examples" / "digits-cell.yaml"


def test_the_benchmarked_experiment_is_the_search_only_with_reuse_only_in_the_second_run(
    tmp_path: Path,
) -> None:
    source = yaml.safe_load(DEMO.read_text())
    jobs = bench_experiment(source, "jobs", 12, 2, None, tmp_path)
    reused = bench_experiment(source, "reused", 12, 2, 4, tmp_path)
    for doc in (jobs, reused):
        parse_experiment(doc)  # what kubectl apply sends must be a valid experiment
        assert "final" not in doc["spec"] and "baselines" not in doc["spec"]
        assert doc["spec"]["budget"]["maxTrials"] == 12
        assert doc["spec"]["strategy"] == source["spec"]["strategy"]
    assert "reuse" not in jobs["spec"]["trial"]
    assert reused["spec"]["trial"]["reuse"] == {"maxTrialsPerPod": 4}
    assert jobs["spec"]["trial"]["checkpointDir"] != reused["spec"]["trial"]["checkpointDir"]
    assert "final" in source["spec"], "the example itself is left as it is"


def _trial(start: str, end: str) -> dict[str, Any]:
    return {"status": {"startTime": start, "completionTime": end}}


def test_figures_come_from_the_trials_and_the_table_shows_the_ratio() -> None:
    experiment = {"status": {"bestTrial": {"name": "x-0003", "objective": 0.97}}}
    slow = figures_of(
        "a Job per trial",
        experiment,
        [_trial("2026-12-03T10:00:00Z", "2026-12-03T10:00:08Z")] * 2,
        pods=2,
        wall_seconds=40.0,
    )
    fast = figures_of(
        "reuse",
        experiment,
        [_trial("2026-12-03T10:00:00Z", "2026-12-03T10:00:02Z"), {"status": {}}],
        pods=1,
        wall_seconds=10.0,
    )
    assert slow == RunFigures("a Job per trial", 2, 40.0, 8.0, 2, "x-0003", 0.97)
    assert fast.mean_trial_seconds == 2.0, "a trial without both times is left out"
    table = format_table([slow, fast])
    assert "ratio (reuse / a Job per trial): 0.250; same best objective: yes" in table
    assert "trials per minute" in table and "3.0" in table and "12.0" in table
