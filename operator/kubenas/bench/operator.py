"""How much the operator costs per trial, on a live cluster.

Creates experiments whose trials finish at once (a one-line trainer that only writes its
termination message, no torch), so what is measured is the operator: from the moment a Job is
reported complete to the moment the next Job of its experiment appears; the API requests it
makes (from the API server's audit log, by user agent); its reconcile passes (its own
``/metrics``); its CPU time and peak RSS (``/proc``); and the largest object it leaves in the
API. :func:`run` drives one namespace with a running operator; :func:`measure` starts a dev
cluster and an operator process itself (``kubenas bench operator``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

from kubenas.bench.table import side_by_side
from kubenas.k8s.settings import (
    EXPERIMENTS,
    GROUP,
    LABEL_EXPERIMENT,
    LABEL_MANAGED_BY,
    TRIALS,
    VERSION,
)

# Writes its result where the contract's reporter does: the termination message path the
# runtime names, else the kubelet's default.
INSTANT_TRAINER = (
    "import json, os; "
    "open(os.environ.get('KUBENAS_TERMINATION_MESSAGE_PATH', '/dev/termination-log'), 'w')"
    ".write("
    "json.dumps({'metrics': {'val_accuracy': (hash(os.environ['KUBENAS_TRIAL']) % 1000) / 1000}}))"
)
DRIVER_AGENT = "kubenas-bench"
# Who the operator is in the audit log: our client, kopf's, or (an older operator) the
# generated client's default. The driver announces itself as DRIVER_AGENT.
OPERATOR_AGENTS = ("kubenas-operator", "kopf/", "OpenAPI-Generator/")
REPO = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class OperatorFigures:
    experiments: int
    trials: int
    latencies: list[float]
    seconds: float
    completions: list[float] = field(default_factory=list)  # monotonic time of each completion

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


def _experiment(name: str, trials: int, parallel: int) -> dict[str, Any]:
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
            "budget": {"maxTrials": trials, "parallelTrials": parallel},
            "trial": {
                "dataset": "none:",
                "command": ["python", "-c", INSTANT_TRAINER],
                "timeoutSeconds": 120,
            },
        },
    }


def _hand_overs(completed: list[float], created: list[float]) -> list[float]:
    """Each completion paired with the first Job created after it and not yet paired (with
    parallel trials a completion frees one slot, which the next Job fills)."""
    latencies = []
    pending = sorted(created)
    i = 0
    for done in sorted(completed):
        while i < len(pending) and pending[i] < done:
            i += 1
        if i == len(pending):
            break
        latencies.append(pending[i] - done)
        i += 1
    return latencies


def run(
    api_client: client.ApiClient,
    namespace: str,
    experiments: int,
    trials: int,
    timeout: float,
    parallel: int = 1,
) -> OperatorFigures:
    """Create the experiments, wait until all succeeded, return the hand-over latencies."""
    custom = client.CustomObjectsApi(api_client)
    batch = client.BatchV1Api(api_client)
    completed_at: dict[str, tuple[str, float]] = {}
    created_at: dict[str, dict[str, float]] = {}
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
        if event["type"] == "ADDED":
            created_at.setdefault(experiment, {}).setdefault(name, now)
        if job.status and (job.status.succeeded or 0) >= 1 and name not in completed_at:
            completed_at[name] = (experiment, now)

    watcher = threading.Thread(target=observe, daemon=True)
    watcher.start()
    ready.wait()
    names = [f"bench-{i:03d}" for i in range(experiments)]
    started = time.monotonic()
    for name in names:
        custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, EXPERIMENTS, _experiment(name, trials, parallel)
        )
    deadline = started + timeout
    while time.monotonic() < deadline:
        listed = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, EXPERIMENTS)
        done = sum(
            any(
                c["type"] == "Succeeded" and c["status"] == "True"
                for c in (obj.get("status") or {}).get("conditions") or []
            )
            for obj in listed["items"]
        )
        if done == len(names):
            break
        time.sleep(1.0)
    else:
        raise TimeoutError(f"experiments did not finish within {timeout:.0f}s")
    seconds = time.monotonic() - started
    stop.set()
    latencies = []
    for experiment, jobs in created_at.items():
        done_here = [t for e, t in completed_at.values() if e == experiment]
        latencies += _hand_overs(done_here, list(jobs.values()))
    completions = sorted(t for _, t in completed_at.values())
    return OperatorFigures(experiments, experiments * trials, latencies, seconds, completions)


# -- the whole measurement: a dev cluster, an operator process, the figures --------------------


@dataclass
class ScaleFigures:
    """One run at one scale, everything the command prints."""

    label: str
    experiments: int
    trials: int
    median_ms: float
    p95_ms: float
    trials_per_minute: float
    passes: float
    reconcile_mean_ms: float
    cpu_seconds: float
    peak_rss_mb: float
    largest_object_kb: float
    requests: int
    requests_first_half: float
    requests_second_half: float
    by_verb: dict[str, int]

    @property
    def passes_per_trial(self) -> float:
        return self.passes / self.trials

    @property
    def cpu_per_trial(self) -> float:
        return self.cpu_seconds / self.trials

    @property
    def requests_per_trial(self) -> float:
        return self.requests / self.trials

    def row(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "experiments": self.experiments,
            "trials": self.trials,
            "median_ms": round(self.median_ms, 1),
            "p95_ms": round(self.p95_ms, 1),
            "trials_per_minute": round(self.trials_per_minute, 1),
            "passes_per_trial": round(self.passes_per_trial, 2),
            "reconcile_mean_ms": round(self.reconcile_mean_ms, 1),
            "cpu_seconds_per_trial": round(self.cpu_per_trial, 4),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "largest_object_kb": round(self.largest_object_kb, 1),
            "requests_per_trial": round(self.requests_per_trial, 2),
            "requests_per_trial_first_half": round(self.requests_first_half, 2),
            "requests_per_trial_second_half": round(self.requests_second_half, 2),
            "requests_by_verb": self.by_verb,
        }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def _sample(exposition: str, name: str) -> float:
    for line in exposition.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


class OperatorProcess:
    """``kubenas operator`` as a subprocess, from this checkout or another (``source``)."""

    def __init__(
        self,
        namespace: str,
        log: Path,
        prometheus_url: str,
        pushgateway_url: str,
        source: Path | None,
        env: dict[str, str],
        *,
        lease_url: bool = False,
    ) -> None:
        """``lease_url``: serve trial reuse to the dev cluster's pods (host processes)."""
        self.metrics_port = _free_port()
        argv = [
            sys.executable,
            "-m",
            "kubenas.cli",
            "operator",
            "--namespace",
            namespace,
            "--metrics-port",
            str(self.metrics_port),
            "--prometheus-url",
            prometheus_url,
            "--pushgateway-url",
            pushgateway_url,
        ]
        env = dict(env)
        if lease_url:
            argv += ["--lease-url", f"http://127.0.0.1:{self.metrics_port}"]
        if source is None:
            argv += ["--health-port", str(_free_port())]
        else:
            env["PYTHONPATH"] = os.pathsep.join(
                filter(None, [str(source / "operator"), env.get("PYTHONPATH")])
            )
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=source or REPO,
                env=env,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the operator exited with {self.process.returncode}")
            with contextlib.suppress(OSError):
                _scrape(self.metrics_port)
                return
            time.sleep(0.3)
        raise TimeoutError("the operator never served /metrics")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def _timestamp(raw: str) -> float:
    return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()


