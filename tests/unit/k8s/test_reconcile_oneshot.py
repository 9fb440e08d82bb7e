"""Strategy oneshot in the cluster, on the fake API: the supernet Job runs first and alone, its
derived architectures come from its termination message into its NASTrial and become the
candidate Jobs, a crashed supernet is started again, and a restarted operator decides the same.
tests/e2e/test_oneshot_cluster.py runs it on the real dev cluster."""

from __future__ import annotations

import json
from typing import Any

from kubenas.api import parse_experiment
from kubenas.api.records import TrialRole
from kubenas.k8s.views import render
from kubenas.space import SearchSpace, build_space, parse_nb201_cell_string

from .world import NS, World, experiment_doc

ONESHOT: dict[str, Any] = {
    "searchSpace": {"family": "nb201-cell", "stemChannels": [8], "cellsPerStage": [1]},
    "strategy": {"name": "oneshot", "supernetEpochs": 4, "topK": 3},
    "budget": {"maxTrials": 3, "parallelTrials": 2, "maxFailedTrials": 1},
    "trial": {
        "dataset": "digits",
        "command": ["python", "-m", "kubenas_trainer"],
        "timeoutSeconds": 100,
        "resources": {"limits": {"nvidia.com/gpu": 1}},
    },
}
CELLS = [
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|nor_conv_3x3~1|none~2|",
    "|nor_conv_1x1~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|none~2|",
    "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|nor_conv_3x3~0|nor_conv_3x3~1|none~2|",
]


def _space() -> SearchSpace:
    return build_space(parse_experiment(experiment_doc(**ONESHOT)).spec.search_space)


def _derived_message() -> str:
    """What the supernet trial's trainer writes as its termination message."""
    space = _space()
    derived = [
        {
            "choices": space.to_choices(
                {**parse_nb201_cell_string(cell), "stem_channels": 8, "cells_per_stage": 1}
            ),
            "score": (9 - i) / 10,
        }
        for i, cell in enumerate(CELLS)
    ]
    metrics = {"val_accuracy": 0.9, "supernet_epochs": 4, "start_epoch": 0}
    return json.dumps({"event": "final", "metrics": metrics, "derived": derived})


def test_the_supernet_job_runs_alone_then_its_derived_architectures_become_jobs() -> None:
    world = World(None, prometheus=False, pushgateway=False, **ONESHOT)
    world.reconcile()
    assert world.trial_names() == ["exp-0000"] and world.job_names() == ["exp-0000-f4"]
    assert world.record("exp-0000").role is TrialRole.SUPERNET
    job = world.api.jobs[(NS, "exp-0000-f4")]
    env = {
        e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert json.loads(env["KUBENAS_SUPERNET"])["method"] == "beta-darts"
    assert env["KUBENAS_CHECKPOINT_DIR"].endswith("/exp/supernet")
    world.run("exp-0000-f4")
    world.tick(30)
    world.reconcile()
    assert world.trial_names() == ["exp-0000"], "no candidate while the supernet trains"
    world.succeed("exp-0000-f4", _derived_message())
    world.reconcile()

    status = world.status("exp-0000")
    assert status["state"] == "Succeeded"
    cells = [world.record(n).params for n in ("exp-0001", "exp-0002")]
    assert [d["params"] for d in status["derived"][:2]] == cells
    assert [d["score"] for d in status["derived"]] == [0.9, 0.8, 0.7]
    supernet = world.api.status_of(NS, "exp").supernet
    assert supernet is not None and supernet.derived == 3 and supernet.seconds == 30.0
    assert supernet.gpu_seconds == 30.0  # one GPU per trial
    counts = world.api.status_of(NS, "exp").trials
    assert counts is not None and counts.total == 2  # the supernet is not a candidate
    trials = [t for (_, _), t in sorted(world.api.trials.items())]
    shown = render(world.api.experiments[(NS, "exp")], trials, now=world.now)
    assert "supernet   beta-darts, 4 epochs in 30 s: 3 derived, best score 0.900" in shown, shown

    # A restarted operator decides the same: the third derived architecture, once a slot frees.
    world.run("exp-0001-f0")
    world.succeed("exp-0001-f0", json.dumps({"metrics": {"val_accuracy": 0.95}}))
    world.fresh_reconciler().reconcile()
    assert world.record("exp-0003").params == world.status("exp-0000")["derived"][2]["params"]


def test_a_crashed_supernet_is_started_again_then_the_search_fails_past_max_failed() -> None:
    world = World(None, prometheus=False, pushgateway=False, **ONESHOT)
    world.reconcile()
    world.run("exp-0000-f4")
    world.crash("exp-0000-f4", 137, "killed")
    world.reconcile()
    assert world.record("exp-0000").reason == "Crashed"
    assert world.trial_names() == ["exp-0000", "exp-0001"]
    assert world.record("exp-0001").role is TrialRole.SUPERNET
    world.run("exp-0001-f4")
    world.crash("exp-0001-f4", 137, "killed")
    world.reconcile()
    world.reconcile()
    assert world.condition("Failed") == ("True", "SupernetFailed")
    assert world.trial_names() == ["exp-0000", "exp-0001"]
