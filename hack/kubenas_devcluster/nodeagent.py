"""The node agent: our stand-in for the kubelet, one process serving one or more Nodes.

It registers each Node with ``nvidia.com/gpu`` capacity, keeps it Ready with a Lease, watches
the pods bound to it and hands each to a :class:`PodRunner`; a :class:`LogServer` answers the
API server's ``kubectl logs`` requests. Level-based: every list or watch event is reconciled
against what runs locally, so a lost watch (410 Gone, a dropped stream) costs only a re-list.
"""

from __future__ import annotations

import logging
import os
import platform
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kubenas_devcluster.apiclient import ApiClient, ApiError, Json
from kubenas_devcluster.gpus import GpuAllocator
from kubenas_devcluster.kubeconfig import read_admin_credentials
from kubenas_devcluster.logserver import LogServer
from kubenas_devcluster.podrunner import GPU_RESOURCE, NodeContext, PodRunner, delete_pod
from kubenas_devcluster.podstatus import LOOPBACK, now

log = logging.getLogger(__name__)

LEASE_SECONDS = 40
LEASE_RENEW_SECONDS = 10.0
STATUS_REFRESH_SECONDS = 60.0
WATCH_SECONDS = 60
SHUTDOWN_GRACE_SECONDS = 3.0
# Never handed to pods: the admin's credentials, and in-cluster hints that would bypass the
# pod's own kubeconfig.
_PRIVATE_ENV = ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")


@dataclass(frozen=True)
class NodeSpec:
    """A Node to register: its name and its GPU indices."""

    name: str
    gpu_indices: tuple[int, ...]

    @staticmethod
    def parse_all(specs: list[str]) -> list[NodeSpec]:
        """``name=gpus`` items; GPU indices run on across nodes, as separate devices would."""
        nodes, first = [], 0
        for spec in specs:
            name, _, count = spec.partition("=")
            gpus = int(count or 0)
            nodes.append(NodeSpec(name, tuple(range(first, first + gpus))))
            first += gpus
        return nodes