def _audited(audit_log: Path, namespace: str) -> list[tuple[float, str]]:
    """(time, verb) of each request the operator made (one per audit ID)."""
    seen: set[str] = set()
    requests = []
    with audit_log.open() as lines:
        for line in lines:
            if not any(f'"userAgent":"{agent}' in line for agent in OPERATOR_AGENTS):
                continue  # most lines: other components; skip them unparsed
            event = json.loads(line)
            agent = event.get("userAgent") or ""
            if not agent.startswith(OPERATOR_AGENTS) or event["auditID"] in seen:
                continue
            seen.add(event["auditID"])
            ref = event.get("objectRef") or {}
            if ref.get("namespace") not in (None, namespace):
                continue
            requests.append((_timestamp(event["requestReceivedTimestamp"]), event["verb"]))
    return requests


def _largest_object_kb(api_client: client.ApiClient, namespace: str) -> float:
    custom = client.CustomObjectsApi(api_client)
    largest = 0
    for plural in (EXPERIMENTS, TRIALS):
        listed = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
        for obj in listed["items"]:
            largest = max(largest, len(json.dumps(obj, separators=(",", ":"))))
    return largest / 1024


@contextlib.contextmanager
def dev_cluster(workdir: Path, audit_log: Path) -> Iterator[Any]:
    try:
        from kubenas_devcluster import Cluster
    except ImportError:
        sys.path.insert(0, str(REPO / "hack"))
        from kubenas_devcluster import Cluster
    # The node agent: instant trials as host processes, so the figures are the operator's
    # overhead rather than container start-up.
    cluster = Cluster.start(workdir, gpus=2, nodes=2, audit_log=audit_log, node_kind="agent")
    try:
        yield cluster
    finally:
        cluster.stop()


def apply_crds(cluster: Any, env: dict[str, str], source: Path | None) -> None:
    """The CRDs of the checkout whose operator runs (an older operator refuses newer fields)."""
    kubectl = str(cluster.bin_dir / "kubectl")
    subprocess.run(
        [kubectl, "apply", "--server-side", "-f", str((source or REPO) / "crds")],
        check=True,
        capture_output=True,
        env=env,
    )
    subprocess.run(
        [
            kubectl,
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/nasexperiments.kubenas.io",
            "crd/nastrials.kubenas.io",
        ],
        check=True,
        capture_output=True,
        env=env,
    )


def make_namespace(api_client: client.ApiClient) -> str:
    core = client.CoreV1Api(api_client)
    name = f"bench-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name}})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            core.read_namespaced_service_account("default", name)
            return name
        except client.exceptions.ApiException:
            time.sleep(0.3)
    raise TimeoutError(f"no default ServiceAccount in {name}")


