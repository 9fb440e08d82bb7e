"""Where a trial's metrics come from: Prometheus (fed by the Pushgateway), else the pod's
termination message; and the clean-up of a trial's Pushgateway group once it is recorded."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

PUSH_JOB = "kubenas-trial"
TIMEOUT_SECONDS = 3.0


class MetricsUnavailable(Exception):
    """Prometheus could not be asked (down, unreachable, or answered an error)."""


@dataclass(frozen=True)
class TrialMetrics:
    """The latest values a trial pushed; ``final`` once it pushed its final summary."""

    values: dict[str, float]
    epoch: int | None
    final: bool


def _selector(namespace: str, experiment: str, trial: str) -> str:
    return f'job="{PUSH_JOB}",namespace="{namespace}",experiment="{experiment}",trial="{trial}"'


def query_prometheus(base_url: str, namespace: str, experiment: str, trial: str) -> TrialMetrics:
    """One instant query for every series of the trial's group."""
    selector = _selector(namespace, experiment, trial)
    query = f'{{__name__=~"kubenas_trial_(metric|epoch|final)",{selector}}}'
    url = f"{base_url.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            body = json.load(response)
    except (OSError, urllib.error.URLError, json.JSONDecodeError) as exc:
        raise MetricsUnavailable(f"{base_url}: {exc}") from exc
    if body.get("status") != "success":
        raise MetricsUnavailable(f"{base_url}: {body.get('error', 'query failed')}")
    values: dict[str, float] = {}
    epoch: int | None = None
    final = False
    for series in body["data"]["result"]:
        labels, (_, raw) = series["metric"], series["value"]
        name = labels.get("__name__")
        if name == "kubenas_trial_metric" and "name" in labels:
            values[labels["name"]] = float(raw)
        elif name == "kubenas_trial_epoch":
            epoch = int(float(raw))
        elif name == "kubenas_trial_final":
            final = float(raw) >= 1
    return TrialMetrics(values, epoch, final)


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
    request = urllib.request.Request(f"{base_url.rstrip('/')}/metrics/{path}", method="DELETE")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS):
            return True
    except (OSError, urllib.error.URLError):
        return False


def parse_termination_message(message: str | None) -> dict[str, Any] | None:
    """The trainer's final summary as the kubelet kept it (JSON, at most 4 KiB)."""
    if not message:
        return None
    try:
        summary = json.loads(message)
    except json.JSONDecodeError:
        return None
    return summary if isinstance(summary, dict) else None
