"""Thin kopf handlers: watch-fed indexes of trials, Jobs and pods; one reconcile loop per
NASExperiment, woken by the watch events that matter; a sweep of orphaned Pushgateway groups;
a liveness probe. Everything per operator lives in kopf's ``memo`` (``memo.state``).

No handler needs a finalizer (no daemon, timer or mandatory on-delete handler on experiments):
deleting an experiment never waits for the operator. Its trials, Jobs and pods go by owner
references; its Pushgateway groups by the sweep, once its pods are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

import kopf
from aiohttp import web
from kubernetes.client.exceptions import ApiException
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kubenas.api.status import ExperimentStatus
from kubenas.k8s import bounded, operator_metrics, pushgateway_gc
from kubenas.k8s.cache import CachedApi, Indexes, Key, index_key, slim_object, slim_pod
from kubenas.k8s.client import Api
from kubenas.k8s.lease_server import Desk, add_lease_routes
from kubenas.k8s.metrics_source import Availability, MetricsSnapshot
from kubenas.k8s.reconcile import ExperimentReconciler, Outcome
from kubenas.k8s.settings import (
    ANNOTATION_APPROVE,
    EXPERIMENTS,
    GROUP,
    LABEL_MANAGED_BY,
    MANAGER,
    TRIALS,
    VERSION,
    OperatorSettings,
)
from kubenas.k8s.status import failed_to_run_status

log = logging.getLogger("kubenas.operator")

RECONCILE_THREADS = 64
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 60.0
GC_RETRY_SECONDS = 2.0
GC_FIRST_SECONDS = 5.0
# Older versions put this finalizer on every experiment; kopf removes it now nothing needs it.
LEGACY_FINALIZER = "kubenas.io/cleanup"
PERMANENT_REASON = "CannotReconcile"
MANAGED = {LABEL_MANAGED_BY: MANAGER}
_JITTER = random.Random()


def backoff(failures: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after ``failures`` failed passes in a row: doubling from 1 s, capped at
    60 s, with jitter (half to all of it) so failing experiments don't retry in lockstep."""
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2.0 ** max(0, failures - 1))
    return ceiling * (rng or _JITTER).uniform(0.5, 1.0)


def classify(exc: BaseException, failures: int) -> kopf.PermanentError | kopf.TemporaryError:
    """What a failed pass means: permanent when the API refused a request as invalid (the same
    spec builds the same request: it can only heal by changing the experiment), temporary
    (with the back-off's delay, or the server's Retry-After) for everything else."""
    if isinstance(exc, ApiException) and exc.status in (400, 422):
        return kopf.PermanentError(f"the API server refused a request: {_api_reason(exc)}")
    delay = backoff(failures)
    if isinstance(exc, ApiException) and exc.status == 429:
        retry_after = (exc.headers or {}).get("Retry-After")
        with contextlib.suppress(TypeError, ValueError):
            delay = max(delay, float(str(retry_after)))
    detail = _api_reason(exc) if isinstance(exc, ApiException) else f"{type(exc).__name__}: {exc}"
    return kopf.TemporaryError(detail, delay=delay)


def _api_reason(exc: ApiException) -> str:
    import json

    with contextlib.suppress(TypeError, ValueError):
        body = json.loads(exc.body or "")
        if isinstance(body, dict) and body.get("message"):
            return f"{exc.status} {body['message']}"
    return f"{exc.status} {exc.reason}"


# -- per-operator state -----------------------------------------------------------------------


@dataclass
class Runner:
    """One experiment's reconcile loop and what decides whether an event needs a pass."""

    key: Key
    cached: CachedApi
    reconciler: ExperimentReconciler
    body: dict[str, Any]
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    generation: int = 0
    parked_generation: int | None = None  # a permanent error at this generation: no retries
    finished_jobs: set[str] = field(default_factory=set)
    # Each Job's run as last seen: whether it is suspended and whether a pod of it is ready.
    # Its pod starting, or Kueue admitting (unsuspending) or preempting (suspending) it,
    # changes what its trial is, so either change wakes a pass.
    job_runs: dict[str, tuple[bool, bool]] = field(default_factory=dict)
    pass_started: float | None = None
    passes: int = 0