class NodeAgent:
    """Runs the registration, lease and watch loops until :meth:`shutdown`."""

    def __init__(
        self, api: ApiClient, nodes: list[NodeSpec], work_dir: Path, kubelet_port: int
    ) -> None:
        """``kubelet_port``: where the API server finds this agent's log endpoint."""
        self._api = api
        self._nodes = nodes
        self._kubelet_port = kubelet_port
        base_env = {k: v for k, v in os.environ.items() if k not in _PRIVATE_ENV}
        self._contexts = {
            node.name: NodeContext(
                api,
                node.name,
                GpuAllocator(node.gpu_indices),
                work_dir / node.name,
                base_env,
                sys.executable,
            )
            for node in nodes
        }
        self._registered_at = now()
        self._runners: dict[str, PodRunner] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def run(self) -> None:
        """Register the nodes, then serve them until :meth:`shutdown` is called."""
        for node in self._nodes:
            self._register(node)
        threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True).start()
        for node in self._nodes:
            threading.Thread(
                target=self._watch_loop, args=(node.name,), name=f"watch-{node.name}", daemon=True
            ).start()
        self._stopping.wait()
        with self._lock:
            runners = list(self._runners.values())
        for runner in runners:
            runner.request_stop(SHUTDOWN_GRACE_SECONDS, delete=False)
        for runner in runners:
            runner.join(SHUTDOWN_GRACE_SECONDS + 5)

    def shutdown(self) -> None:
        self._stopping.set()

    def container_log(self, namespace: str, pod: str, container: str) -> Path | None:
        """The log file of a pod this agent runs, on any of its nodes. The newest runner wins:
        a pod recreated under its old name may overlap the old one's graceful stop."""
        with self._lock:
            runners = list(self._runners.values())
        for runner in reversed(runners):
            if runner.namespace == namespace and runner.name == pod:
                return runner.log_path(container)
        return None

    def _register(self, node: NodeSpec) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": node.name,
                "labels": {
                    "kubernetes.io/hostname": node.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "beta.kubernetes.io/os": "linux",
                    "beta.kubernetes.io/arch": "amd64",
                    "node.kubernetes.io/instance-type": "kubenas-local",
                },
            },
        }
        self._retry(lambda: self._create_or_keep("/api/v1/nodes", body))
        self._retry(lambda: self._patch_node_status(node))
        self._retry(lambda: self._renew_lease(node.name))
        log.info("registered node %s with GPUs %s", node.name, list(node.gpu_indices))

    def _create_or_keep(self, path: str, body: Json) -> None:
        try:
            self._api.create(path, body)
        except ApiError as error:
            if error.status != 409:
                raise

    def _patch_node_status(self, node: NodeSpec) -> None:
        stamp = now()
        resources = {
            "cpu": str(os.cpu_count() or 1),
            "memory": _memory(),
            "pods": "110",
            "ephemeral-storage": "100Gi",
            GPU_RESOURCE: str(len(node.gpu_indices)),
        }
        pressure = {
            "MemoryPressure": "KubeletHasSufficientMemory",
            "DiskPressure": "KubeletHasNoDiskPressure",
            "PIDPressure": "KubeletHasSufficientPID",
        }
        conditions = [
            {
                "type": kind,
                "status": "False",
                "reason": reason,
                "lastHeartbeatTime": stamp,
                "lastTransitionTime": self._registered_at,
            }
            for kind, reason in pressure.items()
        ]
        conditions.append(
            {
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "kubenas node agent is posting ready status",
                "lastHeartbeatTime": stamp,
                "lastTransitionTime": self._registered_at,
            }
        )
        self._api.patch_merge(
            f"/api/v1/nodes/{node.name}/status",
            {
                "status": {
                    "capacity": resources,
                    "allocatable": resources,
                    "conditions": conditions,
                    "addresses": [
                        {"type": "InternalIP", "address": LOOPBACK},
                        {"type": "Hostname", "address": node.name},
                    ],
                    "daemonEndpoints": {"kubeletEndpoint": {"Port": self._kubelet_port}},
                    "nodeInfo": {
                        "architecture": "amd64",
                        "operatingSystem": "linux",
                        "kernelVersion": platform.release(),
                        "osImage": "kubenas dev cluster",
                        "containerRuntimeVersion": "kubenas://local-process",
                        "kubeletVersion": "v1.36.3",
                        "kubeProxyVersion": "",
                        "machineID": "",
                        "systemUUID": "",
                        "bootID": "",
                    },
                }
            },
        )

    def _heartbeat_loop(self) -> None:
        """Renew each Lease every 10 s (what node-lifecycle watches) and refresh status now and
        then, so the nodes never go NotReady while the agent lives."""
        last_status = time.monotonic()
        while not self._stopping.wait(LEASE_RENEW_SECONDS):
            refresh = time.monotonic() - last_status > STATUS_REFRESH_SECONDS
            for node in self._nodes:
                try:
                    self._renew_lease(node.name)
                    if refresh:
                        self._patch_node_status(node)
                except (ApiError, OSError) as error:
                    log.warning("heartbeat of %s failed: %s", node.name, error)
            if refresh:
                last_status = time.monotonic()

    def _renew_lease(self, name: str) -> None:
        path = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
        spec = {
            "holderIdentity": name,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": _micro_now(),
        }
        try:
            self._api.patch_merge(f"{path}/{name}", {"spec": spec})
        except ApiError as error:
            if error.status != 404:
                raise
            node = self._api.get(f"/api/v1/nodes/{name}")
            self._create_or_keep(
                path,
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {
                        "name": name,
                        "ownerReferences": [
                            {
                                "apiVersion": "v1",
                                "kind": "Node",
                                "name": name,
                                "uid": node["metadata"]["uid"],
                            }
                        ],
                    },
                    "spec": spec,
                },
            )

    def _watch_loop(self, node_name: str) -> None:
        """List, then watch from the list's resourceVersion; any failure means re-list."""
        params = {"fieldSelector": f"spec.nodeName={node_name}"}
        while not self._stopping.is_set():
            try:
                listing = self._api.get("/api/v1/pods", params)
                self._reconcile_listing(node_name, listing["items"])
                version = listing["metadata"]["resourceVersion"]
                while not self._stopping.is_set():
                    version = self._watch_once(node_name, params, version)
            except _Relist:
                continue
            except (ApiError, OSError, ValueError) as error:
                log.warning("pod watch of %s failed, re-listing: %s", node_name, error)
                self._stopping.wait(1.0)

    def _watch_once(self, node_name: str, params: dict[str, str], version: str) -> str:
        for event in self._api.watch(
            "/api/v1/pods", {**params, "resourceVersion": version}, WATCH_SECONDS
        ):
            kind, pod = event["type"], event["object"]
            if kind == "ERROR":
                raise _Relist()
            version = pod["metadata"].get("resourceVersion", version)
            if kind == "DELETED":
                self._forget(pod["metadata"]["uid"])
            elif kind in ("ADDED", "MODIFIED"):
                self._reconcile(node_name, pod)
        return version

    def _reconcile_listing(self, node_name: str, pods: list[Json]) -> None:
        for pod in pods:
            self._reconcile(node_name, pod)
        present = {pod["metadata"]["uid"] for pod in pods}
        with self._lock:
            gone = [
                uid
                for uid, runner in self._runners.items()
                if uid not in present and runner.node_name == node_name
            ]
        for uid in gone:
            self._forget(uid)

    def _reconcile(self, node_name: str, pod: Json) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        with self._lock:
            runner = self._runners.get(uid)
            if (
                runner is None
                and "deletionTimestamp" not in meta
                and pod.get("status", {}).get("phase") not in ("Succeeded", "Failed")
            ):
                runner = PodRunner(self._contexts[node_name], pod)
                self._runners[uid] = runner
                runner.start()
        if "deletionTimestamp" not in meta:
            return
        if runner is None:
            delete_pod(self._api, pod)
        else:
            runner.request_stop(float(meta.get("deletionGracePeriodSeconds") or 0), delete=True)

    def _forget(self, uid: str) -> None:
        """The pod object is gone (force-deleted, or removed by us): stop it now if it runs."""
        with self._lock:
            runner = self._runners.pop(uid, None)
        if runner is not None:
            runner.request_stop(0.0, delete=False)

    @staticmethod
    def _retry(action: Callable[[], None], attempts: int = 60) -> None:
        for attempt in range(attempts):
            try:
                action()
                return
            except (ApiError, OSError) as error:
                if attempt == attempts - 1:
                    raise
                log.info("retrying: %s", error)
                time.sleep(0.5)


class _Relist(Exception):
    """The watch cannot resume (410 Gone or another ERROR event)."""


def _micro_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())


def _memory() -> str:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return f"{line.split()[1]}Ki"
    return "8Gi"


def serve(
    kubeconfig: Path,
    node_specs: list[str],
    work_dir: Path,
    kubelet_tls: tuple[Path, Path, Path],
) -> None:
    """Entry point of ``python -m kubenas_devcluster agent``: serve until SIGTERM/SIGINT.
    ``kubelet_tls``: the log endpoint's serving cert and key, and the CA its clients need."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(threadName)s %(message)s")
    logs = LogServer(*kubelet_tls)
    agent = NodeAgent(
        ApiClient(read_admin_credentials(kubeconfig)),
        NodeSpec.parse_all(node_specs),
        work_dir,
        logs.port,
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: agent.shutdown())
    logs.start(agent.container_log)
    try:
        agent.run()
    finally:
        logs.close()
