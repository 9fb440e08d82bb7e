"""Start and stop the whole dev cluster; the library behind ``up``/``down`` and the fixture.

Everything lives in one state folder: certificates, etcd's data, logs, PIDs, the admin
kubeconfig, ``cluster.json`` (so another process can find and stop the cluster) and ``env``
(a file to ``source``). Stopping goes by recorded PID in reverse start order, then sweeps
what the node left behind: a real node's containers, mounts, bridge and iptables rules
(:mod:`node`), or the node agent's pod processes.

The node is real by default: containerd, the kubelet and kube-proxy run our images. The node
agent (``node_kind="agent"``: pods as host processes, any number of nodes) remains for
``kubenas bench operator``, whose figure is the operator's own overhead per trial at up to
100 experiments: container start-up would swamp it, and the real node is one per machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import ssl
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import kubenas_images
from kubenas_devcluster import binaries, controlplane, node, procs, prometheus
from kubenas_devcluster.apiclient import ApiClient, ApiError
from kubenas_devcluster.certs import Pki, write_pki
from kubenas_devcluster.kubeconfig import read_admin_credentials, write_admin_kubeconfig

# Reverse start order: the agent first, so pods end while the API server can still hear it.
STOP_ORDER = (
    "nodeagent",
    "kube-scheduler",
    "kube-controller-manager",
    "kube-apiserver",
    "etcd",
    "prometheus",
    "pushgateway",
)
NODE_PREFIX = "kubenas-node-"
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent
NodeKind = Literal["real", "agent"]
# Where a real node finds our images: the names the chart's and the operator's defaults use.
IMAGE_REGISTRIES = ("localhost/kubenas-", "ghcr.io/kubenas/kubenas-", "docker.io/library/kubenas-")


class BinariesMissing(RuntimeError):
    """The cached binaries or images are absent or stale: ``make cluster-binaries`` (and
    ``make images`` for a real node) build them."""


@dataclass(frozen=True)
class Cluster:
    """A running dev cluster and everything a test or a person needs to use it."""

    state_dir: Path
    bin_dir: Path
    kubeconfig: Path
    server: str
    prometheus_url: str
    pushgateway_url: str
    operator_metrics_port: int
    nodes: tuple[str, ...]
    # "real": containerd + kubelet; "agent": our node agent runs pods as host processes.
    node_kind: str = "agent"
    # The address pods reach the host at (Prometheus, the Pushgateway, an operator run on the
    # host): the host's own address beside a real node, loopback beside the agent.
    host: str = "127.0.0.1"

    @classmethod
    def start(
        cls,
        state_dir: Path,
        gpus: int = 2,
        nodes: int = 1,
        operator_metrics_port: int | None = None,
        bin_dir: Path | None = None,
        timeout: float = 90.0,
        audit_log: Path | None = None,
        node_kind: NodeKind = "real",
    ) -> Cluster:
        """Start every component on free ports; return once a pod can be scheduled.
        ``audit_log``: where the API server writes its audit log (none by default).
        ``node_kind``: a real node (one, machine-wide) or the node agent's ``nodes``."""
        bin_dir = bin_dir or binaries.bin_dir()
        missing = binaries.missing_binaries(bin_dir) + binaries.missing_debian_commands()
        if missing:
            raise BinariesMissing(
                f"dev cluster binaries missing or stale in {bin_dir}: "
                f"{', '.join(missing)}; run `make cluster-binaries`"
            )
        images: list[node.NodeImage] = []
        if node_kind == "real":
            if nodes != 1:
                raise ValueError("a real node is one per machine: nodes must be 1")
            images = _node_images()
        state_dir = state_dir.resolve()
        _clear_state(state_dir)
        try:
            if node_kind == "real":
                node.claim(state_dir)
            return _start(
                state_dir,
                bin_dir,
                gpus,
                nodes,
                operator_metrics_port,
                timeout,
                audit_log,
                images if node_kind == "real" else None,
            )
        except BaseException:
            stop(state_dir)
            raise

    @classmethod
    def load(cls, state_dir: Path) -> Cluster:
        """The cluster recorded in ``state_dir`` by :meth:`start` (maybe in another process)."""
        raw = json.loads((state_dir / "cluster.json").read_text())
        return cls(
            **{
                **raw,
                **{key: Path(raw[key]) for key in ("state_dir", "bin_dir", "kubeconfig")},
                "nodes": tuple(raw["nodes"]),
            }
        )

    def stop(self) -> None:
        stop(self.state_dir)

    def env(self) -> dict[str, str]:
        """Variables to use the cluster: credentials, Prometheus, and our kubectl/helm first."""
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "PROMETHEUS_URL": self.prometheus_url,
            "PUSHGATEWAY_URL": self.pushgateway_url,
            "OPERATOR_METRICS_PORT": str(self.operator_metrics_port),
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def write_env_file(self) -> Path:
        path = self.state_dir / "env"
        lines = [
            f"export {key}={shlex.quote(value)}"
            for key, value in self.env().items()
            if key != "PATH"
        ]
        lines.append(f'export PATH={shlex.quote(str(self.bin_dir))}:"$PATH"')
        path.write_text("\n".join(lines) + "\n")
        return path