@dataclass
class OperatorState:
    settings: OperatorSettings
    api: Api | None = None
    indexes: Indexes | None = None
    runners: dict[Key, Runner] = field(default_factory=dict)
    gc_wake: asyncio.Event = field(default_factory=asyncio.Event)
    gc_task: asyncio.Task[None] | None = None
    metrics_server: web.AppRunner | None = None
    closing: bool = False


def _state(memo: kopf.Memo) -> OperatorState:
    state = memo.get("state")
    if not isinstance(state, OperatorState):
        settings = memo.get("settings")
        if not isinstance(settings, OperatorSettings):
            settings = OperatorSettings()
        state = OperatorState(settings)
        memo["state"] = state
    return state


def _indexes(kwargs: Mapping[str, Any]) -> Indexes:
    return Indexes(trials=kwargs["trial_index"], jobs=kwargs["job_index"], pods=kwargs["pod_index"])


class NoDiffBase(kopf.DiffBaseStorage):
    """No handler here detects changes (no on.create/update/delete), so there is nothing to diff
    against; kopf's default would deep-copy every watched Job, pod and trial to compute a diff
    nobody reads (the largest share of the operator's CPU in the benchmark)."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


# -- indexes: the watch-fed cache ------------------------------------------------------------

# Async, like every handler here: kopf runs a plain function in a worker thread, and an index
# update is cheaper than the hand-over.


@kopf.index(GROUP, VERSION, TRIALS, labels=MANAGED)
async def trial_index(body: kopf.Body, **_: Any) -> dict[Key, dict[str, Any]] | None:
    key = index_key(body)
    return {key: slim_object(body)} if key else None


@kopf.index("batch", "v1", "jobs", labels=MANAGED)
async def job_index(body: kopf.Body, **_: Any) -> dict[Key, dict[str, Any]] | None:
    key = index_key(body)
    return {key: slim_object(body)} if key else None


@kopf.index("v1", "pods", labels=MANAGED)
async def pod_index(body: kopf.Body, **_: Any) -> dict[Key, dict[str, Any]] | None:
    key = index_key(body)
    return {key: slim_pod(body)} if key else None


# -- start and stop ----------------------------------------------------------------------------


async def _serve_metrics(state: OperatorState, port: int) -> web.AppRunner:
    """``/metrics``, and on the same port the lease endpoint of trial reuse."""

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    def desk_of(namespace: str, name: str) -> Desk | None:
        runner = state.runners.get((namespace, name))
        if runner is None:
            return None
        return Desk(runner.reconciler.desk, runner.wake.set)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    add_lease_routes(app, desk_of)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    return runner


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    state = _state(memo)
    ours = state.settings
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 60
    settings.watching.client_timeout = 90
    settings.watching.connect_timeout = ours.connect_timeout_seconds
    settings.networking.connect_timeout = ours.connect_timeout_seconds
    settings.networking.request_timeout = ours.request_timeout_seconds
    settings.persistence.finalizer = LEGACY_FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kubenas.io")
    settings.persistence.diffbase_storage = NoDiffBase()
    # Each experiment's passes run in a worker thread; asyncio's default pool (cores + 4) would
    # queue ten concurrent experiments behind each other.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=RECONCILE_THREADS)
    )
    state.api = bounded.bounded_api(
        ours.connect_timeout_seconds, ours.request_timeout_seconds, RECONCILE_THREADS
    )
    state.indexes = _indexes(kwargs)
    state.metrics_server = await _serve_metrics(state, ours.metrics_port)
    if ours.pushgateway_url:
        state.gc_task = asyncio.create_task(_sweep_forever(state), name="pushgateway gc")


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    state = _state(memo)
    state.closing = True
    tasks = [r.task for r in state.runners.values() if r.task] + [state.gc_task]
    for task in tasks:
        if task is not None:
            task.cancel()
    await asyncio.gather(*(t for t in tasks if t is not None), return_exceptions=True)
    if state.metrics_server is not None:
        await state.metrics_server.cleanup()
    if state.api is not None:
        state.api.close()


@kopf.on.probe(id="reconcile-loops")
async def reconcile_loops_alive(memo: kopf.Memo, **_: Any) -> dict[str, int]:
    """Liveness: every experiment's loop and the sweep still run, and no pass overran its
    deadline by far (passes are bounded; one that is not is stuck)."""
    state = _state(memo)
    now = time.monotonic()
    dead = [f"{ns}/{name}" for (ns, name), r in state.runners.items() if r.task and r.task.done()]
    stuck = [
        f"{ns}/{name}"
        for (ns, name), r in state.runners.items()
        if r.pass_started is not None
        and now - r.pass_started > 2 * state.settings.pass_timeout_seconds
    ]
    if state.gc_task is not None and state.gc_task.done():
        dead.append("pushgateway gc")
    if dead or stuck:
        raise kopf.PermanentError(f"dead: {dead}; stuck: {stuck}")
    passes = sum(r.passes for r in state.runners.values())
    return {"experiments": len(state.runners), "passes": passes}


# -- events: which ones need a pass ------------------------------------------------------------


def _generation(body: Mapping[str, Any]) -> int:
    return int((body.get("metadata") or {}).get("generation") or 0)


def _approval(body: Mapping[str, Any]) -> str | None:
    """The final-stage approval annotation: a change to it (not to the spec) needs a pass."""
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    return cast(str | None, annotations.get(ANNOTATION_APPROVE))


def _job_run(body: Mapping[str, Any]) -> tuple[bool, bool]:
    """Whether the Job is suspended, and whether a pod of it is ready (its trainer runs)."""
    suspended = bool((body.get("spec") or {}).get("suspend"))
    return suspended, bool((body.get("status") or {}).get("ready"))


def _job_finished(body: Mapping[str, Any]) -> bool:
    status = body.get("status") or {}
    if (status.get("succeeded") or 0) >= 1:
        return True
    return any(
        c.get("type") == "Failed" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


@kopf.on.event(GROUP, VERSION, EXPERIMENTS)
async def experiment_event(
    event: kopf.RawEvent,
    body: kopf.Body,
    namespace: str | None,
    name: str,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """A new experiment gets its loop; a spec change (or someone else's status change) a pass;
    a deleted one loses its loop and series, and its Pushgateway groups are swept."""
    assert namespace is not None, "NASExperiment is namespaced"
    state = _state(memo)
    key = (namespace, name)
    if event["type"] == "DELETED":
        _stop_runner(state, key)
        metric = (body.get("spec", {}).get("objective") or {}).get("metric", "val_accuracy")
        operator_metrics.forget_experiment(namespace, name, metric)
        if state.indexes is not None and state.api is not None:
            # Owner references would delete them too, a level of garbage collection later; the
            # sooner their trainers stop, the sooner the sweep may drop their groups.
            jobs = [str(j["metadata"]["name"]) for j in state.indexes.jobs.get(key, ())]
            await asyncio.to_thread(_delete_jobs, state.api, namespace, jobs)
        state.gc_wake.set()
        return
    runner = state.runners.get(key)
    if runner is None:
        runner = _start_runner(state, key, body)
        runner.wake.set()
        return
    approved = _approval(runner.body) != _approval(body)
    runner.body = slim_object(body, parts=())
    runner.cached.watched_experiment = slim_object(body)
    generation = _generation(body)
    changed = generation != runner.generation or approved
    runner.generation = generation
    if runner.parked_generation is not None:
        if generation == runner.parked_generation:
            return
        runner.parked_generation = None
    status = body.get("status") or {}
    deleting = bool(body.get("metadata", {}).get("deletionTimestamp"))
    if changed or deleting or not runner.cached.is_own_status_write(status):
        runner.wake.set()


@kopf.on.event(GROUP, VERSION, TRIALS, labels=MANAGED)
async def trial_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    runner = _runner_of(memo, body)
    if runner is None:
        return
    if event["type"] == "DELETED" or not runner.cached.is_own_trial_write(body):
        runner.wake.set()


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
async def job_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A pass when a Job finishes, when its pod starts, when a queue admits or preempts it
    (its ``suspend`` flips), or when a Job appears or goes that we did not create or delete;
    not for the Job controller's other status updates."""
    runner = _runner_of(memo, body)
    if runner is None:
        return
    name = body["metadata"]["name"]
    if event["type"] == "DELETED":
        runner.finished_jobs.discard(name)
        runner.job_runs.pop(name, None)
        if not runner.cached.is_own_job_write(body, deleted=True):
            runner.wake.set()
        return
    if _job_finished(body):
        if name not in runner.finished_jobs:
            runner.finished_jobs.add(name)
            runner.wake.set()
        return
    run = _job_run(body)
    if runner.job_runs.setdefault(name, run) != run:
        runner.job_runs[name] = run
        runner.wake.set()
    appeared = event["type"] in (None, "ADDED")
    if appeared and not runner.cached.is_own_job_write(body, deleted=False):
        runner.wake.set()


def _delete_jobs(api: Api, namespace: str, jobs: list[str]) -> None:
    with bounded.deadline(30.0):
        for job in jobs:
            try:
                api.delete_job(namespace, job)
            except Exception as exc:  # the garbage collector deletes it anyway
                log.warning("could not delete Job %s/%s: %s", namespace, job, exc)
                return


def _runner_of(memo: kopf.Memo, body: Mapping[str, Any]) -> Runner | None:
    key = index_key(body)
    return _state(memo).runners.get(key) if key else None


# -- one experiment's loop ---------------------------------------------------------------------


def _start_runner(state: OperatorState, key: Key, body: Mapping[str, Any]) -> Runner:
    assert state.api is not None and state.indexes is not None, "started before startup()"
    namespace, name = key
    cached = CachedApi(state.api, state.indexes, namespace, name)
    cached.watched_experiment = slim_object(body)
    reconciler = ExperimentReconciler(cached, state.settings, namespace, name)
    runner = Runner(
        key, cached, reconciler, slim_object(body, parts=()), generation=_generation(body)
    )
    runner.task = asyncio.create_task(_run(state, runner), name=f"reconcile {namespace}/{name}")
    state.runners[key] = runner
    return runner


def _target(runner: Runner) -> kopf.Body:
    """What kopf's event posting needs of the experiment (apiVersion, kind, metadata)."""
    return kopf.Body(cast(kopf.RawBody, runner.body))


def _stop_runner(state: OperatorState, key: Key) -> None:
    runner = state.runners.pop(key, None)
    if runner is not None and runner.task is not None:
        runner.task.cancel()


async def _run(state: OperatorState, runner: Runner) -> None:
    """Passes until cancelled: when woken (events coalesce: any number of them during a pass
    give one more pass), when a running trial times out or its progress is due, after a back-off
    when one failed."""
    namespace, name = runner.key
    failures = 0
    poll: float | None = None
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(runner.wake.wait(), poll)
        runner.wake.clear()
        if runner.parked_generation is not None:
            poll = None
            continue
        runner.cached.refresh()
        runner.pass_started = started = time.monotonic()
        try:
            outcome = await asyncio.to_thread(_pass, state.settings, runner.reconciler)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failures += 1
            operator_metrics.RECONCILE_ERRORS.inc()
            error = classify(exc, failures)
            if isinstance(error, kopf.PermanentError):
                log.error("reconcile of %s/%s cannot succeed: %s", namespace, name, error)
                await _park(state, runner, str(error))
                failures, poll = 0, None
                continue
            log.warning(
                "reconcile of %s/%s failed (%d in a row), retrying in %.1f s: %s",
                namespace,
                name,
                failures,
                error.delay or 0.0,
                error,
                exc_info=not isinstance(exc, ApiException | OSError | TimeoutError),
            )
            if failures == 1 or failures % 10 == 0:
                kopf.warn(_target(runner), reason="ReconcileError", message=str(error)[:1000])
            await asyncio.sleep(error.delay or BACKOFF_BASE_SECONDS)
            runner.wake.set()
            continue
        finally:
            runner.pass_started = None
            runner.passes += 1
            operator_metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
        failures = 0
        for kind, reason, message in outcome.events:
            kopf.event(_target(runner), type=kind, reason=reason, message=message)
        poll = outcome.next_pass_in


def _pass(settings: OperatorSettings, reconciler: ExperimentReconciler) -> Outcome:
    with bounded.deadline(settings.pass_timeout_seconds):
        return reconciler.reconcile()


async def _park(state: OperatorState, runner: Runner, message: str) -> None:
    """Stop retrying until the spec changes: the experiment is Failed, saying why."""
    runner.parked_generation = runner.generation
    kopf.warn(_target(runner), reason=PERMANENT_REASON, message=message[:1000])
    namespace, name = runner.key
    api = state.api
    assert api is not None

    def fail() -> None:
        with bounded.deadline(state.settings.pass_timeout_seconds):
            body = api.get_experiment(namespace, name)
            if body is None:
                return
            runner.parked_generation = _generation(body)
            configured = bool(state.settings.prometheus_url)
            unqueried = MetricsSnapshot(
                Availability.NOT_QUERIED if configured else Availability.NOT_CONFIGURED
            )
            status = failed_to_run_status(
                ExperimentStatus.model_validate(body.get("status") or {}),
                _generation(body),
                PERMANENT_REASON,
                message,
                metrics=unqueried,
                now=time.time(),
            )
            api.patch_experiment_status(namespace, name, status.to_patch())

    try:
        await asyncio.to_thread(fail)
    except Exception:
        log.exception("could not mark %s/%s failed", namespace, name)


# -- the Pushgateway sweep ---------------------------------------------------------------------


async def _sweep_forever(state: OperatorState) -> None:
    """Every ``pushgateway_gc_seconds`` (at once after an experiment is deleted, every 2 s
    while a deleted experiment's pods are still stopping); the first a few seconds after
    start, once the watches have listed what exists."""
    interval = GC_FIRST_SECONDS
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.gc_wake.wait(), interval)
        state.gc_wake.clear()
        try:
            waiting = await _sweep(state)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("Pushgateway sweep failed: %s", exc)
            waiting = False
        interval = GC_RETRY_SECONDS if waiting else state.settings.pushgateway_gc_seconds


async def _sweep(state: OperatorState) -> bool:
    """One sweep; True when some orphaned group waits for its pods to go."""
    url = state.settings.pushgateway_url
    indexes, api = state.indexes, state.api
    if not url or indexes is None or api is None:
        return False
    groups = await asyncio.to_thread(pushgateway_gc.list_groups, url)
    # The index snapshot is taken here, in the event loop; the API confirms in a thread.
    experiments = set(state.runners)  # every experiment the watch has shown and not deleted
    trial_names = {
        key: {str(t["metadata"]["name"]) for t in trials} for key, trials in indexes.trials.items()
    }
    suspects = pushgateway_gc.candidates(
        groups,
        experiments,
        lambda ns, exp: trial_names.get((ns, exp), set()),
        state.settings.namespaces,
    )
    if not suspects:
        return False

    def confirm() -> pushgateway_gc.SweepResult:
        with bounded.deadline(state.settings.pass_timeout_seconds):
            return pushgateway_gc.confirm_and_delete(url, api, suspects)

    result = await asyncio.to_thread(confirm)
    return result.waiting > 0
