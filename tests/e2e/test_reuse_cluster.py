"""Trial reuse on the dev cluster: with ``trial.reuse.maxTrialsPerPod`` a few worker pods train
every candidate, asking the operator over HTTP for the next one. An operator SIGKILLed mid-way
and a worker pod SIGKILLed mid-trial lose no result and record none twice."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from kubenas_devcluster import Cluster

from .operator_harness import OperatorProcess, condition, finished, trials, wait_until
from .test_operator import _apply, _ledger, _quick_experiment

pytestmark = pytest.mark.e2e

WORKER_LABEL = "kubenas.io/worker"


def _reuse_experiment(name: str, folder: Path, epoch_seconds: float) -> dict[str, Any]:
    doc = _quick_experiment(
        name, folder, budget={"maxTrials": 12, "parallelTrials": 2}, fidelity={"max": 3}
    )
    doc["spec"]["trial"]["reuse"] = {"maxTrialsPerPod": 4}
    doc["spec"]["trial"]["env"].append({"name": "EPOCH_SECONDS", "value": str(epoch_seconds)})
    return doc


@contextmanager
def _worker_pods_seen(k8s: client.ApiClient, namespace: str) -> Iterator[set[str]]:
    """Every worker pod that exists at some point while the block runs (polled; a worker pod
    lives at least one trial, far longer than the interval)."""
    seen: set[str] = set()
    stop = threading.Event()
    core = client.CoreV1Api(k8s)

    def poll() -> None:
        while not stop.is_set():
            pods = core.list_namespaced_pod(namespace, label_selector=WORKER_LABEL)
            seen.update(p.metadata.name for p in pods.items)
            stop.wait(0.1)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(5)


def _finish(k8s: client.ApiClient, namespace: str, name: str) -> dict[str, dict[str, Any]]:
    done = wait_until(lambda: finished(k8s, namespace, name), 300, "the experiment to finish")
    found = {t["metadata"]["name"]: t["status"] for t in trials(k8s, namespace)}
    assert condition(done, "Succeeded")["status"] == "True", (done["status"], found)  # type: ignore[index]
    assert sorted(found) == [f"{name}-{i:04d}" for i in range(12)]
    assert all(s["state"] == "Succeeded" for s in found.values()), found
    return found


def _trial_under_worker() -> tuple[int, str] | None:
    """(worker pid, trial) of a worker pod's process whose trial is training now, seen from the
    host (a container's processes are host processes): the trial is the worker's child."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = dict(
                v.split(b"=", 1) for v in (entry / "environ").read_bytes().split(b"\0") if b"=" in v
            )
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if b"KUBENAS_WORKER" in environ and b"KUBENAS_TRIAL" in environ:
            return parent, environ[b"KUBENAS_TRIAL"].decode()
    return None


def test_twelve_candidates_train_in_four_pods_through_an_operator_kill(
    cluster: Cluster,
    k8s: client.ApiClient,
    namespace: str,
    start_operator: Callable[..., OperatorProcess],
    volume: Path,
) -> None:
    operator = start_operator(namespace)
    doc = _reuse_experiment("reused", volume, epoch_seconds=0.3)
    with _worker_pods_seen(k8s, namespace) as pods:
        _apply(cluster, namespace, doc)
        for lines in (6, 18):  # three epochs a trial: a kill after about 2 and 6 trials

            def trained(enough: int = lines) -> bool:
                return sum(map(len, _ledger(volume).values())) >= enough

            wait_until(trained, 120, "trials to train")
            operator.kill()  # the workers keep training and hold their results until it is back
            time.sleep(1.5)
            operator.start()
        statuses = _finish(k8s, namespace, "reused")
    ledger = _ledger(volume)
    assert all(epochs == [1, 2, 3] for epochs in ledger.values()), "each trained exactly once"
    assert len(ledger) == 12
    workers = {s["worker"] for s in statuses.values()}
    print(f"trial reuse: 12 trials in {len(pods)} pods ({sorted(pods)}), workers {workers}")
    assert len(pods) <= 4, pods
    assert len(workers) <= 4 and all(w.startswith("reused-w") for w in workers)
    assert all(s["lostLeases"] == 0 for s in statuses.values())


def test_a_worker_pod_killed_mid_trial_gives_its_trial_back_and_nothing_is_recorded_twice(
    cluster: Cluster,
    k8s: client.ApiClient,
    namespace: str,
    start_operator: Callable[..., OperatorProcess],
    volume: Path,
) -> None:
    start_operator(namespace)
    doc = _reuse_experiment("killed", volume, epoch_seconds=0.6)
    with _worker_pods_seen(k8s, namespace) as pods:
        _apply(cluster, namespace, doc)
        wait_until(lambda: len(_ledger(volume)) >= 2, 120, "trials to train")
        found = wait_until(_trial_under_worker, 60, "a trial training on a worker", 0.05)
        worker_pid, victim = found
        os.kill(worker_pid, signal.SIGKILL)
        statuses = _finish(k8s, namespace, "killed")
    ledger = _ledger(volume)
    print(f"trial reuse: killed the worker of {victim}; {len(pods)} pods ({sorted(pods)})")
    assert statuses[victim]["lostLeases"] == 1, statuses[victim]
    assert ledger[victim][-3:] == [1, 2, 3], "the lost run was trained again, from its start"
    others = {t: e for t, e in ledger.items() if t != victim}
    assert len(others) == 11 and all(e == [1, 2, 3] for e in others.values()), ledger
    assert len(pods) <= 5, "one pod lost, its place taken by one more"
