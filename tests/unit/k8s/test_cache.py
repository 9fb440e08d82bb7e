"""The watch-fed cache: lists from a (lagging) index snapshot, our own writes read back at
once, and the real reconciler driven through it never duplicates or skips work while the
index lags behind the API."""

from __future__ import annotations

import copy
import itertools
import json
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from kubenas.k8s.cache import CachedApi, Indexes, Key, index_key, slim_object, slim_pod
from kubenas.k8s.reconcile import ExperimentReconciler
from kubenas.k8s.settings import LABEL_EXPERIMENT, LABEL_MANAGED_BY, MANAGER, OperatorSettings

NS, EXP = "team", "search"


def _merge(into: dict[str, Any], patch: dict[str, Any]) -> None:
    """JSON merge patch (RFC 7386), as the API server applies it."""
    for key, value in patch.items():
        if value is None:
            into.pop(key, None)
        elif isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


class FakeApi:
    """A fake API server for one namespace: resourceVersions, 409 on create, 404 on get,
    label selection; counts every call so tests can tell a duplicate from a no-op."""

    def __init__(self, experiment: dict[str, Any]) -> None:
        self.revision = itertools.count(100)
        self.uids = itertools.count(1)
        self.calls: list[tuple[str, str]] = []
        self.experiment = self._stamp(copy.deepcopy(experiment))
        self.trials: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, dict[str, Any]] = {}
        self.jobs_created: list[str] = []
        self.job_conflicts: list[str] = []
        self.trial_states: list[tuple[str, str]] = []

    def _stamp(self, obj: dict[str, Any], new: bool = True) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        meta["namespace"] = NS
        if new:
            meta["uid"] = f"uid-{next(self.uids)}"
            meta["creationTimestamp"] = f"2026-01-01T00:00:{len(self.calls):02d}Z"
        meta["resourceVersion"] = str(next(self.revision))
        return obj

    # -- the Api surface ---------------------------------------------------------------------

    def get_experiment(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get_experiment", name))
        return copy.deepcopy(self.experiment)

    def list_trials(self, namespace: str, experiment: str) -> list[dict[str, Any]]:
        self.calls.append(("list_trials", experiment))
        return [copy.deepcopy(t) for t in self.trials.values()]

    def list_jobs(self, namespace: str, experiment: str) -> list[dict[str, Any]]:
        self.calls.append(("list_jobs", experiment))
        return [copy.deepcopy(j) for j in self.jobs.values()]

    def list_experiment_pods(self, namespace: str, experiment: str) -> list[dict[str, Any]]:
        self.calls.append(("list_experiment_pods", experiment))
        return [copy.deepcopy(p) for p in self.pods.values()]

    def list_job_pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        self.calls.append(("list_job_pods", job))
        return [
            copy.deepcopy(p)
            for p in self.pods.values()
            if p["metadata"]["labels"].get("job-name") == job
        ]

    def read_pod_log(self, namespace: str, pod: str, container: str) -> str:
        self.calls.append(("read_pod_log", pod))
        return ""

    def create_configmap(self, configmap: dict[str, Any]) -> None:
        self.calls.append(("create_configmap", configmap["metadata"]["name"]))

    def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get_configmap", name))
        return None

    def ensure_secret(self, secret: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("ensure_secret", secret["metadata"]["name"]))
        return secret

    def create_trial(self, trial: dict[str, Any]) -> dict[str, Any]:
        name = trial["metadata"]["name"]
        self.calls.append(("create_trial", name))
        if name in self.trials:
            return copy.deepcopy(self.trials[name])
        self.trials[name] = self._stamp(copy.deepcopy(trial))
        return copy.deepcopy(self.trials[name])

    def get_trial(self, namespace: str, name: str) -> dict[str, Any]:
        self.calls.append(("get_trial", name))
        if name not in self.trials:
            raise ApiException(status=404)
        return copy.deepcopy(self.trials[name])

    def create_job(self, job: dict[str, Any]) -> bool:
        name = job["metadata"]["name"]
        self.calls.append(("create_job", name))
        if name in self.jobs:
            self.job_conflicts.append(name)
            return False
        self.jobs[name] = self._stamp(copy.deepcopy(job))
        self.jobs_created.append(name)
        return True

    def delete_job(self, namespace: str, name: str) -> None:
        self.calls.append(("delete_job", name))
        self.jobs.pop(name, None)
        for pod in [p for p, v in self.pods.items() if v["metadata"]["labels"]["job-name"] == name]:
            del self.pods[pod]

    def patch_trial_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        self.calls.append(("patch_trial_status", name))
        self.trial_states.append((name, str(status.get("state"))))
        trial = self.trials[name]
        _merge(trial, {"status": status})
        self._stamp(trial, new=False)
        return copy.deepcopy(trial)

    def patch_experiment_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None:
        self.calls.append(("patch_experiment_status", name))
        _merge(self.experiment, {"status": status})
        return copy.deepcopy(self._stamp(self.experiment, new=False))

    def close(self) -> None:
        pass

    # -- what other controllers do -------------------------------------------------------------

    def finish_job(self, name: str, metrics: dict[str, float]) -> None:
        """The Job's pod exits 0 with the trainer's summary, and the Job controller notices."""
        job = self.jobs[name]
        labels = {**job["spec"]["template"]["metadata"]["labels"], "job-name": name}
        message = json.dumps({"metrics": metrics})
        self.pods[f"{name}-pod"] = self._stamp(
            {
                "metadata": {"name": f"{name}-pod", "labels": labels},
                "status": {
                    "phase": "Succeeded",
                    "containerStatuses": [
                        {
                            "name": "trainer",
                            "state": {"terminated": {"exitCode": 0, "message": message}},
                        }
                    ],
                },
            }
        )
        job["status"] = {"succeeded": 1}
        self._stamp(job, new=False)


class LaggingIndexes:
    """Index stand-ins that show the fake's objects only when told to catch up (a watch
    that lags as far behind as a test wants)."""

    def __init__(self, fake: FakeApi) -> None:
        self.fake = fake
        self.trials: dict[Key, list[dict[str, Any]]] = {}
        self.jobs: dict[Key, list[dict[str, Any]]] = {}
        self.pods: dict[Key, list[dict[str, Any]]] = {}

    def indexes(self) -> Indexes:
        return Indexes(trials=self.trials, jobs=self.jobs, pods=self.pods)

    @staticmethod
    def _fill(
        index: dict[Key, list[dict[str, Any]]], objects: list[dict[str, Any]], pods: bool = False
    ) -> None:
        index.clear()
        for obj in objects:
            key = index_key(obj)
            assert key is not None
            index.setdefault(key, []).append(slim_pod(obj) if pods else slim_object(obj))

    def catch_up(self, *kinds: str) -> None:
        if "trials" in kinds:
            self._fill(self.trials, list(self.fake.trials.values()))
        if "jobs" in kinds:
            self._fill(self.jobs, list(self.fake.jobs.values()))
        if "pods" in kinds:
            self._fill(self.pods, list(self.fake.pods.values()), pods=True)


def _experiment(max_trials: int = 3) -> dict[str, Any]:
    return {
        "apiVersion": "kubenas.io/v1alpha1",
        "kind": "NASExperiment",
        "metadata": {"name": EXP, "generation": 1},
        "spec": {
            "searchSpace": {
                "family": "custom",
                "parameters": [{"name": "x", "type": "int", "low": 0, "high": 10_000}],
            },
            "budget": {"maxTrials": max_trials, "parallelTrials": 1},
            "trial": {"dataset": "none:", "command": ["true"], "timeoutSeconds": 60},
        },
    }


@pytest.fixture
def fake() -> FakeApi:
    return FakeApi(_experiment())


def _trial(name: str, rv: str, state: str | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "kubenas.io/v1alpha1",
        "kind": "NASTrial",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-{name}",
            "resourceVersion": rv,
            "labels": {LABEL_EXPERIMENT: EXP, LABEL_MANAGED_BY: MANAGER},
            "managedFields": [{"manager": "kubenas"}] * 50,
        },
        "spec": {"params": {"x": 1}},
        **({"status": {"state": state}} if state else {}),
    }


