"""The handlers' decisions that need no cluster: back-off, what is permanent, and which watch
events need a pass (our own writes' echoes and the Job controller's chatter do not)."""

from __future__ import annotations

import asyncio
import random
from typing import Any, cast

import kopf
import pytest
from kubernetes.client.exceptions import ApiException

from kubenas.k8s import handlers
from kubenas.k8s.cache import CachedApi, Indexes
from kubenas.k8s.reconcile import ExperimentReconciler
from kubenas.k8s.settings import LABEL_EXPERIMENT, OperatorSettings

NS, EXP = "team", "search"


def test_backoff_doubles_with_jitter_up_to_a_cap() -> None:
    rng = random.Random(1)
    for failures, ceiling in [(1, 1), (2, 2), (3, 4), (6, 32), (7, 60), (50, 60)]:
        delays = [handlers.backoff(failures, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (failures, min(delays))
        assert max(delays) - min(delays) > ceiling / 4, "jittered, not flat"


def test_refused_requests_are_permanent_the_rest_temporary() -> None:
    assert isinstance(handlers.classify(ApiException(status=422), 1), kopf.PermanentError)
    assert isinstance(handlers.classify(ApiException(status=400), 1), kopf.PermanentError)
    for exc in (ApiException(status=500), ApiException(status=409), TimeoutError("slow")):
        error = handlers.classify(exc, 3)
        assert isinstance(error, kopf.TemporaryError) and 2 <= (error.delay or 0) <= 4
    throttled = ApiException(status=429)
    throttled.headers = {"Retry-After": "30"}
    error = handlers.classify(throttled, 1)
    assert isinstance(error, kopf.TemporaryError) and error.delay == 30


class _NoApi:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"no API call expected: {name}")


def _memo() -> tuple[kopf.Memo, handlers.Runner]:
    state = handlers.OperatorState(OperatorSettings())
    indexes = Indexes(trials={}, jobs={}, pods={})
    cached = CachedApi(cast(Any, _NoApi()), indexes, NS, EXP)
    reconciler = ExperimentReconciler(cached, state.settings, NS, EXP)
    runner = handlers.Runner((NS, EXP), cached, reconciler, {"metadata": {"name": EXP}})
    state.runners[(NS, EXP)] = runner
    return kopf.Memo(state=state), runner


def _job(name: str, spec: dict[str, Any] | None = None, **status: Any) -> kopf.Body:
    raw = {
        "spec": spec or {},
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-{name}",
            "labels": {LABEL_EXPERIMENT: EXP},
        },
        "status": status,
    }
    return kopf.Body(cast(kopf.RawBody, raw))


def _call(handler: object, **kwargs: Any) -> None:
    asyncio.run(cast(Any, handler)(**kwargs))


def _job_event(memo: kopf.Memo, kind: str | None, body: kopf.Body) -> None:
    event = cast(kopf.RawEvent, {"type": kind, "object": dict(body)})
    _call(handlers.job_event, event=event, body=body, memo=memo)


@pytest.fixture
def memo_runner() -> tuple[kopf.Memo, handlers.Runner]:
    return _memo()


def test_a_job_we_created_wakes_nothing_until_it_finishes(
    memo_runner: tuple[kopf.Memo, handlers.Runner],
) -> None:
    memo, runner = memo_runner
    runner.cached.overlay.created_jobs["search-0000-f0"] = (0.0, {})
    _job_event(memo, "ADDED", _job("search-0000-f0"))
    _job_event(memo, "MODIFIED", _job("search-0000-f0", active=1))
    assert not runner.wake.is_set()
    _job_event(memo, "MODIFIED", _job("search-0000-f0", succeeded=1))
    assert runner.wake.is_set()
    runner.wake.clear()
    _job_event(memo, "MODIFIED", _job("search-0000-f0", succeeded=1, completionTime="now"))
    assert not runner.wake.is_set(), "one pass per finished Job"


