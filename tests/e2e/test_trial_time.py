"""Queue time is not run time: trials that wait for a GPU are Pending, not Running, and their
timeout counts from their container's start. Four parallel trials share one free GPU of the
dev cluster's node, so most of them wait longer than ``timeoutSeconds``; none times out, and
the status says how long they waited."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from kubernetes import client

from kubenas_devcluster import Cluster

from .operator_harness import OperatorProcess, condition, finished, kubectl, trials, wait_until

pytestmark = pytest.mark.e2e

RUN_SECONDS = 4
TIMEOUT_SECONDS = 10
# A trial that only sleeps and writes its result as the termination message (no Pushgateway),
# to the file the kubelet mounts at the pod's terminationMessagePath.
SLEEPY_TRAINER = (
    "import json, os, time; "
    f"time.sleep({RUN_SECONDS}); "
    "open('/dev/termination-log', 'w').write("
    "json.dumps({'metrics': {'val_accuracy': int(os.environ['KUBENAS_TRIAL'][-1]) / 10}}))"
)


def _hold_one_gpu(k8s: client.ApiClient, namespace: str, gpus: int) -> None:
    """A pod that keeps all but one of the node's GPUs, so trials get one GPU between them."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "gpu-holder"},
        "spec": {
            "restartPolicy": "Never",
            # Pod Security restricted, as the namespace enforces.
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "hold",
                    "image": "kubenas-trainer:0.1.0",
                    "command": ["python", "-c", "import time; time.sleep(3600)"],
                    "resources": {"limits": {"nvidia.com/gpu": str(gpus - 1)}},
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }
    core = client.CoreV1Api(k8s)
    core.create_namespaced_pod(namespace, pod)
    wait_until(
        lambda: core.read_namespaced_pod("gpu-holder", namespace).status.phase == "Running",
        120,
        "the GPU holder to run",
    )


def _node_gpus(k8s: client.ApiClient) -> int:
    (node,) = client.CoreV1Api(k8s).list_node().items
    return int(node.status.allocatable["nvidia.com/gpu"])


def test_trials_waiting_for_a_gpu_do_not_time_out_and_show_their_queue_time(
    cluster: Cluster,
    k8s: client.ApiClient,
    namespace: str,
    start_operator: Callable[..., OperatorProcess],
) -> None:
    _hold_one_gpu(k8s, namespace, _node_gpus(k8s))
    start_operator(namespace)
    doc: dict[str, Any] = {
        "apiVersion": "kubenas.io/v1alpha1",
        "kind": "NASExperiment",
        "metadata": {"name": "queued"},
        "spec": {
            "searchSpace": {
                "family": "custom",
                "parameters": [{"name": "width", "type": "int", "low": 1, "high": 64}],
            },
            "strategy": {"name": "random"},
            "budget": {"maxTrials": 4, "parallelTrials": 4},
            "trial": {
                "dataset": "none:",
                "command": ["python", "-c", SLEEPY_TRAINER],
                "timeoutSeconds": TIMEOUT_SECONDS,
                "resources": {"limits": {"nvidia.com/gpu": 1}},
            },
        },
    }
    kubectl(cluster.bin_dir, "apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(doc))
    batch = client.BatchV1Api(k8s)

    def queued_with_jobs() -> bool:
        pending = [
            t for t in trials(k8s, namespace) if t.get("status", {}).get("state") == "Pending"
        ]
        return len(pending) >= 2 and len(batch.list_namespaced_job(namespace).items) == 4

    wait_until(queued_with_jobs, 60, "trials Pending behind the GPU while their Jobs exist")
    done = wait_until(lambda: finished(k8s, namespace, "queued"), 240, "the experiment to finish")
    everything = trials(k8s, namespace)
    states = {
        t["metadata"]["name"]: (t["status"]["state"], t["status"].get("reason")) for t in everything
    }
    assert condition(done, "Succeeded")["status"] == "True", (done["status"], states)  # type: ignore[index]
    assert all(state == ("Succeeded", None) for state in states.values()), states
    waits = sorted(float(t["status"].get("queueSeconds") or 0) for t in everything)
    counts = done["status"]["trials"]
    print(f"4 trials on one GPU: waits {waits} s, timeoutSeconds {TIMEOUT_SECONDS}, {counts}")
    assert counts["queueSeconds"] > TIMEOUT_SECONDS, (counts, waits)
    assert waits[-1] > TIMEOUT_SECONDS - RUN_SECONDS, waits
    assert counts["meanQueueSeconds"] == pytest.approx(counts["queueSeconds"] / 4, abs=0.2)
    for t in everything:  # each trial's clock ran from its container's start, for its run only
        status = t["status"]
        assert status["metricsSource"] == "termination-message"
        assert "queuedAt" not in status and status["startTime"] <= status["completionTime"]
    metrics = condition(done, "MetricsAvailable")
    assert metrics is not None and (metrics["status"], metrics["reason"]) == (
        "True",
        "PrometheusReachable",
    )
    shown = subprocess.run(
        [sys.executable, "-m", "kubenas.cli", "get", "queued", "-n", namespace],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "trials waited" in shown and "waited " in shown, shown
