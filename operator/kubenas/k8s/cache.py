"""A watch-fed read cache for one experiment's reconcile passes.

kopf indexes (``@kopf.index`` on NASTrials, Jobs and pods, keyed by (namespace, experiment
label)) hold what the watches delivered, and the experiment's own watch events its latest
copy. :class:`CachedApi` answers the reconciler's reads from a snapshot of them, taken in the
event loop before each pass, and sends every write to the real :class:`~kubenas.k8s.client.Api`.

Watches lag behind our own writes, so the cache overlays what this experiment's passes wrote
(read-your-own-writes) until the watch shows the same or a newer version:

- a trial we created or whose status we patched: the object the API server returned;
- a Job we created: the manifest we sent (no status yet: "running");
- a Job we deleted: hidden while the watch still shows it;
- the experiment whose status we patched: the object the API server returned.

What no overlay covers is other writers (the Job controller, the kubelet). A stale Job only
delays a pass's view of it; a stale pod could hide a finished trial's termination message, so
``list_job_pods`` reads the API when no cached pod of the Job has finished.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubenas.k8s.client import KubeApi
from kubenas.k8s.settings import ANNOTATION_APPROVE, LABEL_EXPERIMENT

Key = tuple[str, str]
Index = Mapping[Key, Collection[dict[str, Any]]]

# An overlay entry the watch never confirmed is dropped after this long (a deleted object
# whose watch event we missed must not pin memory forever).
OVERLAY_SECONDS = 600.0
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")
FINISHED_PHASES = ("Succeeded", "Failed")


# -- what the indexes keep -------------------------------------------------------------------


def _metadata(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    kept = ("name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp")
    slim = {k: meta[k] for k in kept if k in meta}
    slim["labels"] = dict(meta.get("labels") or {})
    approval = (meta.get("annotations") or {}).get(ANNOTATION_APPROVE)
    if approval is not None:
        slim["annotations"] = {ANNOTATION_APPROVE: approval}
    if meta.get("deletionTimestamp"):
        slim["deletionTimestamp"] = meta["deletionTimestamp"]
    if meta.get("ownerReferences"):
        slim["ownerReferences"] = [dict(o) for o in meta["ownerReferences"]]
    return slim


def _plain(value: Any) -> Any:
    """A deep plain copy (kopf bodies are read-only views)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def slim_object(
    body: Mapping[str, Any], parts: Iterable[str] = ("spec", "status")
) -> dict[str, Any]:
    """What a pass reads of an object: metadata without managedFields or annotations (but
    the one a person approves a final stage with)."""
    slim: dict[str, Any] = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": _metadata(body),
    }
    for part in parts:
        if body.get(part) is not None:
            slim[part] = _plain(body[part])
    return slim


def slim_pod(body: Mapping[str, Any]) -> dict[str, Any]:
    """A pod as passes read it: labels, phase and container states (termination messages)."""
    status = body.get("status") or {}
    slim = slim_object(body, parts=())
    slim["status"] = {
        "phase": status.get("phase"),
        "containerStatuses": _plain(status.get("containerStatuses") or []),
    }
    return slim


def index_key(body: Mapping[str, Any]) -> Key | None:
    meta = body.get("metadata") or {}
    experiment = (meta.get("labels") or {}).get(LABEL_EXPERIMENT)
    namespace = meta.get("namespace")
    return (namespace, experiment) if namespace and experiment else None


def resource_version(obj: Mapping[str, Any]) -> int | None:
    """etcd's revision behind a resourceVersion; None when it is not a number (another store)."""
    raw = (obj.get("metadata") or {}).get("resourceVersion")
    try:
        return int(str(raw))
    except ValueError:
        return None


def _name(obj: Mapping[str, Any]) -> str:
    return str(obj["metadata"]["name"])


def _uid(obj: Mapping[str, Any]) -> str | None:
    uid = (obj.get("metadata") or {}).get("uid")
    return str(uid) if uid else None


def newer_or_same(seen: Mapping[str, Any], written: Mapping[str, Any]) -> bool:
    """Whether the watch's copy ``seen`` already includes our write ``written``."""
    if _uid(seen) and _uid(written) and _uid(seen) != _uid(written):
        return True  # another object by that name: ours is gone
    a, b = resource_version(seen), resource_version(written)
    if a is None or b is None:
        return bool(
            (seen.get("metadata") or {}).get("resourceVersion")
            == (written.get("metadata") or {}).get("resourceVersion")
        )
    return a >= b


# -- the per-experiment view ------------------------------------------------------------------