def stop(state_dir: Path) -> None:
    """Stop what ``state_dir`` records (a real node first, with its containers and what they
    leave on the machine), then any pod process group still listed by the agent."""
    state_dir = state_dir.resolve()
    node.stop(state_dir)
    procs.stop_recorded(state_dir, STOP_ORDER)
    for pgid_file in (state_dir / "agent").glob("*/pods/*/*.pgid"):
        with contextlib.suppress(ValueError):
            procs.stop_group(int(pgid_file.read_text().strip()), grace=0.0)
        pgid_file.unlink(missing_ok=True)
    (state_dir / "cluster.json").unlink(missing_ok=True)


def running_pids(state_dir: Path) -> list[int]:
    """PIDs recorded in ``state_dir`` that are still alive (empty once stopped)."""
    pids = [int(f.read_text().strip()) for f in sorted((state_dir / "pids").glob("*.pid"))]
    return [pid for pid in pids if procs.alive(pid)]


def _node_images() -> list[node.NodeImage]:
    """The operator and trainer images (under every name our defaults use) and the pause
    image, from ``make images``' store."""
    store = kubenas_images.storage()
    wanted = [*(kubenas_images.image_name(t) for t in kubenas_images.TARGETS), kubenas_images.PAUSE]
    absent = [name for name in wanted if not kubenas_images.image_exists(name, store)]
    if absent:
        raise BinariesMissing(
            f"images for the real node missing: {', '.join(absent)}; run `make images`"
        )
    images = []
    for name in wanted:
        image_id = f"sha256:{kubenas_images.image_id(name, store)}"
        short = name.removeprefix("localhost/kubenas-")
        aliases = (
            (name,)
            if name == kubenas_images.PAUSE
            else tuple(f"{registry}{short}" for registry in IMAGE_REGISTRIES)
        )

        def export(path: Path, name: str = name) -> None:
            kubenas_images.export_oci_archive(name, store, path)

        images.append(node.NodeImage(image_id, aliases, export))
    return images


def _clear_state(state_dir: Path) -> None:
    if running_pids(state_dir):
        raise RuntimeError(f"a dev cluster is already running from {state_dir}; stop it first")
    if state_dir.exists():
        shutil.rmtree(state_dir)
    state_dir.mkdir(parents=True)


def _start(
    state_dir: Path,
    bin_dir: Path,
    gpus: int,
    nodes: int,
    operator_metrics_port: int | None,
    timeout: float,
    audit_log: Path | None,
    node_images: list[node.NodeImage] | None,
) -> Cluster:
    """Start it all; ``node_images`` None: the node agent, else a real node with those."""
    deadline = time.monotonic() + timeout
    real = node_images is not None
    host = node.host_address() if real else "127.0.0.1"
    pki = write_pki(state_dir / "pki", host_ips=(host,) if real else ())
    ports = {
        name: procs.free_port()
        for name in ("etcd", "etcd-peer", "apiserver", "prometheus", "pushgateway", "operator")
    }
    if operator_metrics_port is not None:
        ports["operator"] = operator_metrics_port
    server = f"https://127.0.0.1:{ports['apiserver']}"
    kubeconfig = state_dir / "admin.kubeconfig"
    write_admin_kubeconfig(kubeconfig, server, pki)
    pushgateway = f"{host}:{ports['pushgateway']}"

    def left() -> float:
        return max(deadline - time.monotonic(), 1.0)

    def not_counting(since: float) -> None:
        """Leave a step's time out of ``timeout`` (a first import of the images: minutes)."""
        nonlocal deadline
        deadline += time.monotonic() - since

    etcd = procs.spawn(
        "etcd",
        controlplane.etcd_argv(bin_dir, state_dir / "etcd-data", ports["etcd"], ports["etcd-peer"]),
        state_dir,
    )
    gateway = procs.spawn(
        "pushgateway", prometheus.pushgateway_argv(ports["pushgateway"], host), state_dir
    )
    prom = procs.spawn(
        "prometheus",
        prometheus.prometheus_argv(
            state_dir / "prometheus",
            ports["prometheus"],
            pushgateway,
            f"{host}:{ports['operator']}",
            host,
        ),
        state_dir,
    )
    procs.wait_until_ready("etcd", f"http://127.0.0.1:{ports['etcd']}/health", etcd, left())
    audit = None
    if audit_log is not None:
        audit = (state_dir / "audit-policy.yaml", audit_log)
        audit[0].write_text(controlplane.AUDIT_POLICY)
    apiserver = procs.spawn(
        "kube-apiserver",
        controlplane.apiserver_argv(
            bin_dir, pki, ports["apiserver"], ports["etcd"], audit, host if real else None
        ),
        state_dir,
    )
    tls = ssl.create_default_context(cafile=str(pki.ca_cert))
    procs.wait_until_ready("kube-apiserver", f"{server}/readyz", apiserver, left(), tls)
    procs.spawn(
        "kube-controller-manager",
        controlplane.controller_manager_argv(bin_dir, pki, kubeconfig),
        state_dir,
    )
    procs.spawn("kube-scheduler", controlplane.scheduler_argv(bin_dir, kubeconfig), state_dir)
    node_names = tuple(f"{NODE_PREFIX}{i}" for i in range(nodes))
    if node_images is not None:
        loading = time.monotonic()
        node.start(
            state_dir,
            bin_dir,
            binaries.cache_dir() / "containerd",
            pki,
            f"https://{host}:{ports['apiserver']}",
            node_names[0],
            gpus,
            node_images,
        )
        not_counting(loading)
        watched = _recorded(state_dir, ("containerd", "kubelet", "kube-proxy", "kubenas-fakegpu"))
    else:
        watched = {"nodeagent": _spawn_agent(state_dir, bin_dir, kubeconfig, pki, node_names, gpus)}
    procs.wait_until_ready("pushgateway", f"http://{pushgateway}/-/ready", gateway, left())
    procs.wait_until_ready(
        "prometheus", f"http://{host}:{ports['prometheus']}/-/ready", prom, left()
    )
    _wait_schedulable(
        ApiClient(read_admin_credentials(kubeconfig)),
        node_names,
        gpus,
        watched,
        left(),
        state_dir / "logs",
    )
    prometheus.wait_scraping(f"http://{host}:{ports['prometheus']}", "pushgateway", left())
    cluster = Cluster(
        state_dir=state_dir,
        bin_dir=bin_dir,
        kubeconfig=kubeconfig,
        server=server,
        prometheus_url=f"http://{host}:{ports['prometheus']}",
        pushgateway_url=f"http://{pushgateway}",
        operator_metrics_port=ports["operator"],
        nodes=node_names,
        node_kind="real" if real else "agent",
        host=host,
    )
    (state_dir / "cluster.json").write_text(json.dumps(asdict(cluster), default=str, indent=2))
    cluster.write_env_file()
    return cluster


