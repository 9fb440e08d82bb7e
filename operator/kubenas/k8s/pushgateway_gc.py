"""Garbage collection of trials' Pushgateway groups whose experiment or trial is gone.

A pass deletes a trial's group once its result is recorded; this sweep catches the rest: the
groups of deleted experiments (no finalizer holds a deletion for us), of trials deleted by hand,
and of anything the operator missed while it was down. A group is deleted only once no pod of
its experiment (or trial) exists any more, since a running trainer would push it back; and only
after the API, not just the watch cache, confirms that its owner is gone.
"""

from __future__ import annotations

import base64
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from kubenas.k8s.metrics_source import PUSH_JOB
from kubenas.k8s.settings import LABEL_TRIAL

log = logging.getLogger("kubenas.operator.pushgateway")

TIMEOUT_SECONDS = 5.0


class PushgatewayUnavailable(Exception):
    """The Pushgateway could not be listed."""


@dataclass(frozen=True)
class Group:
    """One Pushgateway group of a trial (its grouping labels)."""

    labels: tuple[tuple[str, str], ...]

    @property
    def namespace(self) -> str:
        return dict(self.labels).get("namespace", "")

    @property
    def experiment(self) -> str:
        return dict(self.labels).get("experiment", "")

    @property
    def trial(self) -> str:
        return dict(self.labels).get("trial", "")

    def path(self) -> str:
        """``/metrics/job/<job>/<label>/<value>...``; base64 for values the path cannot hold."""
        labels = dict(self.labels)
        parts = [("job", labels.pop("job", PUSH_JOB)), *sorted(labels.items())]
        segments = []
        for key, value in parts:
            if not value or "/" in value:
                encoded = base64.urlsafe_b64encode(value.encode()).decode() or "="
                segments.append(f"{key}@base64/{encoded}")
            else:
                segments.append(f"{key}/{urllib.parse.quote(value, safe='')}")
        return "/metrics/" + "/".join(segments)


def list_groups(base_url: str) -> list[Group]:
    """The trial groups the Pushgateway holds (``GET /api/v1/metrics``)."""
    try:
        with urllib.request.urlopen(
            f"{base_url.rstrip('/')}/api/v1/metrics", timeout=TIMEOUT_SECONDS
        ) as response:
            body = json.load(response)
    except (OSError, urllib.error.URLError, json.JSONDecodeError) as exc:
        raise PushgatewayUnavailable(f"{base_url}: {exc}") from exc
    groups = []
    for entry in body.get("data") or []:
        labels = {str(k): str(v) for k, v in (entry.get("labels") or {}).items()}
        if labels.get("job") == PUSH_JOB and labels.get("namespace") and labels.get("experiment"):
            groups.append(Group(tuple(sorted(labels.items()))))
    return groups


def delete_group(base_url: str, group: Group) -> bool:
    request = urllib.request.Request(f"{base_url.rstrip('/')}{group.path()}", method="DELETE")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS):
            return True
    except (OSError, urllib.error.URLError):
        return False


def candidates(
    groups: Iterable[Group],
    experiments: Collection[tuple[str, str]],
    trials: Callable[[str, str], Collection[str]],
    namespaces: Collection[str],
) -> list[Group]:
    """Groups whose experiment or trial the watch cache does not know (to be confirmed)."""
    found = []
    for group in groups:
        if namespaces and group.namespace not in namespaces:
            continue  # another operator's namespace
        key = (group.namespace, group.experiment)
        if key not in experiments or (group.trial and group.trial not in trials(*key)):
            found.append(group)
    return found


class OwnerApi(Protocol):
    """What the sweep asks the API to confirm (method names of ``client.Api``)."""

    def get_experiment(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def get_trial(self, namespace: str, name: str) -> dict[str, Any]: ...
    def list_experiment_pods(self, namespace: str, experiment: str) -> list[dict[str, Any]]: ...


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def _trial_exists(api: OwnerApi, namespace: str, name: str) -> bool:
    from kubernetes.client.exceptions import ApiException

    try:
        api.get_trial(namespace, name)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


@dataclass
class SweepResult:
    deleted: int = 0
    waiting: int = 0  # groups whose owner is gone but whose pods still exist


def confirm_and_delete(base_url: str, api: OwnerApi, suspects: Iterable[Group]) -> SweepResult:
    """Delete each suspect whose owner the API confirms gone and whose pods have all gone
    (blocking calls: run it in a worker thread)."""
    result = SweepResult()
    by_experiment: dict[tuple[str, str], list[Group]] = {}
    for group in suspects:
        by_experiment.setdefault((group.namespace, group.experiment), []).append(group)
    for (namespace, experiment), groups in by_experiment.items():
        body = api.get_experiment(namespace, experiment)
        pods = api.list_experiment_pods(namespace, experiment)
        for group in groups:
            if body is not None and not body["metadata"].get("deletionTimestamp"):
                if not group.trial or _trial_exists(api, namespace, group.trial):
                    continue  # the cache was behind: the owner is there
                live = [p for p in pods if _labels(p).get(LABEL_TRIAL) == group.trial]
            else:
                live = pods
            if live:
                result.waiting += 1
                continue
            if delete_group(base_url, group):
                result.deleted += 1
                log.info("deleted Pushgateway group %s: its owner is gone", group.path())
    return result
