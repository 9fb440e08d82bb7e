"""A fake of the Kubernetes API, in memory, for the reconciler's fast unit tier.

It is a fake, not a cluster: it stores experiments, NASTrials, Jobs and pods as plain dicts,
answers the :class:`kubenas.k8s.client.KubeApi` calls with the semantics the real ``Api``
gives them (AlreadyExists on create, a 404 on delete counts as done), validates status patches
against the wire models as the API server validates them against the CRD, and can be made to
fail. Jobs do nothing by themselves: a test moves them (``run``, ``succeed``, ``suspend`` ...)
as the Job controller, the scheduler and the kubelet would. The real thing is tested in
tests/e2e against the dev cluster.
"""

from __future__ import annotations

import base64
import copy
import itertools
from collections.abc import Callable
from typing import Any

from kubenas.api.status import ExperimentStatus
from kubenas.api.trial import TrialStatus, to_rfc3339
from kubenas.k8s.manifests import TRAINER_CONTAINER
from kubenas.k8s.settings import LABEL_EXPERIMENT

Json = dict[str, Any]
Key = tuple[str, str]


class FakeApiError(Exception):
    """What a failing call of the fake raises (a stand-in for an ApiException)."""


def merge_patch(target: Json, patch: Json) -> Json:
    """RFC 7386 JSON merge patch: null removes a key, objects merge, anything else replaces."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_patch(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class FakeApi:
    """In-memory stand-in for the API server (see the module docstring)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.experiments: dict[Key, Json] = {}
        self.trials: dict[Key, Json] = {}
        self.jobs: dict[Key, Json] = {}
        self.pods: dict[Key, Json] = {}
        self.logs: dict[Key, str] = {}
        self.configmaps: dict[Key, Json] = {}
        self.secrets: dict[Key, Json] = {}
        self.calls: list[tuple[str, str]] = []
        self.failing: dict[str, Exception] = {}
        self._uids = itertools.count(1)

    # -- bookkeeping -------------------------------------------------------------------------

    def _call(self, method: str, name: str) -> None:
        self.calls.append((method, name))
        if method in self.failing:
            raise self.failing[method]

    def _stamp(self, obj: Json) -> Json:
        stored = copy.deepcopy(obj)
        meta = stored.setdefault("metadata", {})
        meta["uid"] = f"uid-{next(self._uids)}"
        meta["creationTimestamp"] = to_rfc3339(self.clock())
        meta.setdefault("generation", 1)
        stored.pop("status", None)  # status is a subresource: create ignores it
        return stored

    def count(self, method: str) -> int:
        return sum(m == method for m, _ in self.calls)

    # -- what a user does ----------------------------------------------------------------------

    def apply_experiment(self, doc: Json, namespace: str) -> Json:
        doc = copy.deepcopy(doc)
        doc["metadata"]["namespace"] = namespace
        key = (namespace, doc["metadata"]["name"])
        old = self.experiments.get(key)
        if old is None:
            self.experiments[key] = self._stamp(doc)
        else:
            old["spec"] = doc["spec"]
            old["metadata"]["generation"] += 1
        return self.experiments[key]

    def status_of(self, namespace: str, name: str) -> ExperimentStatus:
        return ExperimentStatus.model_validate(
            self.experiments[(namespace, name)].get("status", {})
        )

    def trial_status(self, namespace: str, name: str) -> Json:
        return dict(self.trials[(namespace, name)].get("status") or {})

    # -- KubeApi -------------------------------------------------------------------------------

    def close(self) -> None:
        pass

    def get_experiment(self, namespace: str, name: str) -> Json | None:
        self._call("get_experiment", name)
        found = self.experiments.get((namespace, name))
        return copy.deepcopy(found) if found else None

    def list_trials(self, namespace: str, experiment: str) -> list[Json]:
        self._call("list_trials", experiment)
        return [
            copy.deepcopy(t)
            for (ns, _), t in self.trials.items()
            if ns == namespace and t["metadata"]["labels"].get(LABEL_EXPERIMENT) == experiment
        ]

    def list_jobs(self, namespace: str, experiment: str) -> list[Json]:
        self._call("list_jobs", experiment)
        return [
            copy.deepcopy(j)
            for (ns, _), j in self.jobs.items()
            if ns == namespace and j["metadata"]["labels"].get(LABEL_EXPERIMENT) == experiment
        ]

    def list_experiment_pods(self, namespace: str, experiment: str) -> list[Json]:
        self._call("list_experiment_pods", experiment)
        return [
            copy.deepcopy(p)
            for (ns, _), p in self.pods.items()
            if ns == namespace and p["metadata"]["labels"].get(LABEL_EXPERIMENT) == experiment
        ]

    def list_job_pods(self, namespace: str, job: str) -> list[Json]:
        self._call("list_job_pods", job)
        return [
            copy.deepcopy(p)
            for (ns, _), p in self.pods.items()
            if ns == namespace and p["metadata"]["labels"].get("job-name") == job
        ]

    def read_pod_log(self, namespace: str, pod: str, container: str) -> str:
        self._call("read_pod_log", pod)
        return self.logs.get((namespace, pod), "")

    def create_configmap(self, configmap: Json) -> None:
        key = (configmap["metadata"]["namespace"], configmap["metadata"]["name"])
        self._call("create_configmap", key[1])
        self.configmaps.setdefault(key, self._stamp(configmap))  # AlreadyExists keeps it

    def get_configmap(self, namespace: str, name: str) -> Json | None:
        self._call("get_configmap", name)
        stored = self.configmaps.get((namespace, name))
        return copy.deepcopy(stored) if stored is not None else None

    def ensure_secret(self, secret: Json) -> Json:
        key = (secret["metadata"]["namespace"], secret["metadata"]["name"])
        self._call("ensure_secret", key[1])
        if key not in self.secrets:  # the API server turns stringData into base64 data
            stored = self._stamp({k: v for k, v in secret.items() if k != "stringData"})
            stored["data"] = {
                k: base64.b64encode(v.encode()).decode()
                for k, v in (secret.get("stringData") or {}).items()
            }
            self.secrets[key] = stored
        return copy.deepcopy(self.secrets[key])

    def create_trial(self, trial: Json) -> Json:
        key = (trial["metadata"]["namespace"], trial["metadata"]["name"])
        self._call("create_trial", key[1])
        if key in self.trials:  # AlreadyExists: the real Api returns the stored one
            return copy.deepcopy(self.trials[key])
        self.trials[key] = self._stamp(trial)
        return copy.deepcopy(self.trials[key])

    def get_trial(self, namespace: str, name: str) -> Json:
        self._call("get_trial", name)
        return copy.deepcopy(self.trials[(namespace, name)])

    def create_job(self, job: Json) -> bool:
        key = (job["metadata"]["namespace"], job["metadata"]["name"])
        self._call("create_job", key[1])
        if key in self.jobs:  # AlreadyExists
            return False
        stored = self._stamp(job)
        stored["status"] = {}
        self.jobs[key] = stored
        return True

    def delete_job(self, namespace: str, name: str) -> None:
        """Deletes the Job and (background propagation) its pods; a missing one is a 404,
        which the real Api counts as done."""
        self._call("delete_job", name)
        self.jobs.pop((namespace, name), None)
        for key in [k for k, p in self.pods.items() if p["metadata"]["labels"]["job-name"] == name]:
            del self.pods[key]

    def patch_trial_status(self, namespace: str, name: str, status: Json) -> Json:
        self._call("patch_trial_status", name)
        trial = self.trials[(namespace, name)]
        merged = merge_patch(trial.get("status") or {}, status)
        TrialStatus.model_validate(merged)  # the CRD's schema, as the API server checks it
        trial["status"] = merged
        return copy.deepcopy(trial)

    def patch_experiment_status(self, namespace: str, name: str, status: Json) -> Json | None:
        self._call("patch_experiment_status", name)
        experiment = self.experiments.get((namespace, name))
        if experiment is None:
            return None  # 404: the real Api ignores it (the experiment was deleted)
        merged = merge_patch(experiment.get("status") or {}, status)
        ExperimentStatus.model_validate(merged)
        experiment["status"] = merged
        return copy.deepcopy(experiment)

    # -- what the Job controller, the scheduler and the kubelet would do ---------------------

    def job(self, namespace: str, name: str) -> Json:
        return self.jobs[(namespace, name)]

    def _pod(self, namespace: str, job: str) -> Json:
        """The Job's pod, made on first use, Pending and unscheduled."""
        key = (namespace, f"{job}-pod")
        if key not in self.pods:
            template = self.jobs[(namespace, job)]["spec"]["template"]
            labels = {
                **template["metadata"]["labels"],
                "job-name": job,
                "batch.kubernetes.io/job-name": job,
            }
            self.pods[key] = {
                "metadata": {
                    "name": key[1],
                    "namespace": namespace,
                    "labels": labels,
                    "creationTimestamp": to_rfc3339(self.clock()),
                },
                "status": {
                    "phase": "Pending",
                    "conditions": [
                        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}
                    ],
                },
            }
        return self.pods[key]

    def _trainer(self, pod: Json, state: Json) -> None:
        pod["status"]["containerStatuses"] = [{"name": TRAINER_CONTAINER, "state": state}]

    def unschedulable(self, namespace: str, job: str) -> None:
        """The Job's pod exists but waits for a node (a GPU): no container has started."""
        self._pod(namespace, job)
        self.jobs[(namespace, job)]["status"] = {"active": 1, "startTime": to_rfc3339(self.clock())}

    def suspend(self, namespace: str, job: str) -> None:
        """Kueue holds the Job (no quota) or preempts it: suspended, its pods deleted."""
        self.jobs[(namespace, job)]["spec"]["suspend"] = True
        self.jobs[(namespace, job)]["status"] = {}
        self.pods.pop((namespace, f"{job}-pod"), None)

    def run(self, namespace: str, job: str, at: float) -> None:
        """The trainer container started at ``at``."""
        self.jobs[(namespace, job)]["spec"]["suspend"] = False
        pod = self._pod(namespace, job)
        pod["status"]["phase"] = "Running"
        pod["status"]["conditions"] = [{"type": "PodScheduled", "status": "True"}]
        self._trainer(pod, {"running": {"startedAt": to_rfc3339(at)}})
        status = self.jobs[(namespace, job)]["status"]
        status.update({"active": 1, "startTime": status.get("startTime") or to_rfc3339(at)})

    def _end(self, namespace: str, job: str, exit_code: int, message: str) -> Json:
        pod = self._pod(namespace, job)
        started = ((pod["status"].get("containerStatuses") or [{}])[0].get("state") or {}).get(
            "running", {}
        ).get("startedAt") or to_rfc3339(self.clock())
        terminated: Json = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "startedAt": started,
            "finishedAt": to_rfc3339(self.clock()),
        }
        if message:
            terminated["message"] = message
        pod["status"]["phase"] = "Succeeded" if exit_code == 0 else "Failed"
        self._trainer(pod, {"terminated": terminated})
        status: Json = self.jobs[(namespace, job)]["status"]
        status.pop("active", None)
        status.setdefault("startTime", started)
        return status

    def succeed(self, namespace: str, job: str, message: str = "", log: str = "") -> None:
        """The trainer exited 0, leaving ``message`` as its termination message and ``log``
        as what it printed."""
        status = self._end(namespace, job, 0, message)
        self.logs[(namespace, f"{job}-pod")] = log
        status["succeeded"] = 1
        status["completionTime"] = to_rfc3339(self.clock())
        status["conditions"] = [{"type": "Complete", "status": "True"}]

    def crash(self, namespace: str, job: str, exit_code: int, message: str) -> None:
        """The trainer exited ``exit_code``; with backoffLimit 0 the Job fails."""
        status = self._end(namespace, job, exit_code, message)
        status["failed"] = 1
        status["conditions"] = [
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}
        ]