def measure_one(
    label: str,
    experiments: int,
    trials: int,
    parallel: int,
    source: Path | None,
    workdir: Path,
    timeout: float,
) -> ScaleFigures:
    """A fresh dev cluster with an audit log, one operator (this checkout's, or ``source``'s),
    the experiments run to the end, and the figures."""
    audit_log = workdir / "audit.log"
    with dev_cluster(workdir / "cluster", audit_log) as cluster:
        env = {**os.environ, **cluster.env()}
        apply_crds(cluster, env, source)
        api_client = config.new_client_from_config(config_file=str(cluster.kubeconfig))
        api_client.user_agent = DRIVER_AGENT
        namespace = make_namespace(api_client)
        operator = OperatorProcess(
            namespace,
            workdir / "operator.log",
            cluster.prometheus_url,
            cluster.pushgateway_url,
            source,
            env,
        )
        try:
            operator.wait_ready()
            time.sleep(2.0)  # the first listings
            cpu_before = _cpu_seconds(operator.pid)
            wall_start = time.time()
            mono_start = time.monotonic()
            figures = run(api_client, namespace, experiments, trials, timeout, parallel)
            cpu = _cpu_seconds(operator.pid) - cpu_before
            scraped = _scrape(operator.metrics_port)
            rss = _peak_rss_mb(operator.pid)
            largest = _largest_object_kb(api_client, namespace)
        finally:
            operator.stop()
        time.sleep(1.0)  # the audit backend flushes
        requests = [(t, v) for t, v in _audited(audit_log, namespace) if t >= wall_start - 1]
    # Requests per trial in the first and the second half of the trials' completions: flat
    # when the cost of a trial does not grow with the trials already done.
    offset = wall_start - mono_start
    half = len(figures.completions) // 2
    split = figures.completions[half] + offset if figures.completions else wall_start
    first = sum(t < split for t, _ in requests)
    second = len(requests) - first
    passes = _sample(scraped, "kubenas_reconcile_duration_seconds_count")
    seconds = _sample(scraped, "kubenas_reconcile_duration_seconds_sum")
    return ScaleFigures(
        label=label,
        experiments=experiments,
        trials=figures.trials,
        median_ms=figures.median * 1000,
        p95_ms=figures.p95 * 1000,
        trials_per_minute=figures.trials_per_minute,
        passes=passes,
        reconcile_mean_ms=seconds / passes * 1000 if passes else 0.0,
        cpu_seconds=cpu,
        peak_rss_mb=rss,
        largest_object_kb=largest,
        requests=len(requests),
        requests_first_half=first / max(1, half),
        requests_second_half=second / max(1, len(figures.completions) - half),
        by_verb=dict(Counter(v for _, v in requests)),
    )


TARGETS = (
    ("median_ms", 150.0, "completion -> next Job median (ms)"),
    ("p95_ms", 500.0, "completion -> next Job p95 (ms)"),
    ("passes_per_trial", 4.0, "reconcile passes per trial"),
    ("cpu_seconds_per_trial", 0.1, "operator CPU-seconds per trial"),
    ("peak_rss_mb", 300.0, "operator peak RSS (MB)"),
    ("largest_object_kb", 100.0, "largest NASExperiment/NASTrial (KB)"),
)


def format_table(rows: list[dict[str, Any]]) -> str:
    """Rows side by side, one column per run, the target beside each figure."""
    header = [""]
    header += [f"{r['label']} {r['experiments']}x{r['trials'] // r['experiments']}" for r in rows]
    lines = [header]
    for key, target, what in TARGETS:
        lines.append([f"{what} [<= {target:g}]", *(f"{r[key]:g}" for r in rows)])
    for key, what in (
        ("requests_per_trial", "API requests per trial (operator)"),
        ("requests_per_trial_first_half", "  ... in the first half of the trials"),
        ("requests_per_trial_second_half", "  ... in the second half"),
        ("trials_per_minute", "trials per minute"),
        ("reconcile_mean_ms", "mean reconcile pass (ms)"),
    ):
        lines.append([what, *(f"{r[key]:g}" for r in rows)])
    return side_by_side(lines)


def measure(
    scales: list[int],
    trials: int,
    parallel: int,
    before: Path | None,
    timeout: float,
    keep: Path | None = None,
) -> list[dict[str, Any]]:
    """Every scale with this checkout's operator, and with ``before``'s when given."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="kubenas-bench-") as scratch:
        root = keep or Path(scratch)
        for experiments, (label, source) in itertools.product(
            scales, [("after", None), *([("before", before)] if before else [])]
        ):
            workdir = root / f"{label}-{experiments}"
            workdir.mkdir(parents=True, exist_ok=True)
            print(f"... {label}: {experiments} experiments x {trials} trials", flush=True)
            figures = measure_one(label, experiments, trials, parallel, source, workdir, timeout)
            rows.append(figures.row())
            print(json.dumps(rows[-1]), flush=True)
    return rows
