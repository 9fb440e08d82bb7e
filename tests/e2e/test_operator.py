"""The operator against the real dev control plane: kubectl apply an experiment, the search runs
as Jobs, the best architecture lands in the status; kills, outages and deletion lose nothing."""

from __future__ import annotations

import contextlib
import json
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from kubenas_devcluster import Cluster

from .operator_harness import (
    CONTRACT_TRAINER,
    REPO,
    OperatorProcess,
    condition,
    experiment,
    finished,
    kubectl,
    mount_volume,
    trials,
    wait_until,
)

pytestmark = pytest.mark.e2e


def _quick_experiment(name: str, folder: Path, **spec: Any) -> dict[str, Any]:
    """The contract trainer's experiment; its pods write checkpoints and a ledger of trained
    epochs into ``folder`` (the e2e ``volume``)."""
    doc: dict[str, Any] = {
        "apiVersion": "kubenas.io/v1alpha1",
        "kind": "NASExperiment",
        "metadata": {"name": name},
        "spec": {
            "searchSpace": {
                "family": "custom",
                "parameters": [
                    {"name": "quality", "type": "int", "low": 1, "high": 9},
                    {"name": "width", "type": "categorical", "choices": [8, 16, 32, 64]},
                ],
            },
            "strategy": {"name": "random"},
            "seed": 3,
            "budget": {"maxTrials": 8, "parallelTrials": 2},
            "trial": {
                "dataset": "none:",
                "command": ["python", str(folder / CONTRACT_TRAINER.name)],
                "checkpointDir": str(folder / "checkpoints"),
                "timeoutSeconds": 120,
                "env": [{"name": "LEDGER", "value": str(folder / "ledger.txt")}],
                "resources": {"limits": {"nvidia.com/gpu": 1}},
            },
        },
    }
    mount_volume(doc["spec"]["trial"], folder)
    for key, value in spec.items():
        doc["spec"][key] = value
    return doc


