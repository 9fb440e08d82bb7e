"""Real Kueue in a running dev cluster, installed from its own Helm chart as a user would.

The manager is built from ``sigs.k8s.io/kueue`` like the control plane (:mod:`binaries`); its
image is that one static binary, as upstream's is, made with ``podman import`` and keyed by
the binary's digest so it is made once. The node imports it like our own images. The API
server reaches Kueue's webhooks through their ClusterIP Service: it runs on the host, where
the real node's kube-proxy routes Service addresses to the pod. Kueue's visibility API is an
aggregated APIService, which the API server serves through its front-proxy client
(:mod:`certs`).
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
import time
from pathlib import Path

import kubenas_images
from kubenas_devcluster import binaries, node
from kubenas_devcluster.cluster import Cluster

NAMESPACE = "kueue-system"
RELEASE = "kueue"
IMAGE_REPOSITORY = "localhost/kueue"
IMAGE = f"{IMAGE_REPOSITORY}:{binaries.KUEUE_VERSION}"
# Upstream's image runs as distroless's "nonroot" user.
NONROOT = "65532:65532"
# The chart's defaults less its many framework integrations (only batch/Job is wanted here, and
# each other one waits for CRDs that are absent) and sized for a two-core machine.
MANAGER_CONFIG = """\
apiVersion: config.kueue.x-k8s.io/v1beta2
kind: Configuration
health:
  healthProbeBindAddress: :8081
metrics:
  bindAddress: :8443
webhook:
  port: 9443
leaderElection:
  leaderElect: false
controller:
  groupKindConcurrency:
    Job.batch: 5
    Workload.kueue.x-k8s.io: 5
    LocalQueue.kueue.x-k8s.io: 1
    ClusterQueue.kueue.x-k8s.io: 1
    ResourceFlavor.kueue.x-k8s.io: 1
clientConnection:
  qps: 50
  burst: 100
integrations:
  frameworks:
  - batch/job
"""
HELM_SETTINGS = (
    f"controllerManager.manager.image.repository={IMAGE_REPOSITORY}",
    f"controllerManager.manager.image.tag={binaries.KUEUE_VERSION}",
    "controllerManager.manager.image.pullPolicy=IfNotPresent",
    "controllerManager.manager.resources.requests.cpu=100m",
    "controllerManager.manager.resources.requests.memory=128Mi",
    "controllerManager.readinessProbe.initialDelaySeconds=1",
)
# A harmless server-side dry run that only succeeds once Kueue's webhooks answer.
WEBHOOK_PROBE = """\
apiVersion: kueue.x-k8s.io/v1beta2
kind: ResourceFlavor
metadata:
  name: kubenas-webhook-probe
"""


def chart() -> Path:
    """Kueue's Helm chart, from the same module version as the manager."""
    return binaries.module_dir(binaries.KUEUE_MODULE, binaries.KUEUE_VERSION) / "charts" / "kueue"


def ensure_image(store: kubenas_images.Storage) -> str:
    """The manager's image in ``make images``' store, made from the cached binary unless an
    image of that exact binary exists; returns its name."""
    manager = binaries.bin_dir() / "kueue"
    digest = hashlib.sha256(manager.read_bytes()).hexdigest()[:16]
    keyed = f"{IMAGE_REPOSITORY}:{digest}"
    if not kubenas_images.image_exists(keyed, store):
        layer = io.BytesIO()
        with tarfile.open(fileobj=layer, mode="w") as archive:
            entry = archive.gettarinfo(str(manager), arcname="manager")
            entry.uid = entry.gid = 0
            entry.mode = 0o755
            with manager.open("rb") as binary:
                archive.addfile(entry, binary)
        subprocess.run(
            [
                "podman",
                "import",
                "--quiet",
                "--change",
                'ENTRYPOINT ["/manager"]',
                "--change",
                f"USER {NONROOT}",
                "-",
                keyed,
            ],
            input=layer.getvalue(),
            env=store.env(),
            check=True,
            capture_output=True,
        )
    subprocess.run(["podman", "tag", keyed, IMAGE], env=store.env(), check=True)
    return IMAGE


def load_into_node(cluster: Cluster) -> None:
    """Give the real node the manager's image (imported once: containerd's store is cached)."""
    store = kubenas_images.storage()
    name = ensure_image(store)

    def export(path: Path) -> None:
        kubenas_images.export_oci_archive(name, store, path)

    image = node.NodeImage(f"sha256:{kubenas_images.image_id(name, store)}", (name,), export)
    node.load_image(
        node.NodePaths(cluster.state_dir / "node", binaries.cache_dir() / "containerd"), image
    )


def install(cluster: Cluster, timeout: float = 120.0) -> float:
    """Install Kueue into ``cluster`` (a real node) and wait until its webhooks admit objects;
    returns the seconds it took."""
    if cluster.node_kind != "real":
        raise ValueError("Kueue runs as a pod: it needs the real node, not the node agent")
    started = time.monotonic()
    load_into_node(cluster)
    config = cluster.state_dir / "kueue-manager-config.yaml"
    config.write_text(MANAGER_CONFIG)
    argv = ["helm", "upgrade", "--install", RELEASE, str(chart()), "--namespace", NAMESPACE]
    argv += ["--create-namespace", "--wait", "--timeout", f"{int(timeout)}s"]
    argv += ["--set-file", f"managerConfig.controllerManagerConfigYaml={config}"]
    for setting in HELM_SETTINGS:
        argv += ["--set", setting]
    _run(cluster, argv)
    _wait_for_webhooks(cluster, started + timeout)
    return time.monotonic() - started


def _wait_for_webhooks(cluster: Cluster, deadline: float) -> None:
    """Kueue's webhooks serve once its own certificates are issued and injected, a few
    seconds after the pod is ready; until then every queued Job would be refused."""
    while True:
        probe = _tool(
            cluster, ["kubectl", "create", "--dry-run=server", "-f", "-"], stdin=WEBHOOK_PROBE
        )
        if probe.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"Kueue's webhooks did not answer: {probe.stderr.strip()}")
        time.sleep(0.5)


def _tool(
    cluster: Cluster, argv: list[str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """kubectl or helm from the cluster's build, with its credentials."""
    env = {**os.environ, **cluster.env()}
    return subprocess.run(argv, input=stdin, env=env, capture_output=True, text=True)


def _run(cluster: Cluster, argv: list[str]) -> None:
    result = _tool(cluster, argv)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} failed: {result.stderr.strip()}")
