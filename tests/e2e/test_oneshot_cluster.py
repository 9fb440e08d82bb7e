"""Strategy oneshot on the dev cluster: the supernet trial is a Job like any other, its derived
architectures become candidate Jobs, and a supernet whose pod is SIGKILLed mid-training is
started again and continues from its checkpoint instead of starting over."""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from kubenas_devcluster import Cluster

from .operator_harness import (
    REPO,
    OperatorProcess,
    condition,
    finished,
    kubectl,
    mount_volume,
    trials,
    wait_until,
)

pytestmark = pytest.mark.e2e

NAME = "oneshot-digits"


def _supernet_processes(experiment: str) -> list[int]:
    """The experiment's supernet trainer as processes of the host (a container's processes
    are, in namespaces of their own), found by the contract's environment."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"KUBENAS_EXPERIMENT=" + experiment.encode() in environ and any(
            v.startswith(b"KUBENAS_SUPERNET=") for v in environ
        ):
            found.append(int(entry.name))
    return found


def _checkpointed_epoch(path: Path) -> int:
    """The epoch of the supernet's latest checkpoint, 0 while it has none."""
    if not path.exists():
        return 0
    import torch  # the test reads what the trainer wrote; the operator never imports torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        return int(state["supernet"]["epoch"])
    except (OSError, RuntimeError, EOFError):
        return 0  # caught mid-rename: look again


def test_a_supernet_killed_mid_training_resumes_and_its_derived_trials_run(
    cluster: Cluster,
    k8s: client.ApiClient,
    namespace: str,
    start_operator: Callable[..., OperatorProcess],
    volume: Path,
) -> None:
    start_operator(namespace)
    doc = yaml.safe_load((REPO / "examples" / f"{NAME}.yaml").read_text())
    spec = doc["spec"]
    spec["searchSpace"]["stemChannels"] = [8]
    spec["strategy"] |= {"supernetEpochs": 10, "topK": 3}
    spec["budget"] = {"maxTrials": 3, "parallelTrials": 2, "maxFailedTrials": 1}
    spec["fidelity"] = {"max": 2}
    spec["trial"]["checkpointDir"] = str(volume / "checkpoints")
    mount_volume(spec["trial"], volume)
    kubectl(cluster.bin_dir, "apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(doc))

    checkpoint = volume / "checkpoints" / NAME / "supernet" / "checkpoint.pt"
    wait_until(lambda: _checkpointed_epoch(checkpoint) >= 2, 300, "two supernet epochs")
    killed_at = _checkpointed_epoch(checkpoint)
    pids = _supernet_processes(NAME)
    assert pids, "the supernet trainer's container is running"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)

    done = wait_until(lambda: finished(k8s, namespace, NAME), 900, "the oneshot experiment")
    assert condition(done, "Succeeded")["status"] == "True", done["status"]  # type: ignore[index]
    everything = sorted(trials(k8s, namespace), key=lambda t: t["spec"]["index"])
    roles = Counter(t["spec"]["role"] for t in everything)
    assert roles == {"supernet": 2, "candidate": 3}
    first, second = everything[0], everything[1]
    assert first["status"]["state"] == "Failed", first["status"]
    assert second["status"]["state"] == "Succeeded"
    # The second supernet trial continued from the first one's last checkpoint.
    assert second["status"]["metrics"]["start_epoch"] >= killed_at >= 2
    assert len(second["status"]["derived"]) == 3
    derived = [d["params"] for d in second["status"]["derived"]]
    candidates = [t for t in everything if t["spec"]["role"] == "candidate"]
    assert [t["spec"]["parameters"] for t in candidates] == derived
    assert all(t["status"]["state"] == "Succeeded" for t in candidates)
    supernet = done["status"]["supernet"]
    print(f"oneshot on the cluster: supernet {supernet}, best {done['status']['bestTrial']}")
    assert supernet["attempts"] == 2 and supernet["derived"] == 3
    assert supernet["state"] == "Succeeded"
    assert done["status"]["bestTrial"]["name"] in {t["metadata"]["name"] for t in candidates}
    got = kubectl(cluster.bin_dir, "get", "nasx", NAME, "-n", namespace, check=False)
    assert got.returncode == 0
