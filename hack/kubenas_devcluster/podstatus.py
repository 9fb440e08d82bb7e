"""Pure builders for the pod status the node agent reports (phase, conditions, containers)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from kubenas_devcluster.apiclient import Json

LOOPBACK = "127.0.0.1"


def now() -> str:
    """An RFC 3339 timestamp, second precision, as the API server stores them."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ContainerState:
    """What the agent knows of one container; ``state`` is the API's ``{waiting|running|
    terminated: {...}}`` object."""

    name: str
    image: str
    init: bool = False
    restart_count: int = 0
    state: Json = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Json = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return "running" in self.state

    @property
    def succeeded(self) -> bool:
        finished: Json = self.state.get("terminated", {})
        return finished.get("exitCode") == 0

    @property
    def ready(self) -> bool:
        """Running, or for an init container: completed successfully."""
        return self.succeeded if self.init else self.running

    def to_api(self, pod_uid: str) -> Json:
        return {
            "name": self.name,
            "image": self.image,
            "imageID": self.image,
            "containerID": f"kubenas://{pod_uid}-{self.name}-{self.restart_count}",
            "ready": self.ready,
            "started": self.running,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }


def terminated(exit_code: int, message: str, started_at: str) -> Json:
    """The ``state.terminated`` object for a process that exited with ``exit_code``."""
    details: Json = {
        "exitCode": exit_code,
        "reason": "Completed" if exit_code == 0 else "Error",
        "startedAt": started_at,
        "finishedAt": now(),
    }
    if message:
        details["message"] = message
    return {"terminated": details}


@dataclass
class Conditions:
    """Pod conditions, keeping ``lastTransitionTime`` until a condition really changes."""

    _current: dict[str, tuple[str, str, str]] = field(default_factory=dict)

    def set(self, kind: str, true: bool, reason: str = "") -> None:
        status = "True" if true else "False"
        previous = self._current.get(kind)
        if previous is None or previous[0] != status:
            self._current[kind] = (status, reason, now())

    def to_api(self) -> list[Json]:
        result = []
        for kind, (status, reason, changed) in self._current.items():
            condition: Json = {"type": kind, "status": status, "lastTransitionTime": changed}
            if reason:
                condition["reason"] = reason
            result.append(condition)
        return result


def pod_status(
    phase: str,
    start_time: str,
    conditions: Conditions,
    init_containers: list[ContainerState],
    containers: list[ContainerState],
    pod_uid: str,
) -> Json:
    """The whole ``status`` (lists complete, as a JSON merge patch replaces lists)."""
    all_running = bool(containers) and all(c.running for c in containers)
    done = phase in ("Succeeded", "Failed")
    initialized = all(c.succeeded for c in init_containers)
    conditions.set("PodScheduled", True)
    conditions.set("PodReadyToStartContainers", not done)
    conditions.set("Initialized", initialized, "" if initialized else "ContainersNotInitialized")
    conditions.set("ContainersReady", all_running, "" if all_running else _not_ready(phase))
    conditions.set("Ready", all_running, "" if all_running else _not_ready(phase))
    return {
        "phase": phase,
        "hostIP": LOOPBACK,
        "hostIPs": [{"ip": LOOPBACK}],
        "podIP": LOOPBACK,
        "podIPs": [{"ip": LOOPBACK}],
        "startTime": start_time,
        "conditions": conditions.to_api(),
        "initContainerStatuses": [c.to_api(pod_uid) for c in init_containers],
        "containerStatuses": [c.to_api(pod_uid) for c in containers],
    }


def _not_ready(phase: str) -> str:
    return "PodCompleted" if phase in ("Succeeded", "Failed") else "ContainersNotReady"
