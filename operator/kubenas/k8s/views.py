"""``kubenas get`` and ``kubenas best``: an experiment and its trials as a person reads them."""

from __future__ import annotations

import json
import time
from typing import Any

from kubernetes import client

from kubenas.api.trial import from_rfc3339
from kubenas.durations import spoken_duration
from kubenas.k8s.client import Api
from kubenas.k8s.settings import (
    ANNOTATION_APPROVE,
    EXPERIMENTS,
    GROUP,
    LABEL_EXPERIMENT,
    TRIALS,
    VERSION,
)
from kubenas.oneshot import supernet_line


class NotFound(Exception):
    pass


def fetch(namespace: str, name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    api = Api()
    try:
        experiment = api.get_experiment(namespace, name)
        if experiment is None:
            raise NotFound(f"nasexperiment {namespace}/{name} not found")
        listed = client.CustomObjectsApi(api.api_client).list_namespaced_custom_object(
            GROUP, VERSION, namespace, TRIALS, label_selector=f"{LABEL_EXPERIMENT}={name}"
        )
        return experiment, sorted(listed["items"], key=lambda t: t["spec"]["index"])
    finally:
        api.close()


def _state(experiment: dict[str, Any]) -> str:
    for condition in (experiment.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return str(condition.get("reason") or "Unknown")
    return "Pending"


def render(
    experiment: dict[str, Any], trials: list[dict[str, Any]], now: float | None = None
) -> str:
    """The experiment, its counters and queue time, then one line per trial."""
    spec, status = experiment["spec"], experiment.get("status") or {}
    metric = (spec.get("objective") or {}).get("metric", "val_accuracy")
    strategy = (spec.get("strategy") or {}).get("name", "random")
    counts = status.get("trials") or {}
    lines = [
        f"NASExperiment {experiment['metadata']['namespace']}/{experiment['metadata']['name']}"
        f"  ({EXPERIMENTS}.{GROUP})",
        f"  state      {_state(experiment)}  {status.get('finishReason') or ''}".rstrip(),
        f"  search     {spec['searchSpace']['family']} with {strategy}",
        f"  trials     {counts.get('done', 0)} done of {spec['budget']['maxTrials']}"
        f" (running {counts.get('running', 0)}, succeeded {counts.get('succeeded', 0)},"
        f" failed {counts.get('failed', 0)}, stopped {counts.get('stopped', 0)})",
    ]
    if counts.get("queueSeconds"):
        lines.append(
            f"  queue      trials waited {spoken_duration(counts['queueSeconds'])} to start in all,"
            f" {spoken_duration(counts.get('meanQueueSeconds') or 0)} each on average"
        )
    screening = status.get("screening")
    if screening:
        lines.append(f"  screening  {_screening(screening)}")
    supernet = status.get("supernet")
    if supernet:
        lines.append(f"  supernet   {supernet_line(supernet)}")
    best = status.get("bestTrial")
    if best:
        lines.append(f"  best       {best['name']}  {metric} {best.get('objective')}")
        lines.append(f"             {json.dumps(best.get('architecture'), sort_keys=True)}")
    final = status.get("final")
    if final:
        lines += [
            f"  final      {line}" if i == 0 else f"             {line}"
            for i, line in enumerate(_final(final))
        ]
    for condition in status.get("conditions") or []:
        if condition.get("status") == "False" and condition.get("type") == "MetricsAvailable":
            lines.append(f"  warning    {condition.get('message')}")
    lines.append("")
    lines.append(
        f"  {'TRIAL':<28}{'ROLE':<10}{'STATE':<11}{'FIDELITY':>9}{metric:>16}  {'QUEUE':<18}REASON"
    )
    for trial in trials:
        t_status = trial.get("status") or {}
        value = (t_status.get("metrics") or {}).get(metric)
        lines.append(
            f"  {trial['metadata']['name']:<28}{trial['spec'].get('role', 'candidate'):<10}"
            f"{t_status.get('state', 'Pending'):<11}"
            f"{t_status.get('fidelity') or trial['spec'].get('fidelity') or '-'!s:>9}"
            f"{(f'{value:.4f}' if isinstance(value, int | float) else '-'):>16}"
            f"  {_queue(t_status, now if now is not None else time.time()):<18}"
            f"{_why(t_status)}".rstrip()
        )
    return "\n".join(lines)


def _why(status: dict[str, Any]) -> str:
    """A pending trial's reason to wait in words ("waiting for admission in queue gpu"), else
    how it ended, else where its metrics came from."""
    if status.get("state", "Pending") == "Pending" and status.get("message"):
        return str(status["message"])
    return str(status.get("reason") or _source(status))


def _final(final: dict[str, Any]) -> list[str]:
    """The final stage in a few lines: its state, each network over its seeds, NAS against
    each baseline, and where the export is."""
    metric = final.get("metric", "")
    if final.get("state") == "AwaitingApproval":
        return [
            f"awaits approval to retrain {', '.join(final.get('finalists') or [])}",
            f"kubenas approve NAME, or annotate {ANNOTATION_APPROVE}=proposed",
        ]
    lines = [str(final.get("state"))]
    for network in final.get("networks") or []:
        figure = (network.get("metrics") or {}).get(metric)
        shown = f"{figure['mean']:.4f} ± {figure['std']:.4f}" if figure else "-"
        lines.append(
            f"{network['kind']:<9}{network['name']:<28}{metric} {shown} ({network['seeds']} seeds)"
        )
    for c in final.get("comparison") or []:
        lines.append(f"{c['nas']} vs baseline {c['baseline']}: {c['difference']:+.4f} {metric}")
    if final.get("export"):
        lines.append(f"export {final['export']}")
    return lines


def approve(namespace: str, name: str, trials: tuple[str, ...]) -> None:
    """Release an experiment's final stage: the annotation the operator reads."""
    api = Api()
    try:
        if api.get_experiment(namespace, name) is None:
            raise NotFound(f"nasexperiment {namespace}/{name} not found")
        value = ",".join(trials) or "proposed"
        patch = {"metadata": {"annotations": {ANNOTATION_APPROVE: value}}}
        api.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, EXPERIMENTS, name, patch
        )
    finally:
        api.close()


def _screening(screening: dict[str, Any]) -> str:
    """The screen in a line, e.g. ``1000 architectures by synflow, naswot in 92 s; Spearman with
    the objective over 6 trained: synflow -0.09, ...``, or its state while it runs."""
    proxies = ", ".join(screening.get("proxies") or [])
    if "screened" not in screening:
        return f"{screening.get('state', 'Pending')} ({proxies})"
    text = f"{screening['screened']} architectures by {proxies}"
    if screening.get("seconds") is not None:
        text += f" in {spoken_duration(float(screening['seconds']))}"
    spearman = screening.get("spearman") or {}
    if spearman:
        values = ", ".join(f"{k} {v:.2f}" for k, v in spearman.items() if v is not None)
        trained = screening.get("trainedScreened", 0)
        text += f"; Spearman with the objective over {trained} trained: {values}"
    if screening.get("message"):
        text += f" ({screening['message']})"
    return text


def _source(status: dict[str, Any]) -> str:
    source = status.get("metricsSource")
    return f"metrics from {source}" if source else ""


def _queue(status: dict[str, Any], now: float) -> str:
    """How long the trial waited to start ("waited 40 s"), or has been waiting so far."""
    queued = from_rfc3339(status.get("queuedAt"))
    if queued is not None:
        return f"waiting {spoken_duration(max(0.0, now - queued))}"
    waited = status.get("queueSeconds") or 0
    return f"waited {spoken_duration(waited)}" if waited else "-"


def best_architecture(experiment: dict[str, Any]) -> dict[str, Any] | None:
    best = (experiment.get("status") or {}).get("bestTrial")
    return dict(best) if best else None