def _apply(cluster: Cluster, namespace: str, doc: dict[str, Any]) -> None:
    kubectl(cluster.bin_dir, "apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(doc))


def _wait_for(
    cluster: Cluster, namespace: str, kind: str, name: str, seconds: int
) -> subprocess.CompletedProcess[str]:
    """``kubectl wait --for=condition=KIND nasx/NAME``, as a user or a pipeline waits."""
    return kubectl(
        cluster.bin_dir,
        "wait",
        "-n",
        namespace,
        f"--for=condition={kind}",
        f"nasx/{name}",
        f"--timeout={seconds}s",
        check=False,
        timeout=seconds + 60,
    )


def _ledger(folder: Path) -> dict[str, list[int]]:
    epochs: dict[str, list[int]] = {}
    path = folder / "ledger.txt"
    for line in path.read_text().splitlines() if path.exists() else []:
        trial, epoch = line.split()
        epochs.setdefault(trial, []).append(int(epoch))
    return epochs


def test_killed_operator_loses_and_duplicates_nothing(
    cluster: Cluster,
    k8s: client.ApiClient,
    namespace: str,
    start_operator: Callable[..., OperatorProcess],
    volume: Path,
) -> None:
    operator = start_operator(namespace)
    doc = _quick_experiment(
        "survivor", volume, budget={"maxTrials": 12, "parallelTrials": 2}, fidelity={"max": 3}
    )
    _apply(cluster, namespace, doc)
    rng = random.Random(11)
    for _ in range(3):
        wait_until(lambda: len(trials(k8s, namespace)) >= 2, 120, "trials to appear")
        time.sleep(rng.uniform(0.5, 4.0))
        operator.kill()
        time.sleep(rng.uniform(0.0, 2.0))
        operator.start()
    done = wait_until(lambda: finished(k8s, namespace, "survivor"), 300, "the experiment to finish")
    states = {
        t["metadata"]["name"]: (t["status"]["state"], t["status"].get("message"))
        for t in trials(k8s, namespace)
    }
    assert condition(done, "Succeeded")["status"] == "True", (done["status"], states)  # type: ignore[index]
    names = sorted(t["metadata"]["name"] for t in trials(k8s, namespace))
    assert names == [f"survivor-{i:04d}" for i in range(12)]
    assert all(state == "Succeeded" for state, _ in states.values()), states
    ledger = _ledger(volume)
    assert sorted(ledger) == names
    assert all(epochs == [1, 2, 3] for epochs in ledger.values()), "each trial trained exactly once"
    assert done["status"]["trials"]["done"] == 12 and operator.starts == 4
    sources = {t["status"].get("metricsSource") for t in trials(k8s, namespace)}
    assert sources <= {"prometheus", "termination-message"}, sources

    shown = subprocess.run(
        [sys.executable, "-m", "kubenas.cli", "get", "survivor", "-n", namespace],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "Succeeded" in shown and "12 done of 12" in shown and "survivor-0011" in shown
    best = json.loads(
        subprocess.run(
            [
                sys.executable,
                "-m",
                "kubenas.cli",
                "best",
                "survivor",
                "-n",
                namespace,
                "-o",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    )
    assert best["name"] == done["status"]["bestTrial"]["name"]
    assert set(best["architecture"]) == {"quality", "width"}


class _Proxy:
    """A TCP relay in front of the real Prometheus, so the test can make it unreachable for the
    operator mid-run without stopping the Prometheus the rest of the suite shares. Stopping it
    is an outage as a client sees one: open (kept-alive) connections drop, new ones are refused."""

    def __init__(self, target_url: str) -> None:
        host_port = target_url.split("//", 1)[1].rstrip("/")
        host, port = host_port.split(":")
        self.target = (host, int(port))
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.relayed: list[socket.socket] = []
        self.stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            if self.stopped.is_set():
                conn.close()
                return
            upstream = socket.create_connection(self.target)
            self.relayed += [conn, upstream]
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        # A plain close() leaves a thread blocked in accept() accepting one more connection.
        self.stopped.set()
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()
        for s in self.relayed:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def test_prometheus_outage_falls_back_to_termination_messages(
    cluster: Cluster,
    k8s: client.ApiClient,
    namespace: str,
    start_operator: Callable[..., OperatorProcess],
    volume: Path,
) -> None:
    proxy = _Proxy(cluster.prometheus_url)
    start_operator(namespace, prometheus_url=proxy.url)
    _apply(cluster, namespace, _quick_experiment("outage", volume, fidelity={"max": 2}))
    wait_until(
        lambda: (
            sum((t.get("status") or {}).get("state") == "Succeeded" for t in trials(k8s, namespace))
            >= 2
        ),
        120,
        "two trials to finish",
    )
    proxy.stop()
    time.sleep(2)  # a pass that asked Prometheus just before the outage has written its result
    recorded = {
        t["metadata"]["name"]
        for t in trials(k8s, namespace)
        if (t.get("status") or {}).get("state") == "Succeeded"
    }
    done = wait_until(lambda: finished(k8s, namespace, "outage"), 300, "the experiment to finish")
    assert condition(done, "Succeeded")["status"] == "True"  # type: ignore[index]
    everything = trials(k8s, namespace)
    assert len(everything) == 8
    metrics = condition(done, "MetricsAvailable")
    assert (
        metrics is not None
        and metrics["status"] == "False"
        and metrics["reason"] == "PrometheusUnreachable"
    )
    later = {
        t["metadata"]["name"]: t["status"].get("metricsSource")
        for t in everything
        if t["metadata"]["name"] not in recorded
    }
    assert later, "some trials finished during the outage"
    assert set(later.values()) == {"termination-message"}, later
    events = client.CoreV1Api(k8s).list_namespaced_event(namespace).items
    assert any(e.reason == "PrometheusUnreachable" for e in events)


def test_asha_promotes_from_checkpoints_and_saves_epochs(
    cluster: Cluster,
    k8s: client.ApiClient,
    namespace: str,
    start_operator: Callable[..., OperatorProcess],
    volume: Path,
) -> None:
    start_operator(namespace)
    doc = _quick_experiment(
        "asha",
        volume,
        budget={"maxTrials": 9, "parallelTrials": 2},
        fidelity={"min": 1, "max": 9, "scheduler": "asha", "reductionFactor": 3},
    )
    _apply(cluster, namespace, doc)
    done = wait_until(
        lambda: finished(k8s, namespace, "asha"), 400, "the ASHA experiment to finish"
    )
    assert condition(done, "Succeeded")["status"] == "True"  # type: ignore[index]
    everything = trials(k8s, namespace)
    promoted = [t for t in everything if t["status"]["fidelity"] > 1]
    assert promoted, "the best third of rung 1 moves up"
    ledger = _ledger(volume)
    for t in promoted:
        name = t["metadata"]["name"]
        # resumed from the checkpoint: epochs continue where the lower rung stopped, no repeats
        assert ledger[name] == list(range(1, t["status"]["fidelity"] + 1))
        assert t["status"]["resumedFrom"].endswith(f"{name}/checkpoint.pt")
    total = sum(len(v) for v in ledger.values())
    ratio = total / (9 * 9)
    print(
        f"ASHA trained {total} epochs for 9 trials of up to 9 epochs: {ratio:.2f} of full training"
    )
    assert ratio < 0.6
    assert done["status"]["bestTrial"]["fidelity"] == 9
    jobs = client.BatchV1Api(k8s).list_namespaced_job(namespace).items
    assert jobs == [], "recorded runs leave no Job behind"


def test_impossible_experiment_ends_failed(
    cluster: Cluster,
    k8s: client.ApiClient,
    namespace: str,
    start_operator: Callable[..., OperatorProcess],
    volume: Path,
) -> None:
    start_operator(namespace)
    doc = _quick_experiment("hostnet", volume)
    doc["spec"]["trial"]["podTemplate"] = {"spec": {"hostNetwork": True}}
    _apply(cluster, namespace, doc)
    done = wait_until(lambda: finished(k8s, namespace, "hostnet"), 60, "the experiment to fail")
    failed = condition(done, "Failed")
    assert (
        failed is not None
        and failed["status"] == "True"
        and failed["reason"] == "PodTemplateNotAllowed"
    )
    assert "hostNetwork" in failed["message"]
    assert client.BatchV1Api(k8s).list_namespaced_job(namespace).items == []


def _pushgateway_groups(url: str, namespace: str, experiment_name: str) -> int:
    with urllib.request.urlopen(f"{url}/api/v1/metrics", timeout=5) as response:
        groups = json.load(response)["data"]
    return sum(
        g["labels"].get("namespace") == namespace
        and g["labels"].get("experiment") == experiment_name
        for g in groups
    )


def test_deleting_an_experiment_removes_everything_it_made(
    cluster: Cluster,
    k8s: client.ApiClient,
    namespace: str,
    start_operator: Callable[..., OperatorProcess],
    volume: Path,
) -> None:
    start_operator(namespace)
    doc = _quick_experiment(
        "doomed", volume, budget={"maxTrials": 6, "parallelTrials": 2}, fidelity={"max": 60}
    )
    _apply(cluster, namespace, doc)
    wait_until(
        lambda: _pushgateway_groups(cluster.pushgateway_url, namespace, "doomed") >= 1,
        120,
        "a pushed metric",
    )
    kubectl(
        cluster.bin_dir, "delete", "-n", namespace, "nasx/doomed", "--wait=true", "--timeout=120s"
    )
    batch, core = client.BatchV1Api(k8s), client.CoreV1Api(k8s)
    wait_until(lambda: not trials(k8s, namespace), 60, "trials to go")
    wait_until(lambda: not batch.list_namespaced_job(namespace).items, 60, "jobs to go")
    wait_until(lambda: not core.list_namespaced_pod(namespace).items, 60, "pods to go")
    # The operator's sweep removes the groups once no pod of the experiment can push again.
    wait_until(
        lambda: _pushgateway_groups(cluster.pushgateway_url, namespace, "doomed") == 0,
        60,
        "Pushgateway groups to go",
    )


def test_final_stage_waits_for_approval_then_retrains_beside_the_baseline(
    cluster: Cluster,
    k8s: client.ApiClient,
    namespace: str,
    start_operator: Callable[..., OperatorProcess],
    volume: Path,
    tmp_path: Path,
) -> None:
    start_operator(namespace)
    doc = _quick_experiment(
        "gated",
        volume,
        budget={"maxTrials": 4, "parallelTrials": 2},
        final={"topK": 1, "seeds": 2, "fidelity": 2, "approval": "manual"},
        baselines=[{"name": "hand", "architecture": {"quality": 5, "width": 64}}],
    )
    _apply(cluster, namespace, doc)
    waited = _wait_for(cluster, namespace, "AwaitingApproval", "gated", 180)
    assert waited.returncode == 0, waited.stderr
    paused = experiment(k8s, namespace, "gated")
    assert paused["status"]["final"]["state"] == "AwaitingApproval"
    assert paused["status"]["final"]["finalists"] == [paused["status"]["bestTrial"]["name"]]
    assert {t["spec"]["role"] for t in trials(k8s, namespace)} == {"candidate"}
    assert condition(paused, "Reconciling")["status"] == "False"  # type: ignore[index]

    approved = subprocess.run(
        [sys.executable, "-m", "kubenas.cli", "approve", "gated", "-n", namespace],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert approved.returncode == 0, approved.stderr
    waited = _wait_for(cluster, namespace, "Succeeded", "gated", 180)
    assert waited.returncode == 0, waited.stderr
    done = experiment(k8s, namespace, "gated")
    assert condition(done, "AwaitingApproval")["status"] == "False"  # type: ignore[index]
    roles = Counter(t["spec"]["role"] for t in trials(k8s, namespace))
    assert roles == {"candidate": 4, "final": 2, "baseline": 2}
    finals = kubectl(
        cluster.bin_dir, "get", "nast", "-n", namespace, "-l", "kubenas.io/role=final", "-o", "name"
    ).stdout.split()
    assert len(finals) == 2
    final = done["status"]["final"]
    assert final["state"] == "Succeeded" and [c["baseline"] for c in final["comparison"]] == [
        "hand"
    ]
    assert {n["kind"]: n["seeds"] for n in final["networks"]} == {"nas": 2, "baseline": 2}
    shown = subprocess.run(
        [sys.executable, "-m", "kubenas.cli", "get", "gated", "-n", namespace],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "vs baseline hand" in shown and "baseline " in shown
    page = tmp_path / "gated.html"
    reported = subprocess.run(
        [sys.executable, "-m", "kubenas.cli", "report", "nasx/gated", "-n", namespace, "-o", page],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert reported.returncode == 0, reported.stderr
    html = page.read_text()
    assert "Searched networks vs baselines" in html and "hand" in html


@pytest.mark.slow
def test_digits_example_runs_as_written(
    cluster: Cluster,
    k8s: client.ApiClient,
    namespace: str,
    start_operator: Callable[..., OperatorProcess],
    volume: Path,
    tmp_path: Path,
) -> None:
    start_operator(namespace)
    doc = yaml.safe_load((REPO / "examples" / "digits-cell.yaml").read_text())
    spec = doc["spec"]
    # As written, on a volume for its checkpoints and exports as docs/operate.md sets one up.
    spec["trial"]["checkpointDir"] = str(volume / "checkpoints")
    mount_volume(spec["trial"], volume)
    peak = {"running": 0}
    seen_gpu_requests: set[str] = set()
    stop = threading.Event()

    def watch_pods() -> None:
        core = client.CoreV1Api(k8s)
        while not stop.is_set():
            pods = core.list_namespaced_pod(namespace).items
            running = [p for p in pods if p.status.phase == "Running"]
            peak["running"] = max(peak["running"], len(running))
            for p in pods:
                limits = p.spec.containers[0].resources.limits or {}
                seen_gpu_requests.add(str(limits.get("nvidia.com/gpu")))
            time.sleep(0.3)

    watcher = threading.Thread(target=watch_pods, daemon=True)
    watcher.start()
    _apply(cluster, namespace, doc)
    waited = _wait_for(cluster, namespace, "Succeeded", "digits-cell", 1500)
    stop.set()
    watcher.join()
    assert waited.returncode == 0, waited.stderr
    done = experiment(k8s, namespace, "digits-cell")
    best = done["status"]["bestTrial"]
    print(f"digits-cell on the cluster: best {best['name']} {best['metrics']}")
    # The search's best was trained 5 epochs on one seed; what a user takes away is the final
    # stage's retrained network, judged over its seeds.
    assert best["metrics"]["test_accuracy"] >= 0.95
    roles = Counter(t["spec"]["role"] for t in trials(k8s, namespace))
    final = spec["final"]
    assert roles == {
        "candidate": spec["budget"]["maxTrials"],
        "final": final["topK"] * final["seeds"],
        "baseline": len(spec["baselines"]) * final["seeds"],
    }
    # The final stage: every network on every seed, NAS against the baseline, a checked export.
    results = done["status"]["final"]
    print(f"digits-cell final stage: {results['networks']} {results['comparison']}")
    assert results["state"] == "Succeeded" and len(results["networks"]) == final["topK"] + 1
    assert all(n["seeds"] == final["seeds"] for n in results["networks"])
    assert [c["baseline"] for c in results["comparison"]] == ["resnet"]
    chosen = next(n for n in results["networks"] if n["name"] == results["best"])
    assert chosen["metrics"]["test_accuracy"]["mean"] >= 0.97
    exported = Path(results["export"])
    assert json.loads((exported / "export.json").read_text())["formats"]
    assert (exported / "model.onnx").stat().st_size > 0
    export = ["export", "nasx/digits-cell", "-n", namespace, "-o", str(tmp_path / "digits.onnx")]
    copied = subprocess.run(
        [sys.executable, "-m", "kubenas.cli", *export],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert copied.returncode == 0, copied.stderr
    assert (tmp_path / "digits.onnx").read_bytes() == (exported / "model.onnx").read_bytes()
    assert seen_gpu_requests == {"1"}
    assert 1 <= peak["running"] <= min(spec["budget"]["parallelTrials"], 2)


def test_a_trial_that_would_run_as_root_is_refused_by_the_operator_and_by_pod_security(
    cluster: Cluster,
    k8s: client.ApiClient,
    make_namespace: Callable[..., str],
    start_operator: Callable[..., OperatorProcess],
    tmp_path: Path,
) -> None:
    """Two guards: the operator's own policy refuses the template before any Job exists; an
    operator told to allow it (--allow-privileged-pods) still meets Pod Security admission in
    a namespace that enforces ``restricted``, which refuses the trial's pod."""
    root = {"spec": {"securityContext": {"runAsUser": 0}}}
    doc = _quick_experiment("rooted", tmp_path)
    doc["spec"]["trial"]["podTemplate"] = root

    guarded = make_namespace()
    start_operator(guarded)
    _apply(cluster, guarded, doc)
    done = wait_until(lambda: finished(k8s, guarded, "rooted"), 60, "the operator to refuse it")
    refused = condition(done, "Failed")
    assert refused is not None and refused["reason"] == "PodTemplateNotAllowed", done["status"]
    print(f"the operator: {refused['message']}")
    assert "spec.trial.podTemplate.spec.securityContext.runAsUser" in refused["message"]
    assert not client.BatchV1Api(k8s).list_namespaced_job(guarded).items, "no Job was made"

    admitted_by_psa = make_namespace()
    start_operator(admitted_by_psa, extra_args=("--allow-privileged-pods",))
    _apply(cluster, admitted_by_psa, doc)
    core = client.CoreV1Api(k8s)

    def pod_security_refusal() -> str | None:
        events = core.list_namespaced_event(admitted_by_psa).items
        return next(
            (
                e.message
                for e in events
                if e.reason == "FailedCreate" and "PodSecurity" in e.message
            ),
            None,
        )

    message = wait_until(pod_security_refusal, 60, "Pod Security to refuse the trial's pod")
    print(f"Pod Security admission: {message}")
    assert 'violates PodSecurity "restricted:latest"' in message and "runAsUser=0" in message
    assert not core.list_namespaced_pod(admitted_by_psa).items, "no trial pod was admitted"