def test_a_queue_admitting_or_preempting_our_job_and_its_pod_starting_wake_a_pass(
    memo_runner: tuple[kopf.Memo, handlers.Runner],
) -> None:
    memo, runner = memo_runner
    runner.cached.overlay.created_jobs["search-0000-f0"] = (0.0, {})
    queued = _job("search-0000-f0", {"suspend": True})
    _job_event(memo, "ADDED", queued)
    _job_event(memo, "MODIFIED", queued)
    assert not runner.wake.is_set(), "created suspended: nothing happened yet"
    _job_event(memo, "MODIFIED", _job("search-0000-f0", {"suspend": False}, active=1))
    assert runner.wake.is_set(), "Kueue admitted it"
    runner.wake.clear()
    _job_event(memo, "MODIFIED", _job("search-0000-f0", active=1, ready=1))
    assert runner.wake.is_set(), "its pod started: the trial runs"
    runner.wake.clear()
    _job_event(memo, "MODIFIED", _job("search-0000-f0", active=1, ready=1, terminating=0))
    assert not runner.wake.is_set(), "the Job controller's other status updates"
    _job_event(memo, "MODIFIED", _job("search-0000-f0", {"suspend": True}, terminating=1))
    assert runner.wake.is_set(), "Kueue preempted it"


def test_jobs_someone_else_adds_or_deletes_wake_a_pass(
    memo_runner: tuple[kopf.Memo, handlers.Runner],
) -> None:
    memo, runner = memo_runner
    _job_event(memo, "ADDED", _job("stranger-f0"))
    assert runner.wake.is_set()
    runner.wake.clear()
    runner.cached.overlay.deleted_jobs["ours-f0"] = (0.0, "uid-ours-f0")
    _job_event(memo, "DELETED", _job("ours-f0"))
    assert not runner.wake.is_set(), "our own deletion"
    _job_event(memo, "DELETED", _job("stranger-f0"))
    assert runner.wake.is_set()


def test_our_own_status_patch_echo_wakes_nothing_a_spec_change_does(
    memo_runner: tuple[kopf.Memo, handlers.Runner],
) -> None:
    memo, runner = memo_runner
    runner.generation = 1
    runner.cached.overlay.experiment_status = {"observedGeneration": 1, "trials": {"total": 2}}

    def event(generation: int, status: dict[str, Any]) -> None:
        raw = {
            "apiVersion": "kubenas.io/v1alpha1",
            "kind": "NASExperiment",
            "metadata": {"name": EXP, "namespace": NS, "generation": generation},
            "status": status,
        }
        body = kopf.Body(cast(kopf.RawBody, raw))
        _call(
            handlers.experiment_event,
            event=cast(kopf.RawEvent, {"type": "MODIFIED", "object": raw}),
            body=body,
            namespace=NS,
            name=EXP,
            memo=memo,
        )

    event(1, {"observedGeneration": 1, "trials": {"total": 2}, "startTime": "t"})
    assert not runner.wake.is_set()
    event(1, {"observedGeneration": 1, "trials": {"total": 1}})
    assert runner.wake.is_set(), "someone else's status: converge again"
    runner.wake.clear()
    event(2, {"observedGeneration": 1, "trials": {"total": 2}})
    assert runner.wake.is_set() and runner.generation == 2


def test_a_parked_experiment_waits_for_a_new_generation(
    memo_runner: tuple[kopf.Memo, handlers.Runner],
) -> None:
    memo, runner = memo_runner
    runner.generation = runner.parked_generation = 3
    raw = {"metadata": {"name": EXP, "namespace": NS, "generation": 3}, "status": {"x": 1}}
    for generation, woken in ((3, False), (4, True)):
        raw["metadata"]["generation"] = generation  # type: ignore[index]
        _call(
            handlers.experiment_event,
            event=cast(kopf.RawEvent, {"type": "MODIFIED", "object": raw}),
            body=kopf.Body(cast(kopf.RawBody, raw)),
            namespace=NS,
            name=EXP,
            memo=memo,
        )
        assert runner.wake.is_set() is woken
    assert runner.parked_generation is None
