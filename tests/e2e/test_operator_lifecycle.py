"""The operator's life cycle on the real dev cluster: experiments carry no finalizer, so they
delete whether or not the operator runs; their Pushgateway groups are swept within a minute,
also those orphaned while the operator was down; kopf's liveness endpoint answers; an
experiment the API server can never accept ends Failed once, without a retry loop."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from kubenas_devcluster import Cluster

from .operator_harness import (
    CONTRACT_TRAINER,
    OperatorProcess,
    condition,
    experiment,
    finished,
    kubectl,
    mount_volume,
    wait_until,
)

pytestmark = pytest.mark.e2e


def _experiment(name: str, folder: Path, **spec: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "kubenas.io/v1alpha1",
        "kind": "NASExperiment",
        "metadata": {"name": name},
        "spec": {
            "searchSpace": {
                "family": "custom",
                "parameters": [{"name": "quality", "type": "int", "low": 1, "high": 9}],
            },
            "strategy": {"name": "random"},
            "seed": 3,
            "budget": {"maxTrials": 4, "parallelTrials": 2},
            "fidelity": {"max": 60},
            "trial": {
                "dataset": "none:",
                "command": ["python", str(folder / CONTRACT_TRAINER.name)],
                "checkpointDir": str(folder / name),
                "timeoutSeconds": 300,
                "env": [{"name": "EPOCH_SECONDS", "value": "1"}],
            },
        },
    }
    mount_volume(doc["spec"]["trial"], folder)
    doc["spec"].update(spec)
    return doc


def _apply(cluster: Cluster, namespace: str, doc: dict[str, Any]) -> None:
    kubectl(cluster.bin_dir, "apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(doc))


def _groups(url: str, namespace: str, experiment_name: str) -> list[dict[str, str]]:
    with urllib.request.urlopen(f"{url}/api/v1/metrics", timeout=5) as response:
        groups = json.load(response)["data"]
    return [
        g["labels"]
        for g in groups
        if g["labels"].get("namespace") == namespace
        and g["labels"].get("experiment") == experiment_name
    ]


def _push(url: str, namespace: str, experiment_name: str, trial: str) -> None:
    """A group as a trainer pushes it."""
    path = f"job/kubenas-trial/namespace/{namespace}/experiment/{experiment_name}/trial/{trial}"
    request = urllib.request.Request(
        f"{url}/metrics/{path}", data=b"kubenas_e2e_orphan 1\n", method="PUT"
    )
    with urllib.request.urlopen(request, timeout=5):
        pass


def test_deleting_a_running_experiment_sweeps_its_groups_within_a_minute(
    cluster: Cluster,
    namespace: str,
    start_operator: Callable[..., OperatorProcess],
    volume: Path,
) -> None:
    start_operator(namespace)
    _apply(cluster, namespace, _experiment("doomed", volume))
    wait_until(
        lambda: _groups(cluster.pushgateway_url, namespace, "doomed"), 120, "a pushed metric"
    )
    body = json.loads(
        kubectl(cluster.bin_dir, "get", "-n", namespace, "nasx/doomed", "-o", "json").stdout
    )
    assert not body["metadata"].get("finalizers"), body["metadata"]
    deleted = time.monotonic()
    kubectl(cluster.bin_dir, "delete", "-n", namespace, "nasx/doomed", "--timeout=30s")
    wait_until(
        lambda: not _groups(cluster.pushgateway_url, namespace, "doomed"),
        60,
        "the deleted experiment's Pushgateway groups to go",
    )
    print(f"\ngroups gone {time.monotonic() - deleted:.1f} s after the delete")


def test_groups_orphaned_while_the_operator_was_down_are_swept(
    cluster: Cluster,
    k8s: client.ApiClient,
    namespace: str,
    start_operator: Callable[..., OperatorProcess],
    volume: Path,
) -> None:
    """Groups of an experiment and of a trial that no longer exist go; the groups of a
    running experiment's trials stay."""
    operator = start_operator(namespace)
    _apply(cluster, namespace, _experiment("alive", volume))
    wait_until(lambda: _groups(cluster.pushgateway_url, namespace, "alive"), 120, "a push")
    operator.kill()
    _push(cluster.pushgateway_url, namespace, "ghost", "ghost-0000")
    _push(cluster.pushgateway_url, namespace, "alive", "alive-9999")
    _push(cluster.pushgateway_url, "another-namespace", "ghost", "ghost-0000")
    operator.start()
    wait_until(
        lambda: (
            not _groups(cluster.pushgateway_url, namespace, "ghost")
            and {"alive-9999"}.isdisjoint(
                g["trial"] for g in _groups(cluster.pushgateway_url, namespace, "alive")
            )
        ),
        60,
        "the orphaned groups to go",
    )
    live = {g["trial"] for g in _groups(cluster.pushgateway_url, namespace, "alive")}
    running = {
        p.metadata.labels["kubenas.io/trial"]
        for p in client.CoreV1Api(k8s).list_namespaced_pod(namespace).items
        if p.status.phase == "Running"
    }
    assert running and running <= live, (running, live)
    # Another namespace is another operator's: left alone.
    assert _groups(cluster.pushgateway_url, "another-namespace", "ghost")


def test_liveness_endpoint_answers_from_the_probe(
    namespace: str, start_operator: Callable[..., OperatorProcess]
) -> None:
    operator = start_operator(namespace)
    url = f"http://127.0.0.1:{operator.health_port}/healthz"

    def answer() -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.load(response)  # type: ignore[no-any-return]
        except OSError:
            return None

    health = wait_until(answer, 60, "kopf's /healthz")
    assert health["reconcile-loops"] == {"experiments": 0, "passes": 0}
    operator.stop()
    assert answer() is None, "a stopped operator must fail its probe"


def test_a_job_the_api_refuses_fails_the_experiment_once(
    cluster: Cluster,
    k8s: client.ApiClient,
    namespace: str,
    start_operator: Callable[..., OperatorProcess],
    volume: Path,
) -> None:
    """Half a GPU passes the experiment's schema but no Job may ask for it (422): permanent,
    so the experiment is Failed with the API server's reason, and stays so."""
    operator = start_operator(namespace)
    doc = _experiment("halfgpu", volume)
    doc["spec"]["trial"]["resources"] = {"limits": {"nvidia.com/gpu": "500m"}}
    _apply(cluster, namespace, doc)
    done = wait_until(lambda: finished(k8s, namespace, "halfgpu"), 60, "the experiment to fail")
    failed = condition(done, "Failed")
    assert failed is not None and failed["reason"] == "CannotReconcile", failed
    assert "422" in failed["message"], failed["message"]
    time.sleep(5)
    again = condition(experiment(k8s, namespace, "halfgpu"), "Failed")
    assert again == failed, "no pass overwrote the failure"
    log = operator.log.read_text()
    assert log.count("cannot succeed") == 1, log[-3000:]
