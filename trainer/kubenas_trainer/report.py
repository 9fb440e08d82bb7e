"""Trial reports: JSON events to stdout, JSON-lines files, a Pushgateway, the termination message.

A user's own trainer honours the kubenas contract with::

    from kubenas_trainer.report import Reporter
    reporter = Reporter.from_env()
    reporter.epoch(1, {"val_accuracy": 0.91, "train_loss": 0.3})
    reporter.final({"val_accuracy": 0.93, "test_accuracy": 0.92}, checkpoint="/ckpt/model.pt")

This module needs only prometheus-client (imported when a Pushgateway is configured), not torch.
"""

import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from kubenas.api.vocabulary import COST_METRICS
from kubenas_trainer.config import ConfigError
from kubenas_trainer.settings import resolve_settings

KUBERNETES_TERMINATION_LOG = Path("/dev/termination-log")
TERMINATION_MESSAGE_LIMIT = 4096
CORE_METRICS = (
    "val_accuracy",
    "test_accuracy",
    "epochs",
    "train_seconds",
    *COST_METRICS,
)


class Sink(Protocol):
    def emit(self, event: Mapping[str, Any]) -> None: ...


class StdoutSink:
    def emit(self, event: Mapping[str, Any]) -> None:
        print(json.dumps(event), flush=True)


class JsonlSink:
    """Appends one line per event, flushed at once so a watcher sees progress live."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def emit(self, event: Mapping[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as stream:
            stream.write(json.dumps(event) + "\n")


class Reporter:
    """Sends a trial's start, per-epoch and final events to every configured sink."""

    def __init__(
        self, sinks: Sequence[Sink], trial: str = "", termination_path: Path | None = None
    ) -> None:
        self.sinks = list(sinks)
        self.trial = trial
        self.termination_path = termination_path

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Reporter":
        """The reporter the ``KUBENAS_*`` environment asks for (see docs/trainer-contract.md)."""
        return cls.from_settings(resolve_settings([], os.environ if environ is None else environ))

    @classmethod
    def from_settings(cls, values: Mapping[str, str | None]) -> "Reporter":
        sinks: list[Sink] = []
        for entry in filter(None, (part.strip() for part in (values["report"] or "").split(","))):
            if entry == "stdout":
                sinks.append(StdoutSink())
            elif entry.startswith("jsonl:") and len(entry) > len("jsonl:"):
                sinks.append(JsonlSink(Path(entry.removeprefix("jsonl:"))))
            else:
                raise ConfigError(f"unknown report sink {entry!r}; want stdout or jsonl:PATH")
        trial = values["trial"] or ""
        if values["pushgateway_url"]:
            from kubenas_trainer.pushgateway import PushgatewaySink

            sinks.append(
                PushgatewaySink(
                    values["pushgateway_url"],
                    values["namespace"] or "",
                    values["experiment"] or "",
                    trial,
                )
            )
        termination = values["termination_message_path"]
        termination_path = Path(termination) if termination else _kubernetes_termination_log()
        return cls(sinks, trial, termination_path)

    def start(self, **fields: Any) -> None:
        self._emit({"event": "start", "trial": self.trial, **fields})

    def epoch(
        self,
        epoch: int,
        metrics: Mapping[str, float],
        *,
        architecture: Mapping[str, Any] | None = None,
    ) -> None:
        """One epoch's metrics; a supernet trial adds the ``architecture`` (assignment) it
        currently derives, so its progress can be followed epoch by epoch."""
        event: dict[str, Any] = {
            "event": "epoch",
            "trial": self.trial,
            "epoch": epoch,
            "metrics": dict(metrics),
        }
        if architecture is not None:
            event["architecture"] = dict(architecture)
        self._emit(event)

    def screen(self, proxies: Sequence[str], scores: Mapping[str, Sequence[float | None]]) -> None:
        """A screen trial's scores: per proxy, one value per candidate in the screening's order
        (None where a proxy is undefined). Too big for a termination message, so sinks only."""
        self._emit(
            {
                "event": "screen",
                "trial": self.trial,
                "proxies": list(proxies),
                "scores": {p: list(v) for p, v in scores.items()},
            }
        )

    def final(
        self,
        metrics: Mapping[str, float],
        checkpoint: str | Path | None = None,
        *,
        device: str | None = None,
        infeasible: Sequence[str] = (),
        export: str | Path | None = None,
        derived: Sequence[Mapping[str, Any]] = (),
    ) -> dict[str, Any]:
        """Report the final metrics, also as the termination message; returns the summary.
        ``device`` names what cost metrics were measured on; ``infeasible`` says which
        constraints a trial broke when it ended before training; ``export`` is the folder of
        the exported model; ``derived`` are a supernet trial's architectures, best first."""
        summary: dict[str, Any] = {
            "event": "final",
            "trial": self.trial,
            "metrics": dict(metrics),
            "checkpoint": None if checkpoint is None else str(checkpoint),
        }
        if device is not None:
            summary["device"] = device
        if infeasible:
            summary["infeasible"] = list(infeasible)
        if export is not None:
            summary["export"] = str(export)
        if derived:
            summary["derived"] = [dict(entry) for entry in derived]
        self._emit(summary)
        self._terminate(summary)
        return summary

    def error(self, message: str) -> None:
        """Record why the trial failed, so the runtime can show a reason, not just an exit code."""
        event = {"event": "error", "trial": self.trial, "error": message[:2000]}
        self._emit(event)
        self._terminate(event)

    def _emit(self, event: Mapping[str, Any]) -> None:
        for sink in self.sinks:
            sink.emit(event)

    def _terminate(self, event: Mapping[str, Any]) -> None:
        """Write ``event`` within the kubelet's limit: past it, keep only the core metrics, and
        if that is still too long, drop derived architectures from the worst up."""
        if self.termination_path is None:
            return
        text = json.dumps(event)
        if len(text.encode()) > TERMINATION_MESSAGE_LIMIT:
            core = {key: event["metrics"][key] for key in CORE_METRICS if key in event["metrics"]}
            shortened = {**event, "metrics": core, "truncated": True}
            text = json.dumps(shortened)
            while len(text.encode()) > TERMINATION_MESSAGE_LIMIT and shortened.get("derived"):
                shortened["derived"] = shortened["derived"][:-1]
                text = json.dumps(shortened)
        try:
            self.termination_path.write_text(text)
        except OSError as error:
            print(f"kubenas_trainer: cannot write termination message: {error}", file=sys.stderr)


def _kubernetes_termination_log() -> Path | None:
    """``/dev/termination-log`` when the kubelet has mounted it (it exists and is writable).

    Checking the file rather than /dev itself keeps a local run as root from creating it.
    """
    path = KUBERNETES_TERMINATION_LOG
    return path if path.is_file() and os.access(path, os.W_OK) else None