def _recorded(state_dir: Path, names: tuple[str, ...]) -> dict[str, int]:
    return {name: int((state_dir / "pids" / f"{name}.pid").read_text()) for name in names}


def _spawn_agent(
    state_dir: Path,
    bin_dir: Path,
    kubeconfig: Path,
    pki: Pki,
    node_names: tuple[str, ...],
    gpus: int,
) -> int:
    agent_env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(_PACKAGE_ROOT), os.environ.get("PYTHONPATH")])
        ),
    }
    agent = procs.spawn(
        "nodeagent",
        [
            sys.executable,
            "-m",
            "kubenas_devcluster",
            "agent",
            f"--kubeconfig={kubeconfig}",
            f"--work-dir={state_dir / 'agent'}",
            f"--kubelet-cert={pki.kubelet_cert}",
            f"--kubelet-key={pki.kubelet_key}",
            f"--client-ca={pki.ca_cert}",
            *(f"--node={n}={gpus}" for n in node_names),
        ],
        state_dir,
        env=agent_env,
    )
    return agent.pid


def _wait_schedulable(
    api: ApiClient,
    node_names: tuple[str, ...],
    gpus: int,
    watched: dict[str, int],
    timeout: float,
    logs: Path,
) -> None:
    """Until every node is Ready without the not-ready taint (node-lifecycle lifts it), offers
    its GPUs, and the ``default`` ServiceAccount exists, i.e. until a pod in ``default`` could
    run. Fails at once if one of the ``watched`` processes (name: PID) died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = [name for name, pid in watched.items() if not procs.alive(pid)]
        if dead:
            raise RuntimeError(
                f"{', '.join(dead)} exited before the node was ready; see its log in {logs}"
            )
        with contextlib.suppress(ApiError, OSError):
            nodes = api.get("/api/v1/nodes")["items"]
            ready = {n["metadata"]["name"] for n in nodes if _schedulable(n, gpus)}
            if ready >= set(node_names):
                api.get("/api/v1/namespaces/default/serviceaccounts/default")
                return
        time.sleep(0.3)
    raise TimeoutError(f"nodes {list(node_names)} not schedulable after {timeout:.0f} s")


def _schedulable(node: dict[str, object], gpus: int) -> bool:
    status = node.get("status") or {}
    spec = node.get("spec") or {}
    assert isinstance(status, dict) and isinstance(spec, dict)
    offered = (status.get("allocatable") or {}).get("nvidia.com/gpu", "0")
    ready = int(offered) >= gpus and any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    tainted = any(
        t.get("key", "").startswith("node.kubernetes.io/") for t in spec.get("taints") or []
    )
    return ready and not tainted
