"""Trials under real Kueue (installed from its own chart into the dev cluster): a ClusterQueue
of 2 GPUs admits 2 of 8 parallel trials at a time, the others wait as Pending "waiting for
admission" without timing out; a higher-priority workload preempts a running trial, which
waits again and continues its checkpoint when readmitted; deleting an experiment leaves no
Job or Workload holding quota."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from kubenas_devcluster import Cluster, kueue

from .operator_harness import (
    REPO,
    OperatorProcess,
    condition,
    finished,
    kubectl,
    mount_volume,
    trials,
    wait_until,
)
from .test_trial_time import SLEEPY_TRAINER

pytestmark = pytest.mark.e2e

FLAVOR = "default-flavor"
LOCAL_QUEUE = "nas-trials"
GPUS = 2
TIMEOUT_SECONDS = 10
KUEUE = ("kueue.x-k8s.io", "v1beta2")
# Pod Security "restricted", as the test namespaces enforce.
RESTRICTED_POD = {
    "securityContext": {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
}
RESTRICTED_CONTAINER = {
    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
}


@pytest.fixture(scope="module")
def kueue_ready(cluster: Cluster) -> None:
    seconds = kueue.install(cluster)
    print(f"Kueue installed and answering in {seconds:.1f} s")
    _apply(
        cluster,
        {"apiVersion": "/".join(KUEUE), "kind": "ResourceFlavor", "metadata": {"name": FLAVOR}},
    )


@pytest.fixture
def queue(cluster: Cluster, kueue_ready: None, namespace: str) -> Iterator[str]:
    """A ClusterQueue of ``GPUS`` GPUs (CPU and memory plentiful) that preempts lower priority,
    and the LocalQueue trials of ``namespace`` name; yields the LocalQueue's name."""
    cluster_queue = f"nas-{namespace}"
    _apply(
        cluster,
        {
            "apiVersion": "/".join(KUEUE),
            "kind": "ClusterQueue",
            "metadata": {"name": cluster_queue},
            "spec": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "resourceGroups": [
                    {
                        "coveredResources": ["cpu", "memory", "nvidia.com/gpu"],
                        "flavors": [
                            {
                                "name": FLAVOR,
                                "resources": [
                                    {"name": "cpu", "nominalQuota": 64},
                                    {"name": "memory", "nominalQuota": "256Gi"},
                                    {"name": "nvidia.com/gpu", "nominalQuota": GPUS},
                                ],
                            }
                        ],
                    }
                ],
                "preemption": {"withinClusterQueue": "LowerPriority"},
            },
        },
    )
    _apply(
        cluster,
        {
            "apiVersion": "/".join(KUEUE),
            "kind": "LocalQueue",
            "metadata": {"name": LOCAL_QUEUE, "namespace": namespace},
            "spec": {"clusterQueue": cluster_queue},
        },
    )
    yield LOCAL_QUEUE
    kubectl(cluster.bin_dir, "delete", "clusterqueue", cluster_queue, "--wait=false", check=False)


def _apply(cluster: Cluster, doc: dict[str, Any]) -> None:
    kubectl(cluster.bin_dir, "apply", "-f", "-", stdin=yaml.safe_dump(doc))


def _sleepy_experiment(name: str, queue: str, trials_: int, command: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "kubenas.io/v1alpha1",
        "kind": "NASExperiment",
        "metadata": {"name": name},
        "spec": {
            "searchSpace": {
                "family": "custom",
                "parameters": [{"name": "width", "type": "int", "low": 1, "high": 64}],
            },
            "strategy": {"name": "random"},
            "budget": {"maxTrials": trials_, "parallelTrials": trials_},
            "trial": {
                "dataset": "none:",
                "command": command,
                "timeoutSeconds": TIMEOUT_SECONDS,
                "queueName": queue,
                "resources": {"limits": {"nvidia.com/gpu": 1}},
            },
        },
    }


class RunningPods:
    """Samples, every second, how many of the namespace's trial pods run."""

    def __init__(self, k8s: client.ApiClient, namespace: str) -> None:
        self.core = client.CoreV1Api(k8s)
        self.namespace = namespace
        self.samples: list[int] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> RunningPods:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._done.is_set():
            pods = self.core.list_namespaced_pod(
                self.namespace, label_selector="kubenas.io/trial"
            ).items
            self.samples.append(sum(p.status.phase == "Running" for p in pods))
            self._done.wait(1.0)