def test_index_entries_keep_what_a_pass_reads_and_drop_managed_fields() -> None:
    slim = slim_object(_trial("search-0", "5", "Running"))
    assert slim["metadata"]["name"] == "search-0" and slim["metadata"]["uid"] == "uid-search-0"
    assert "managedFields" not in slim["metadata"]
    assert slim["spec"] == {"params": {"x": 1}} and slim["status"] == {"state": "Running"}
    assert index_key(slim) == (NS, EXP)


def test_a_created_trial_is_listed_before_the_watch_shows_it(fake: FakeApi) -> None:
    lagging = LaggingIndexes(fake)
    cached = CachedApi(fake, lagging.indexes(), NS, EXP)
    cached.refresh()
    stored = cached.create_trial(_trial("search-0", "0"))
    assert [t["metadata"]["name"] for t in cached.list_trials(NS, EXP)] == ["search-0"]
    assert cached.is_own_trial_write(stored)
    lagging.catch_up("trials")
    cached.refresh()
    assert not cached.overlay.trials, "the watch caught up: the overlay is dropped"
    assert [t["metadata"]["name"] for t in cached.list_trials(NS, EXP)] == ["search-0"]
    assert ("list_trials", EXP) not in fake.calls


def test_our_status_patch_wins_over_a_stale_copy_and_a_newer_copy_wins_over_it() -> None:
    lagging = LaggingIndexes(FakeApi(_experiment()))
    lagging.trials[(NS, EXP)] = [slim_object(_trial("search-0", "10", "Running"))]
    api = FakeApi(_experiment())
    api.trials["search-0"] = _trial("search-0", "10", "Running")
    cached = CachedApi(api, lagging.indexes(), NS, EXP)
    cached.refresh()
    cached.patch_trial_status(NS, "search-0", {"state": "Succeeded"})
    (listed,) = cached.list_trials(NS, EXP)
    assert listed["status"]["state"] == "Succeeded"
    cached.refresh()  # the index still has resourceVersion 10: still stale
    assert cached.list_trials(NS, EXP)[0]["status"]["state"] == "Succeeded"
    lagging.trials[(NS, EXP)] = [slim_object(_trial("search-0", "999", "Stopped"))]
    cached.refresh()
    assert cached.list_trials(NS, EXP)[0]["status"]["state"] == "Stopped"


