"""Trial reuse (``trial.reuse.maxTrialsPerPod``): worker pods ask the operator for their next
trial over HTTP, and hand its result back the same way (docs/design-pod-reuse.md).

The HTTP side only posts what a worker asked into the experiment's :class:`LeaseDesk` and waits
for the answer; the experiment's reconcile pass takes the desk's contents, folds results into
the records, leases waiting trials and answers. So every record change still happens in a pass,
through :mod:`kubenas.transitions`, and a lease is written into the NASTrial before its worker
hears of it. The decisions here are pure functions of what a pass read.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from kubenas.api.experiment import ExperimentSpec
from kubenas.api.records import TrialRecord, TrialRole, TrialState
from kubenas.k8s.job_state import JobOutcome, job_outcome
from kubenas.k8s.manifests import LABEL_WORKER

Json = dict[str, Any]

# Screen and supernet trials run once per stage and report through their pod's log or a large
# summary: they keep a Job of their own.
OWN_JOB_ROLES = (TrialRole.SCREEN, TrialRole.SUPERNET)
_WORKER_NAME = re.compile(r"^(?P<experiment>.+)-w(?P<number>\d+)$")


@dataclass
class Ask:
    """A worker's ``/next``: answered with an assignment, ``stop``, or (when the HTTP side
    stops waiting) withdrawn."""

    worker: str
    pod: str
    answer: Future[Json] = field(default_factory=Future)


@dataclass
class Delivery:
    """A worker's ``/done``: the trial's exit code and final summary (what a trial Job's
    termination message holds). Answered True once recorded, False when the lease was lost."""

    worker: str
    trial: str
    lease: str
    exit_code: int
    message: str
    answer: Future[bool] = field(default_factory=Future)


class LeaseDesk:
    """What one experiment's worker pods asked since the last pass, shared by the HTTP
    handlers (the event loop) and the pass (a worker thread). ``token`` is the experiment's
    worker token, known once a pass has read or made its Secret."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._asks: list[Ask] = []
        self._deliveries: list[Delivery] = []
        self.token: str | None = None

    def ask(self, worker: str, pod: str) -> Ask:
        ask = Ask(worker, pod)
        with self._lock:
            self._asks.append(ask)
        return ask

    def deliver(self, delivery: Delivery) -> Delivery:
        with self._lock:
            self._deliveries.append(delivery)
        return delivery

    def withdraw(self, ask: Ask) -> None:
        """The HTTP side stopped waiting: the ask is not answered any more (if a pass leased a
        trial for it meanwhile, its answer is lost with the request and the lease times out or
        goes with its pod, as the design says)."""
        with self._lock:
            if ask in self._asks:
                self._asks.remove(ask)
        ask.answer.cancel()

    def waiting(self) -> list[Ask]:
        with self._lock:
            self._asks = [a for a in self._asks if not a.answer.done()]
            return list(self._asks)

    def answered(self, asks: Iterable[Ask]) -> None:
        with self._lock:
            gone = set(map(id, asks))
            self._asks = [a for a in self._asks if id(a) not in gone]

    def take_deliveries(self) -> list[Delivery]:
        with self._lock:
            taken, self._deliveries = self._deliveries, []
        return taken


@dataclass(frozen=True)
class WorkerView:
    """What a pass knows of the workers: the live worker Jobs and the results delivered."""

    live: frozenset[str]
    delivered: Mapping[tuple[str, str], Delivery]
    # Live worker Jobs a quota manager suspended (preempted): their pods are going away.
    suspended: frozenset[str] = frozenset()

    def result_of(self, record: TrialRecord) -> Delivery | None:
        return self.delivered.get((record.name, record.lease or ""))


def reuses_pods(spec: ExperimentSpec) -> bool:
    return spec.trial.reuse is not None


def runs_on_worker(spec: ExperimentSpec, record: TrialRecord) -> bool:
    return reuses_pods(spec) and record.role not in OWN_JOB_ROLES


def leased(record: TrialRecord) -> bool:
    """The record's run is held by a worker now."""
    return record.state is TrialState.RUNNING and record.worker is not None


def lost_lease_limit(spec: ExperimentSpec) -> int:
    """How many runs of one trial may be lost with their worker before it fails: a pod can be
    lost for reasons not its trial's (eviction, a node going), so at least one."""
    return spec.trial.backoff_limit + 1


def is_worker_job(job: Mapping[str, Any]) -> bool:
    return LABEL_WORKER in ((job.get("metadata") or {}).get("labels") or {})


def live_workers(jobs: Sequence[Json]) -> frozenset[str]:
    """Worker Jobs that exist and have not ended: their pod may hold a lease."""
    return frozenset(
        str(j["metadata"]["name"]) for j in jobs if is_worker_job(j) and job_outcome(j) is None
    )


def suspended_workers(jobs: Sequence[Json]) -> frozenset[str]:
    """Worker Jobs that Kueue holds suspended: not admitted yet, or preempted."""
    return frozenset(
        str(j["metadata"]["name"])
        for j in jobs
        if is_worker_job(j) and job_outcome(j) is None and (j.get("spec") or {}).get("suspend")
    )


def worker_number(name: str, experiment: str) -> int | None:
    match = _WORKER_NAME.match(name)
    if match is None or match["experiment"] != experiment:
        return None
    return int(match["number"])


def worker_name(experiment: str, number: int) -> str:
    return f"{experiment}-w{number}"


def _numbered(jobs: Sequence[Json], experiment: str) -> dict[int, Json]:
    """The experiment's worker Jobs by their number."""
    return {
        n: j
        for j in jobs
        if is_worker_job(j)
        and (n := worker_number(str(j["metadata"]["name"]), experiment)) is not None
    }


def new_workers(
    spec: ExperimentSpec, experiment: str, records: Iterable[TrialRecord], jobs: Sequence[Json]
) -> list[str]:
    """Names of the worker Jobs to create: one per active trial that runs on a worker, up to
    ``parallelTrials``, less the live ones. Numbers only grow (after the highest worker Job that
    exists), so a pass repeated after a crash finds its Job there instead of making another."""
    active = sum(r.state.active and runs_on_worker(spec, r) for r in records)
    wanted = min(spec.budget.parallel_trials, active) - len(live_workers(jobs))
    first = max(_numbered(jobs, experiment), default=0) + 1
    return [worker_name(experiment, first + i) for i in range(max(0, wanted))]


def finished_workers_to_delete(jobs: Sequence[Json], experiment: str) -> list[str]:
    """Succeeded worker Jobs, except the highest-numbered (it carries the numbering on): a
    long search leaves no pile of them. Failed ones stay for ``kubectl logs``."""
    numbered = _numbered(jobs, experiment)
    highest = max(numbered, default=None)
    return [
        str(j["metadata"]["name"])
        for n, j in numbered.items()
        if n != highest and job_outcome(j) is JobOutcome.SUCCEEDED
    ]


def waiting_for_worker(spec: ExperimentSpec, records: Iterable[TrialRecord]) -> list[TrialRecord]:
    """Pending trials a worker may take, longest-waiting first."""
    waiting = [r for r in records if r.state is TrialState.PENDING and runs_on_worker(spec, r)]
    return sorted(waiting, key=lambda r: (r.queued_at or 0.0, r.index))
