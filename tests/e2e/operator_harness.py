"""Helpers for the operator's e2e tests: the operator as a real process (so it can be SIGKILLed),
kubectl from the dev cluster, and polling."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from kubenas_devcluster import BinariesMissing, Cluster, binaries, node

REPO = Path(__file__).resolve().parents[2]
# The namespace label that makes the API server enforce a Pod Security level.
POD_SECURITY = "pod-security.kubernetes.io/enforce"
# A stand-in trainer that honours the trainer contract in seconds (see its docstring).
CONTRACT_TRAINER = Path(__file__).parent / "contract_trainer.py"


def run_cluster(state_dir: Path, **options: Any) -> Iterator[Cluster]:
    """A fixture's body: a dev cluster with the machine's real node, its env (KUBECONFIG,
    PROMETHEUS_URL, ...) exported meanwhile, so tools and kopf's runner find it as a user's
    shell would. After it stops, nothing of the node may be left on the machine."""
    try:
        running = Cluster.start(state_dir, gpus=2, node_kind="real", **options)
    except BinariesMissing as error:
        missing = str(error)
    else:
        missing = ""
    if missing:
        pytest.fail(missing, pytrace=False)
    try:
        with pytest.MonkeyPatch.context() as patch:
            for key, value in running.env().items():
                patch.setenv(key, value)
            yield running
    finally:
        running.stop()
    paths = node.NodePaths(running.state_dir / "node", binaries.cache_dir() / "containerd")
    assert node.leftovers(paths) == []


def create_volume(bin_dir: Path, namespace: str, folder: Path) -> Path:
    """Makes ``folder`` a hostPath PersistentVolume bound to the claim ``files`` in
    ``namespace``, which ``mount_volume`` puts in a pod template at the folder's own path, so
    paths the operator records (checkpoints, exports) read the same on the host. Holds a copy
    of the contract trainer; writable by the images' user."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o777)
    shutil.copy(CONTRACT_TRAINER, folder / CONTRACT_TRAINER.name)
    documents = volume_documents(namespace, "files", folder, "ReadWriteMany")
    kubectl(bin_dir, "apply", "-f", "-", stdin=yaml.safe_dump_all(documents))
    return folder


def volume_documents(
    namespace: str, claim: str, folder: Path, access_mode: str
) -> list[dict[str, Any]]:
    """A hostPath PersistentVolume of ``folder`` (``<namespace>-<claim>``) and the claim bound
    to it, as docs/operate.md sets a checkpoint volume up."""
    volume = f"{namespace}-{claim}"
    return [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": volume},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": [access_mode],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": str(folder), "type": "Directory"},
                "claimRef": {"namespace": namespace, "name": claim},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim, "namespace": namespace},
            "spec": {
                "accessModes": [access_mode],
                "storageClassName": "",
                "volumeName": volume,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    ]


def mount_volume(trial: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``trial`` (an experiment's spec.trial) with the e2e ``volume`` claim mounted at the
    folder's own path in its pods."""
    trial["podTemplate"] = {
        "spec": {
            "volumes": [{"name": "files", "persistentVolumeClaim": {"claimName": "files"}}],
            "containers": [
                {"name": "trainer", "volumeMounts": [{"name": "files", "mountPath": str(folder)}]}
            ],
        }
    }
    return trial


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OperatorProcess:
    """``kubenas operator`` watching one namespace, started and killed like a real pod's process."""

    def __init__(
        self,
        namespace: str,
        log: Path,
        prometheus_url: str | None,
        pushgateway_url: str | None,
        metrics_port: int | None = None,
        health_port: int | None = None,
        pythonpath: Path | None = None,
        extra_args: tuple[str, ...] = (),
        lease_host: str = "127.0.0.1",
    ) -> None:
        self.namespace = namespace
        self.log = log
        self.prometheus_url = prometheus_url
        self.pushgateway_url = pushgateway_url
        self.metrics_port = metrics_port or free_port()
        self.health_port = health_port or free_port()
        # Another checkout's operator package (the benchmark's "before" run); None: this one.
        self.pythonpath = pythonpath
        self.extra_args = extra_args
        # Where worker pods reach this host process: the host's address (Cluster.host).
        self.lease_host = lease_host
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        argv = [
            sys.executable,
            "-m",
            "kubenas.cli",
            "operator",
            "--namespace",
            self.namespace,
            "--metrics-port",
            str(self.metrics_port),
        ]
        env = os.environ.copy()
        if self.pythonpath is None:
            argv += ["--health-port", str(self.health_port)]
            argv += ["--lease-url", f"http://{self.lease_host}:{self.metrics_port}"]
        else:
            env["PYTHONPATH"] = os.pathsep.join(
                filter(None, [str(self.pythonpath), env.get("PYTHONPATH")])
            )
        if self.prometheus_url:
            argv += ["--prometheus-url", self.prometheus_url]
        if self.pushgateway_url:
            argv += ["--pushgateway-url", self.pushgateway_url]
        argv += self.extra_args
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.pythonpath or REPO,
                env=env,
                start_new_session=True,
            )
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL: no clean-up, no finalizers run, exactly like a node losing the pod."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def kubectl(
    bin_dir: Path, *args: str, check: bool = True, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / "kubectl"), *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=timeout,
        input=stdin,
        env=os.environ.copy(),
    )


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.5
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def experiment(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return client.CustomObjectsApi(api).get_namespaced_custom_object(  # type: ignore[no-any-return]
        "kubenas.io", "v1alpha1", namespace, "nasexperiments", name
    )


def trials(api: client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    listed = client.CustomObjectsApi(api).list_namespaced_custom_object(
        "kubenas.io", "v1alpha1", namespace, "nastrials"
    )
    return listed["items"]  # type: ignore[no-any-return]


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next(
        (c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == kind), None
    )


def finished(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    obj = experiment(api, namespace, name)
    for kind in ("Succeeded", "Failed"):
        c = condition(obj, kind)
        if c and c["status"] == "True":
            return obj
    return None
