"""``python -m kubenas_devcluster up|down`` as the README runs it (in a module of its own: the
machine's one real node must not be held by another module's cluster meanwhile)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kubenas_devcluster import Cluster, binaries, node
from kubenas_devcluster.cluster import running_pids
from kubenas_devcluster.procs import alive

pytestmark = pytest.mark.e2e

HACK_DIR = Path(__file__).resolve().parents[2] / "hack"


def test_cli_up_and_down(tmp_path: Path) -> None:
    """``up`` as the README runs it starts a real node; ``down`` leaves no process, mount,
    bridge or iptables rule of it on the machine."""
    state_dir = tmp_path / "state"
    env = {**os.environ, "PYTHONPATH": str(HACK_DIR)}
    env.pop("KUBECONFIG", None)

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "kubenas_devcluster", *args, f"--state-dir={state_dir}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    try:
        assert "source" in cli("up", "--gpus=3")
        shown = subprocess.run(
            [
                "bash",
                "-c",
                f"source {state_dir}/env && kubectl get nodes "
                "-o jsonpath='{.items[0].status.allocatable.nvidia\\.com/gpu} "
                '{.items[0].status.conditions[?(@.type=="Ready")].status} '
                "{.items[0].status.nodeInfo.containerRuntimeVersion}'",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert shown.stdout.split() == ["3", "True", "containerd://1.6.20"], (
            shown.stdout + shown.stderr
        )
        pids = running_pids(state_dir)
        # etcd, the API server, controller-manager, scheduler, Prometheus, the Pushgateway,
        # containerd, the kubelet, kube-proxy and the fake device plugin
        assert len(pids) == 10
        loaded = Cluster.load(state_dir)
        assert loaded.kubeconfig == state_dir / "admin.kubeconfig"
        assert loaded.node_kind == "real"
    finally:
        cli("down")
    assert not [pid for pid in pids if alive(pid)]
    assert not _processes_mentioning(str(state_dir))
    node_paths = node.NodePaths(state_dir / "node", binaries.cache_dir() / "containerd")
    assert node.leftovers(node_paths) == []


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and alive(int(entry)):
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if text.encode() in cmdline:
                found.append(int(entry))
    return found
