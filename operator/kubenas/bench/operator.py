"""How fast the operator turns a finished trial into the next one, on a live cluster.

Creates experiments whose trials finish at once (a one-line trainer that only writes its
termination message), watches Jobs, and measures from the moment a Job is reported complete to
the moment the next Job of the same experiment appears. Needs a running operator watching the
namespace and the CRDs installed; uses the cluster KUBECONFIG names.
"""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any

from kubernetes import client, watch

from kubenas.k8s.settings import EXPERIMENTS, GROUP, LABEL_EXPERIMENT, LABEL_MANAGED_BY, VERSION

INSTANT_TRAINER = (
    "import json, os; "
    "open(os.environ['KUBENAS_TERMINATION_MESSAGE_PATH'], 'w').write("
    "json.dumps({'metrics': {'val_accuracy': (hash(os.environ['KUBENAS_TRIAL']) % 1000) / 1000}}))"
)


@dataclass(frozen=True)
class OperatorFigures:
    experiments: int
    trials: int
    latencies: list[float]
    seconds: float

    @property
    def median(self) -> float:
        return statistics.median(self.latencies)

    @property
    def p95(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]

    @property
    def trials_per_minute(self) -> float:
        return self.trials / self.seconds * 60


def _experiment(name: str, trials: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "NASExperiment",
        "metadata": {"name": name},
        "spec": {
            "searchSpace": {
                "family": "custom",
                "parameters": [
                    {"name": "x", "type": "int", "low": 0, "high": 10_000},
                ],
            },
            "budget": {"maxTrials": trials, "parallelTrials": 1},
            "trial": {
                "dataset": "none:",
                "command": ["python", "-c", INSTANT_TRAINER],
                "timeoutSeconds": 60,
            },
        },
    }


def run(
    api_client: client.ApiClient, namespace: str, experiments: int, trials: int, timeout: float
) -> OperatorFigures:
    custom = client.CustomObjectsApi(api_client)
    batch = client.BatchV1Api(api_client)
    completed_at: dict[str, float] = {}
    created_at: dict[str, list[tuple[float, str]]] = {}
    stop = threading.Event()
    ready = threading.Event()

    def observe() -> None:
        w = watch.Watch()
        ready.set()
        try:
            for event in w.stream(
                batch.list_namespaced_job,
                namespace,
                label_selector=f"{LABEL_MANAGED_BY}=kubenas",
                timeout_seconds=int(timeout),
            ):
                if stop.is_set():
                    w.stop()
                    return
                record(event, time.monotonic())
        except Exception:
            if not stop.is_set():  # after the measurement, a torn-down namespace is expected
                raise

    def record(event: dict[str, Any], now: float) -> None:
        job = event["object"]
        experiment = str((job.metadata.labels or {}).get(LABEL_EXPERIMENT))
        name = job.metadata.name
        if event["type"] == "ADDED" and all(n != name for _, n in created_at.get(experiment, [])):
            created_at.setdefault(experiment, []).append((now, name))
        if (job.status.succeeded or 0) >= 1 and name not in completed_at:
            completed_at[name] = now

    watcher = threading.Thread(target=observe, daemon=True)
    watcher.start()
    ready.wait()
    names = [f"bench-{i:02d}" for i in range(experiments)]
    started = time.monotonic()
    for name in names:
        custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, EXPERIMENTS, _experiment(name, trials)
        )
    deadline = started + timeout
    while time.monotonic() < deadline:
        done = 0
        for name in names:
            obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, EXPERIMENTS, name)
            conditions = (obj.get("status") or {}).get("conditions") or []
            done += any(c["type"] == "Succeeded" and c["status"] == "True" for c in conditions)
        if done == len(names):
            break
        time.sleep(0.5)
    else:
        raise TimeoutError(f"experiments did not finish within {timeout:.0f}s")
    seconds = time.monotonic() - started
    stop.set()
    latencies = []
    for jobs in created_at.values():
        jobs.sort()
        for (_, previous), (next_created, _) in itertools.pairwise(jobs):
            if previous in completed_at:
                latencies.append(next_created - completed_at[previous])
    return OperatorFigures(experiments, experiments * trials, latencies, seconds)
