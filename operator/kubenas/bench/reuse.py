"""What trial reuse saves in a cluster: one experiment run twice on a fresh dev cluster by this
checkout's operator, once with a Job per trial run and once with ``trial.reuse`` (worker pods),
side by side (``kubenas bench reuse``).

The experiment's search is kept as written (its final stage and baselines are dropped: they
would be timed alike in both runs). What is compared: the wall time from ``kubectl apply`` to
Succeeded, the trials' own time (lease or container start to result) and the pods used.
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

from kubenas.api.trial import from_rfc3339
from kubenas.bench.operator import OperatorProcess, apply_crds, dev_cluster, make_namespace
from kubenas.bench.table import side_by_side
from kubenas.k8s.settings import EXPERIMENTS, GROUP, LABEL_EXPERIMENT, TRIALS, VERSION


@dataclass(frozen=True)
class RunFigures:
    label: str
    trials: int
    wall_seconds: float
    mean_trial_seconds: float
    pods: int
    best_trial: str | None
    best_objective: float | None

    @property
    def trials_per_minute(self) -> float:
        return self.trials / self.wall_seconds * 60 if self.wall_seconds else 0.0


def bench_experiment(
    doc: dict[str, Any], name: str, trials: int, parallel: int, per_pod: int | None, root: Path
) -> dict[str, Any]:
    """The experiment as benchmarked: its search only, ``trials`` of them, ``parallel`` at a
    time, checkpoints under ``root``, with trial reuse when ``per_pod`` is given."""
    doc = copy.deepcopy(doc)
    doc["metadata"] = {"name": name}
    spec = doc["spec"]
    for stage in ("final", "baselines"):
        spec.pop(stage, None)
    spec["budget"] = {**spec.get("budget", {}), "maxTrials": trials, "parallelTrials": parallel}
    spec["trial"]["checkpointDir"] = str(root / name)
    spec["trial"].pop("reuse", None)  # the experiment's own setting gives way to the bench's
    if per_pod is not None:
        spec["trial"]["reuse"] = {"maxTrialsPerPod": per_pod}
    return doc


def figures_of(
    label: str,
    experiment: dict[str, Any],
    trials: list[dict[str, Any]],
    pods: int,
    wall_seconds: float,
) -> RunFigures:
    """A finished run's figures from its experiment and NASTrials as the API holds them."""
    spans = []
    for trial in trials:
        status = trial.get("status") or {}
        started = from_rfc3339(status.get("startTime"))
        ended = from_rfc3339(status.get("completionTime"))
        if started is not None and ended is not None:
            spans.append(ended - started)
    best = (experiment.get("status") or {}).get("bestTrial") or {}
    return RunFigures(
        label=label,
        trials=len(trials),
        wall_seconds=round(wall_seconds, 1),
        mean_trial_seconds=round(statistics.fmean(spans), 2) if spans else 0.0,
        pods=pods,
        best_trial=best.get("name"),
        best_objective=best.get("objective"),
    )


def _finished(experiment: dict[str, Any]) -> bool:
    return any(
        c.get("type") in ("Succeeded", "Failed") and c.get("status") == "True"
        for c in (experiment.get("status") or {}).get("conditions") or []
    )


def _run_one(
    api_client: client.ApiClient,
    kubectl: list[str],
    namespace: str,
    doc: dict[str, Any],
    label: str,
    timeout: float,
) -> RunFigures:
    name = doc["metadata"]["name"]
    custom, core = client.CustomObjectsApi(api_client), client.CoreV1Api(api_client)
    pods: set[str] = set()
    started = time.monotonic()
    subprocess.run(
        [*kubectl, "apply", "-n", namespace, "-f", "-"],
        input=yaml.safe_dump(doc),
        text=True,
        check=True,
        capture_output=True,
    )
    while True:
        listed = core.list_namespaced_pod(namespace, label_selector=f"{LABEL_EXPERIMENT}={name}")
        pods.update(p.metadata.name for p in listed.items)
        experiment = custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, EXPERIMENTS, name
        )
        if _finished(experiment):
            break
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{name} did not finish within {timeout:.0f} s")
        time.sleep(0.2)
    wall = time.monotonic() - started
    trials = custom.list_namespaced_custom_object(
        GROUP, VERSION, namespace, TRIALS, label_selector=f"{LABEL_EXPERIMENT}={name}"
    )["items"]
    return figures_of(label, experiment, trials, len(pods), wall)


def measure(
    experiment_file: Path, trials: int, parallel: int, per_pod: int, timeout: float
) -> list[RunFigures]:
    """Both runs, one after the other, on one fresh dev cluster and one operator."""
    source = yaml.safe_load(experiment_file.read_text())
    with tempfile.TemporaryDirectory(prefix="kubenas-bench-reuse-") as scratch:
        root = Path(scratch)
        with dev_cluster(root / "cluster", root / "audit.log") as cluster:
            env = {**os.environ, **cluster.env()}
            apply_crds(cluster, env, None)
            api_client = config.new_client_from_config(config_file=str(cluster.kubeconfig))
            namespace = make_namespace(api_client)
            operator = OperatorProcess(
                namespace,
                root / "operator.log",
                cluster.prometheus_url,
                cluster.pushgateway_url,
                None,
                env,
                lease_url=True,
            )
            kubectl = [str(cluster.bin_dir / "kubectl"), f"--kubeconfig={cluster.kubeconfig}"]
            try:
                operator.wait_ready()
                runs = []
                for label, name, reuse in (
                    ("a Job per trial", "jobs", None),
                    (f"reuse, {per_pod} per pod", "reused", per_pod),
                ):
                    doc = bench_experiment(source, name, trials, parallel, reuse, root)
                    print(f"... {label}: {trials} trials, {parallel} at a time", flush=True)
                    runs.append(_run_one(api_client, kubectl, namespace, doc, label, timeout))
                    print(json.dumps(asdict(runs[-1])), flush=True)
            finally:
                operator.stop()
    return runs


def format_table(runs: list[RunFigures]) -> str:
    """The runs side by side, and the reuse run's wall time as a ratio of the Job run's."""
    rows = [
        ("", *(r.label for r in runs)),
        ("trials", *(str(r.trials) for r in runs)),
        ("wall time, apply to Succeeded (s)", *(f"{r.wall_seconds:g}" for r in runs)),
        ("mean trial time, start to result (s)", *(f"{r.mean_trial_seconds:g}" for r in runs)),
        ("trials per minute", *(f"{r.trials_per_minute:.1f}" for r in runs)),
        ("pods", *(str(r.pods) for r in runs)),
        ("best trial", *(f"{r.best_trial} {r.best_objective}" for r in runs)),
    ]
    lines = [side_by_side(rows)]
    if len(runs) == 2 and runs[0].wall_seconds:
        ratio = runs[1].wall_seconds / runs[0].wall_seconds
        same = runs[0].best_objective == runs[1].best_objective
        lines.append(
            f"wall time ratio (reuse / a Job per trial): {ratio:.3f}; "
            f"same best objective: {'yes' if same else 'no'}"
        )
    return "\n".join(lines)
