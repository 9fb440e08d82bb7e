"""Where a trial's metrics come from: Prometheus (fed by the Pushgateway), else the pod's
termination message; and the clean-up of a trial's Pushgateway group once it is recorded."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import urllib3

PUSH_JOB = "kubenas-trial"
# Short: a pass asks Prometheus once and must not wait long when it is slow or down (the final
# metrics are in the pods' termination messages anyway).
QUERY_TIMEOUT_SECONDS = 2.0
PUSHGATEWAY_TIMEOUT_SECONDS = 3.0
SOURCE_PROMETHEUS = "prometheus"
SOURCE_TERMINATION_MESSAGE = "termination-message"
# Keep-alive connections to Prometheus and the Pushgateway, shared by every pass's thread: a
# connection per query cost more than the query.
_HTTP = urllib3.PoolManager(maxsize=16, retries=False)


class MetricsUnavailable(Exception):
    """Prometheus could not be asked (down, unreachable, or answered an error)."""


@dataclass(frozen=True)
class TrialMetrics:
    """The latest values a trial pushed; ``final`` once it pushed its final summary."""

    values: dict[str, float]
    epoch: int | None
    final: bool


class Availability(StrEnum):
    """What one pass learned about Prometheus."""

    NOT_CONFIGURED = "NotConfigured"
    NOT_QUERIED = "NotQueried"
    ANSWERED = "Answered"
    UNREACHABLE = "Unreachable"


@dataclass(frozen=True)
class MetricsSnapshot:
    """Every trial's pushed metrics from one query for the whole experiment, or why there are
    none; ``problem`` says what went wrong when Prometheus was unreachable."""

    availability: Availability
    trials: Mapping[str, TrialMetrics] = field(default_factory=dict)
    problem: str | None = None

    def of(self, trial: str) -> TrialMetrics | None:
        return self.trials.get(trial)


def experiment_query(namespace: str, experiment: str) -> str:
    selector = f'job="{PUSH_JOB}",namespace="{namespace}",experiment="{experiment}"'
    return f'{{__name__=~"kubenas_trial_(metric|epoch|final)",{selector}}}'


def query_prometheus(base_url: str, namespace: str, experiment: str) -> dict[str, TrialMetrics]:
    """One instant query for every series of every trial of the experiment, by trial."""
    url = f"{base_url.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode(
        {"query": experiment_query(namespace, experiment)}
    )
    try:
        response = _HTTP.request("GET", url, timeout=QUERY_TIMEOUT_SECONDS)
        body = json.loads(response.data)
    except (OSError, urllib3.exceptions.HTTPError, ValueError) as exc:
        raise MetricsUnavailable(f"{base_url}: {exc}") from exc
    if not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error", "query failed") if isinstance(body, dict) else "not JSON"
        raise MetricsUnavailable(f"{base_url}: HTTP {response.status}: {error}")
    values: dict[str, dict[str, float]] = {}
    epochs: dict[str, int] = {}
    finals: set[str] = set()
    for series in body["data"]["result"]:
        labels, (_, raw) = series["metric"], series["value"]
        trial, name = labels.get("trial"), labels.get("__name__")
        if not trial:
            continue
        values.setdefault(trial, {})
        if name == "kubenas_trial_metric" and "name" in labels:
            values[trial][labels["name"]] = float(raw)
        elif name == "kubenas_trial_epoch":
            epochs[trial] = int(float(raw))
        elif name == "kubenas_trial_final" and float(raw) >= 1:
            finals.add(trial)
    return {
        trial: TrialMetrics(found, epochs.get(trial), trial in finals)
        for trial, found in values.items()
    }


def snapshot(base_url: str | None, namespace: str, experiment: str) -> MetricsSnapshot:
    """What Prometheus says about the experiment now, never raising: a failed query is a
    snapshot that says why (the caller falls back to termination messages)."""
    if not base_url:
        return MetricsSnapshot(Availability.NOT_CONFIGURED)
    try:
        trials = query_prometheus(base_url, namespace, experiment)
    except MetricsUnavailable as exc:
        return MetricsSnapshot(
            Availability.UNREACHABLE,
            problem=f"Prometheus unreachable, using termination messages: {exc}",
        )
    return MetricsSnapshot(Availability.ANSWERED, trials)


def delete_push_group(base_url: str, namespace: str, experiment: str, trial: str) -> bool:
    """Remove the trial's Pushgateway group; False when the Pushgateway could not be reached."""
    path = "/".join(
        f"{key}/{urllib.parse.quote(value, safe='')}"
        for key, value in (
            ("job", PUSH_JOB),
            ("namespace", namespace),
            ("experiment", experiment),
            ("trial", trial),
        )
    )
    url = f"{base_url.rstrip('/')}/metrics/{path}"
    try:
        response = _HTTP.request("DELETE", url, timeout=PUSHGATEWAY_TIMEOUT_SECONDS)
    except (OSError, urllib3.exceptions.HTTPError):
        return False
    return response.status < 400


def parse_termination_message(message: str | None) -> dict[str, Any] | None:
    """The trainer's final summary as the kubelet kept it (JSON, at most 4 KiB)."""
    if not message:
        return None
    try:
        summary = json.loads(message)
    except json.JSONDecodeError:
        return None
    return summary if isinstance(summary, dict) else None