@dataclass
class _Overlay:
    trials: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)
    created_jobs: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)
    deleted_jobs: dict[str, tuple[float, str | None]] = field(default_factory=dict)
    experiment_status: dict[str, Any] | None = None
    experiment: dict[str, Any] | None = None


@dataclass(frozen=True)
class Indexes:
    """kopf's indexes (live, owned by the event loop: read them only there)."""

    trials: Index
    jobs: Index
    pods: Index


class CachedApi:
    """One experiment's API for its reconciler: lists from the watch-fed indexes, the rest real.

    :meth:`refresh` must run in the event loop (it copies the index entries); the reconciler's
    calls may then run in a worker thread. One pass at a time.
    """

    def __init__(
        self,
        api: KubeApi,
        indexes: Indexes,
        namespace: str,
        experiment: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.indexes = indexes
        self.namespace = namespace
        self.experiment = experiment
        self.clock = clock
        self.overlay = _Overlay()
        self._trials: list[dict[str, Any]] = []
        self._jobs: list[dict[str, Any]] = []
        self._pods: list[dict[str, Any]] = []
        # The experiment as its watch last delivered it (set in the event loop), and the copy a
        # pass reads.
        self.watched_experiment: dict[str, Any] | None = None
        self._experiment: dict[str, Any] | None = None
        # Our writes the watch has caught up on, kept (names and versions only) so their watch
        # events, which may be handled after the catch-up, still read as echoes.
        self._written_versions: dict[str, str] = {}
        self._created_job_names: set[str] = set()
        self._deleted_job_uids: set[str] = set()
        self.fallback_reads = 0

    # -- in the event loop ------------------------------------------------------------------

    def refresh(self) -> None:
        """Snapshot the indexes for the next pass and drop overlays the watch has caught up on."""
        key = (self.namespace, self.experiment)
        self._trials = list(self.indexes.trials.get(key, ()))
        self._jobs = list(self.indexes.jobs.get(key, ()))
        self._pods = list(self.indexes.pods.get(key, ()))
        self._experiment = self.watched_experiment
        now = self.clock()
        written, seen = self.overlay.experiment, self._experiment
        if written is not None and seen is not None and newer_or_same(seen, written):
            self.overlay.experiment = None
        trials = {_name(t): t for t in self._trials}
        for name, (at, written) in list(self.overlay.trials.items()):
            seen = trials.get(name)
            if (seen is not None and newer_or_same(seen, written)) or now - at > OVERLAY_SECONDS:
                del self.overlay.trials[name]
        jobs = {_name(j): j for j in self._jobs}
        for name, (at, _) in list(self.overlay.created_jobs.items()):
            if name in jobs or now - at > OVERLAY_SECONDS:
                del self.overlay.created_jobs[name]
        for name, (at, uid) in list(self.overlay.deleted_jobs.items()):
            seen = jobs.get(name)
            if seen is None or _uid(seen) != uid or now - at > OVERLAY_SECONDS:
                del self.overlay.deleted_jobs[name]

    def is_own_trial_write(self, body: Mapping[str, Any]) -> bool:
        """Whether a trial's watch event only echoes a write of ours (no pass needed for it)."""
        name = _name(body)
        entry = self.overlay.trials.get(name)
        if entry is not None and newer_or_same(entry[1], body):
            return True
        version = (body.get("metadata") or {}).get("resourceVersion")
        return version is not None and self._written_versions.get(name) == version

    def is_own_job_write(self, body: Mapping[str, Any], deleted: bool) -> bool:
        """Whether a Job's ADDED (``deleted`` False) or DELETED event echoes our own call."""
        name = _name(body)
        if deleted:
            entry = self.overlay.deleted_jobs.get(name)
            if entry is not None and entry[1] in (None, _uid(body)):
                return True
            return _uid(body) in self._deleted_job_uids
        return name in self.overlay.created_jobs or name in self._created_job_names

    def is_own_status_write(self, status: Mapping[str, Any]) -> bool:
        written = self.overlay.experiment_status
        return written is not None and all(status.get(k) == v for k, v in written.items())

    # -- reads (any thread, during a pass) ---------------------------------------------------

    def _ours(self, namespace: str, experiment: str) -> bool:
        return (namespace, experiment) == (self.namespace, self.experiment)

    def get_experiment(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The watch's copy, or our own status write where the watch has not caught up; the
        API before the watch has shown the experiment."""
        if (namespace, name) != (self.namespace, self.experiment) or self._experiment is None:
            return self.api.get_experiment(namespace, name)
        copied: dict[str, Any] = _plain(self.overlay.experiment or self._experiment)
        return copied

    def list_trials(self, namespace: str, experiment: str) -> list[dict[str, Any]]:
        if not self._ours(namespace, experiment):
            return self.api.list_trials(namespace, experiment)
        merged = {_name(t): t for t in self._trials}
        for name, (_, written) in self.overlay.trials.items():
            merged[name] = written
        return list(merged.values())

    def list_jobs(self, namespace: str, experiment: str) -> list[dict[str, Any]]:
        if not self._ours(namespace, experiment):
            return self.api.list_jobs(namespace, experiment)
        merged = {_name(j): j for j in self._jobs}
        for name, (_, uid) in self.overlay.deleted_jobs.items():
            if name in merged and _uid(merged[name]) in (None, uid):
                del merged[name]
        for name, (_, manifest) in self.overlay.created_jobs.items():
            merged.setdefault(name, manifest)
        return list(merged.values())

    def list_experiment_pods(self, namespace: str, experiment: str) -> list[dict[str, Any]]:
        if not self._ours(namespace, experiment):
            return self.api.list_experiment_pods(namespace, experiment)
        return list(self._pods)

    def list_job_pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        """The Job's pods; from the API when none of the cached ones has finished (the pod's
        watch may lag behind the Job's, and a pass asks only about finished Jobs)."""
        if namespace == self.namespace:
            pods = [
                p
                for p in self._pods
                if any(p["metadata"]["labels"].get(label) == job for label in JOB_NAME_LABELS)
            ]
            if any((p.get("status") or {}).get("phase") in FINISHED_PHASES for p in pods):
                return pods
        self.fallback_reads += 1
        return self.api.list_job_pods(namespace, job)

    def get_trial(self, namespace: str, name: str) -> dict[str, Any]:
        return self.api.get_trial(namespace, name)

    def read_pod_log(self, namespace: str, pod: str, container: str) -> str:
        return self.api.read_pod_log(namespace, pod, container)

    def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.api.get_configmap(namespace, name)

    def create_configmap(self, configmap: dict[str, Any]) -> None:
        self.api.create_configmap(configmap)

    def ensure_secret(self, secret: dict[str, Any]) -> dict[str, Any]:
        return self.api.ensure_secret(secret)

    # -- writes: the real API, remembered ----------------------------------------------------

    def _remember_trial(self, trial: dict[str, Any]) -> None:
        meta = trial.get("metadata") or {}
        labels = meta.get("labels") or {}
        if meta.get("namespace") == self.namespace and labels.get(LABEL_EXPERIMENT) == (
            self.experiment
        ):
            self.overlay.trials[_name(trial)] = (self.clock(), slim_object(trial))
            if meta.get("resourceVersion"):
                self._written_versions[_name(trial)] = str(meta["resourceVersion"])

    def create_trial(self, trial: dict[str, Any]) -> dict[str, Any]:
        stored = self.api.create_trial(trial)
        self._remember_trial(stored)
        return stored

    def patch_trial_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        patched = self.api.patch_trial_status(namespace, name, status)
        self._remember_trial(patched)
        return patched

    def create_job(self, job: dict[str, Any]) -> bool:
        created = self.api.create_job(job)
        meta = job.get("metadata") or {}
        if meta.get("namespace") == self.namespace:
            name = str(meta["name"])
            self.overlay.deleted_jobs.pop(name, None)
            if created or name not in {_name(j) for j in self._jobs}:
                # 409 with no Job in view: it exists, the watch has not shown it yet.
                self.overlay.created_jobs[name] = (self.clock(), slim_object(job))
            if created:
                self._created_job_names.add(name)
        return created

    def delete_job(self, namespace: str, name: str) -> None:
        self.api.delete_job(namespace, name)
        if namespace == self.namespace:
            self.overlay.created_jobs.pop(name, None)
            seen = next((j for j in self._jobs if _name(j) == name), None)
            if seen is not None:
                self.overlay.deleted_jobs[name] = (self.clock(), _uid(seen))
                if _uid(seen):
                    self._deleted_job_uids.add(str(_uid(seen)))

    def patch_experiment_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None:
        stored = self.api.patch_experiment_status(namespace, name, status)
        if (namespace, name) == (self.namespace, self.experiment):
            self.overlay.experiment_status = _plain(status)
            if stored is not None:
                self.overlay.experiment = slim_object(stored)
        return stored

    def close(self) -> None:
        self.api.close()