def test_created_jobs_show_at_once_and_deleted_ones_vanish_at_once(fake: FakeApi) -> None:
    lagging = LaggingIndexes(fake)
    cached = CachedApi(fake, lagging.indexes(), NS, EXP)
    cached.refresh()
    job = {"metadata": {"name": "search-0-f0", "namespace": NS, "labels": {LABEL_EXPERIMENT: EXP}}}
    fake.jobs["search-0-f0"] = fake._stamp(copy.deepcopy(job))
    # 409: the Job exists but the watch has not shown it; it still counts as there.
    assert cached.create_job(job) is False
    assert [j["metadata"]["name"] for j in cached.list_jobs(NS, EXP)] == ["search-0-f0"]
    lagging.catch_up("jobs")
    cached.refresh()
    cached.delete_job(NS, "search-0-f0")
    assert cached.list_jobs(NS, EXP) == [], "deleted, though the stale index still has it"
    assert cached.is_own_job_write(lagging.jobs[(NS, EXP)][0], deleted=True)
    lagging.catch_up("jobs")
    cached.refresh()
    assert not cached.overlay.deleted_jobs


def test_job_pods_come_from_the_api_until_the_cache_shows_one_finished(fake: FakeApi) -> None:
    lagging = LaggingIndexes(fake)
    cached = CachedApi(fake, lagging.indexes(), NS, EXP)
    fake.jobs["search-0-f0"] = fake._stamp(
        {
            "metadata": {"name": "search-0-f0", "labels": {LABEL_EXPERIMENT: EXP}},
            "spec": {"template": {"metadata": {"labels": {LABEL_EXPERIMENT: EXP}}}},
        }
    )
    fake.finish_job("search-0-f0", {"val_accuracy": 0.5})
    cached.refresh()
    assert len(cached.list_job_pods(NS, "search-0-f0")) == 1
    assert cached.fallback_reads == 1, "the pod watch lagged: asked the API"
    lagging.catch_up("pods")
    cached.refresh()
    assert len(cached.list_job_pods(NS, "search-0-f0")) == 1
    assert cached.fallback_reads == 1


def _reconciler(fake: FakeApi, lagging: LaggingIndexes) -> tuple[CachedApi, ExperimentReconciler]:
    """A cache whose experiment watch delivered the experiment once and then lags forever."""
    cached = CachedApi(fake, lagging.indexes(), NS, EXP)
    cached.watched_experiment = slim_object(fake.experiment)
    return cached, ExperimentReconciler(cached, OperatorSettings(), NS, EXP)