def _workloads(k8s: client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    listed = client.CustomObjectsApi(k8s).list_namespaced_custom_object(
        KUEUE[0], KUEUE[1], namespace, "workloads"
    )
    return list(listed["items"])


def test_eight_parallel_trials_under_a_two_gpu_queue_run_two_at_a_time_without_timing_out(
    cluster: Cluster,
    k8s: client.ApiClient,
    namespace: str,
    queue: str,
    start_operator: Callable[..., OperatorProcess],
) -> None:
    start_operator(namespace)
    doc = _sleepy_experiment("quota", queue, 8, ["python", "-c", SLEEPY_TRAINER])
    with RunningPods(k8s, namespace) as running:
        kubectl(cluster.bin_dir, "apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(doc))

        def waiting_for_admission() -> list[dict[str, Any]]:
            return [
                t
                for t in trials(k8s, namespace)
                if t.get("status", {}).get("state") == "Pending"
                and t["status"].get("reason") == "WaitingForAdmission"
            ]

        waiting = wait_until(
            lambda: len(waiting_for_admission()) >= 4 and waiting_for_admission(),
            60,
            "trials waiting for admission",
        )
        assert waiting[0]["status"]["message"] == f"waiting for admission in queue {queue}"
        shown = _kubenas_get("quota", namespace)
        assert f"waiting for admission in queue {queue}" in shown, shown
        done = wait_until(lambda: finished(k8s, namespace, "quota"), 300, "the experiment")
    everything = trials(k8s, namespace)
    states = {
        t["metadata"]["name"]: (t["status"]["state"], t["status"].get("reason")) for t in everything
    }
    counts = done["status"]["trials"]
    print(f"8 trials, 2-GPU queue: running pods sampled {running.samples}; {counts}")
    assert condition(done, "Succeeded")["status"] == "True", (done["status"], states)  # type: ignore[index]
    assert len(everything) == 8 and all(s == ("Succeeded", None) for s in states.values()), states
    assert max(running.samples) == GPUS, running.samples
    assert counts["queueSeconds"] > TIMEOUT_SECONDS, counts
    assert max(float(t["status"]["queueSeconds"]) for t in everything) > TIMEOUT_SECONDS
    assert _holding_quota(k8s, namespace) == [], "finished: no Workload holds quota"


def _kubenas_get(name: str, namespace: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "kubenas.cli", "get", name, "-n", namespace],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout


def _checkpointed_epoch(path: Path) -> int:
    """The epoch of a trial's latest checkpoint, 0 while it has none."""
    if not path.exists():
        return 0
    import torch  # the test reads what the trainer wrote; the operator never imports torch

    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
    except (OSError, RuntimeError, EOFError, KeyError):
        return 0  # caught mid-rename: look again


def _urgent_job(queue: str) -> dict[str, Any]:
    """Someone else's higher-priority Job in the same queue, needing one GPU for a while."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "urgent",
            "labels": {
                "kueue.x-k8s.io/queue-name": queue,
                "kueue.x-k8s.io/priority-class": "urgent",
            },
        },
        "spec": {
            "suspend": True,
            "backoffLimit": 0,
            "template": {
                "spec": {
                    **RESTRICTED_POD,
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            **RESTRICTED_CONTAINER,
                            "name": "urgent",
                            "image": "kubenas-trainer:0.1.0",
                            "command": ["python", "-c", "import time; time.sleep(15)"],
                            "resources": {"limits": {"nvidia.com/gpu": 1}},
                        }
                    ],
                }
            },
        },
    }


@pytest.mark.parametrize("reuse", [False, True], ids=["job-per-trial", "worker-pods"])
def test_a_preempted_trial_waits_again_and_continues_its_checkpoint(
    cluster: Cluster,
    k8s: client.ApiClient,
    namespace: str,
    queue: str,
    start_operator: Callable[..., OperatorProcess],
    volume: Path,
    reuse: bool,
) -> None:
    """With a Job per trial, the preempted trial waits for admission on its own Job; on
    worker pods (trial reuse, as the example sets it), the preempted worker's trial goes back
    to waiting for a worker, not counted as a lost run."""
    _apply(
        cluster,
        {
            "apiVersion": "/".join(KUEUE),
            "kind": "WorkloadPriorityClass",
            "metadata": {"name": "urgent"},
            "value": 1000,
        },
    )
    start_operator(namespace)
    doc = yaml.safe_load((REPO / "examples" / "digits-cell.yaml").read_text())
    spec = doc["spec"]
    for stage in ("final", "baselines"):
        spec.pop(stage)
    spec["searchSpace"] |= {"stemChannels": [8], "cellsPerStage": [1]}
    spec["strategy"] = {"name": "random"}
    spec["budget"] = {"maxTrials": GPUS, "parallelTrials": GPUS, "maxFailedTrials": 0}
    spec["fidelity"]["max"] = 60  # epochs of about 0.6 s: long enough to be preempted
    trial = spec["trial"]
    if not reuse:
        trial.pop("reuse")
    trial |= {"queueName": queue, "checkpointDir": str(volume / "checkpoints")}
    # No CPU request: two trials of one CPU each would not fit beside Kueue's manager.
    trial["resources"] = {"limits": {"nvidia.com/gpu": 1}}
    mount_volume(trial, volume)
    name = doc["metadata"]["name"]
    kubectl(cluster.bin_dir, "apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(doc))

    folder = volume / "checkpoints" / name

    def both_trained_two_epochs() -> bool:
        epochs = [_checkpointed_epoch(c) for c in folder.glob("*/checkpoint.pt")]
        return len(epochs) == GPUS and min(epochs) >= 2

    wait_until(both_trained_two_epochs, 300, "two epochs of each trial")
    kubectl(
        cluster.bin_dir,
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        stdin=yaml.safe_dump(_urgent_job(queue)),
    )
    batch = client.BatchV1Api(k8s)

    def preempted() -> list[str]:
        events = (
            client.CoreV1Api(k8s)
            .list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
            .items
        )
        return [e.message.split(":", 1)[0] for e in events if e.reason == "TrialPreempted"]

    (victim,) = wait_until(preempted, 120, "a trial preempted by the urgent Job")
    preempted_at = _checkpointed_epoch(folder / victim / "checkpoint.pt")
    waiting = next(t for t in trials(k8s, namespace) if t["metadata"]["name"] == victim)
    print(f"{victim} preempted at epoch {preempted_at}: {waiting['status']}")
    assert waiting["status"]["state"] == "Pending", waiting["status"]
    if not reuse:
        assert waiting["status"]["reason"] == "WaitingForAdmission", waiting["status"]
    wait_until(
        lambda: (batch.read_namespaced_job("urgent", namespace).status.succeeded or 0) == 1,
        180,
        "the urgent Job to run and finish",
    )
    done = wait_until(lambda: finished(k8s, namespace, name), 600, "the experiment")
    everything = {t["metadata"]["name"]: t for t in trials(k8s, namespace)}
    assert condition(done, "Succeeded")["status"] == "True", done["status"]  # type: ignore[index]
    assert len(everything) == GPUS, sorted(everything)
    assert all(t["status"]["state"] == "Succeeded" for t in everything.values())
    resumed = everything[victim]["status"]["metrics"]
    others = [t["status"]["metrics"] for n, t in everything.items() if n != victim]
    print(f"{victim} continued from epoch {resumed['start_epoch']} (checkpoint {preempted_at})")
    assert resumed["start_epoch"] >= max(preempted_at, 2), resumed
    assert all(m["start_epoch"] == 0 for m in others), others
    assert everything[victim]["status"].get("lostLeases", 0) == 0


def _holding_quota(k8s: client.ApiClient, namespace: str) -> list[str]:
    """The namespace's Workloads that hold or wait for quota: any not Finished."""
    return [
        w["metadata"]["name"]
        for w in _workloads(k8s, namespace)
        if not any(
            c["type"] == "Finished" and c["status"] == "True"
            for c in (w.get("status") or {}).get("conditions") or []
        )
    ]


def test_an_experiment_that_ends_or_is_deleted_leaves_no_job_or_workload_waiting(
    cluster: Cluster,
    k8s: client.ApiClient,
    namespace: str,
    queue: str,
    start_operator: Callable[..., OperatorProcess],
) -> None:
    start_operator(namespace)
    batch = client.BatchV1Api(k8s)
    # Reaching its goal with the first result ends an experiment while 4 of its trials wait.
    doc = _sleepy_experiment("goal", queue, 6, ["python", "-c", SLEEPY_TRAINER])
    doc["spec"]["budget"]["goal"] = 0.0
    kubectl(cluster.bin_dir, "apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(doc))
    done = wait_until(lambda: finished(k8s, namespace, "goal"), 120, "the goal to end it")
    wait_until(
        lambda: (
            not batch.list_namespaced_job(namespace).items and not _holding_quota(k8s, namespace)
        ),
        60,
        "no Job and no Workload holding quota after the experiment ended",
    )
    stopped = [t for t in trials(k8s, namespace) if t["status"]["state"] == "Stopped"]
    print(f"goal reached: {done['status']['trials']}; {len(stopped)} trials stopped waiting")
    assert len(stopped) >= 3, done["status"]["trials"]

    doc = _sleepy_experiment("deleted", queue, 4, ["python", "-c", "import time; time.sleep(300)"])
    doc["spec"]["trial"]["timeoutSeconds"] = 600
    kubectl(cluster.bin_dir, "apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(doc))

    def admitted_and_waiting() -> bool:
        workloads = _workloads(k8s, namespace)
        admitted = [w for w in workloads if (w.get("status") or {}).get("admission")]
        return len(workloads) == 4 and len(admitted) == GPUS

    wait_until(admitted_and_waiting, 120, "2 admitted and 2 waiting Workloads")
    kubectl(cluster.bin_dir, "delete", "nasx", "deleted", "-n", namespace)
    started = time.monotonic()
    wait_until(
        lambda: not batch.list_namespaced_job(namespace).items and not _workloads(k8s, namespace),
        120,
        "no Job and no Workload left",
    )
    print(f"deleted experiment's Jobs and Workloads gone in {time.monotonic() - started:.1f} s")