def _run_pass(cached: CachedApi, reconciler: ExperimentReconciler) -> None:
    cached.refresh()
    reconciler.reconcile()


def test_a_lagging_watch_never_makes_the_reconciler_duplicate_or_skip_a_trial(
    fake: FakeApi,
) -> None:
    """The trial watch never catches up at all; the Job watch does, right after each Job is
    deleted. Every trial still runs exactly once and is recorded exactly once."""
    lagging = LaggingIndexes(fake)
    cached, reconciler = _reconciler(fake, lagging)
    _run_pass(cached, reconciler)
    assert len(fake.jobs_created) == 1
    for _ in range(3):  # passes while the trial runs: nothing new
        _run_pass(cached, reconciler)
    assert len(fake.jobs_created) == 1 and not fake.job_conflicts
    for k in range(3):
        (job,) = fake.jobs
        trial = fake.jobs[job]["metadata"]["labels"]["kubenas.io/trial"]
        lagging.catch_up("jobs")
        fake.finish_job(job, {"val_accuracy": 0.1 * (k + 1)})
        lagging.catch_up("jobs")  # the Job's success is seen; its pod's is not
        _run_pass(cached, reconciler)
        assert fake.trials[trial]["status"]["state"] == "Succeeded"
        assert job not in fake.jobs, "recorded, so its Job is deleted"
        lagging.catch_up("jobs")  # the deletion is seen; the trial's new state is not
        _run_pass(cached, reconciler)
        _run_pass(cached, reconciler)
    assert len(fake.jobs_created) == len(set(fake.jobs_created)) == 3
    assert not fake.job_conflicts
    assert len(fake.trials) == 3
    assert all(t["status"]["state"] == "Succeeded" for t in fake.trials.values())
    for trial in fake.trials:  # recorded once: no second fold of the same finished Job
        assert fake.trial_states.count((trial, "Succeeded")) == 1, fake.trial_states
    conditions = {c["type"]: c["status"] for c in fake.experiment["status"]["conditions"]}
    assert conditions["Succeeded"] == "True"
    assert not [c for c in fake.calls if c[0] in ("list_trials", "list_jobs", "get_experiment")]


def test_the_experiment_is_read_from_its_watch_and_our_status_write_over_a_stale_copy(
    fake: FakeApi,
) -> None:
    cached = CachedApi(fake, LaggingIndexes(fake).indexes(), NS, EXP)
    cached.refresh()
    assert cached.get_experiment(NS, EXP) == fake.experiment, "not watched yet: the API"
    assert fake.calls == [("get_experiment", EXP)]
    stale = slim_object(fake.experiment)
    cached.watched_experiment = stale
    cached.refresh()
    cached.patch_experiment_status(NS, EXP, {"phase": "Running"})
    cached.refresh()  # the watch still shows the copy from before our write
    assert (cached.get_experiment(NS, EXP) or {})["status"] == {"phase": "Running"}
    # Someone edits the spec: the watch's newer copy wins over our write.
    fake.experiment["spec"]["budget"]["maxTrials"] = 5
    fake._stamp(fake.experiment, new=False)
    cached.watched_experiment = slim_object(fake.experiment)
    cached.refresh()
    assert (cached.get_experiment(NS, EXP) or {})["spec"]["budget"]["maxTrials"] == 5
    assert cached.overlay.experiment is None
    assert fake.calls.count(("get_experiment", EXP)) == 1


def test_after_a_restart_the_first_listing_is_complete(fake: FakeApi) -> None:
    """kopf starts handlers only once every index holds its first full listing; a fresh
    cache over it re-creates nothing."""
    lagging = LaggingIndexes(fake)
    cached, reconciler = _reconciler(fake, lagging)
    _run_pass(cached, reconciler)
    lagging.catch_up("trials", "jobs", "pods")
    cached, reconciler = _reconciler(fake, lagging)  # the operator restarted
    for _ in range(3):
        _run_pass(cached, reconciler)
    assert len(fake.jobs_created) == 1 and not fake.job_conflicts
    assert len([c for c in fake.calls if c[0] == "create_trial"]) == 1
