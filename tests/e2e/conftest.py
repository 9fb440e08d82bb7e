"""The e2e suite's dev clusters (hack/kubenas_devcluster), on the machine's real node
(containerd, kubelet, our images).

The real node is one per machine, so each module starts and stops its own ``cluster``, in turn;
``k8s``, ``crds``, the namespaces and ``start_operator`` follow it. Host files that trial pods
need or write (the contract trainer, ledgers, checkpoints) live on a PersistentVolume: see
``volume``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from kubenas_devcluster import Cluster
from kubenas_devcluster.testing import wait_for

from .operator_harness import (
    POD_SECURITY,
    REPO,
    OperatorProcess,
    create_volume,
    kubectl,
    run_cluster,
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from run_cluster(tmp_path_factory.mktemp("cluster"))


@pytest.fixture(scope="module")
def k8s(cluster: Cluster) -> client.ApiClient:
    """An admin API client for the cluster."""
    return config.new_client_from_config(config_file=str(cluster.kubeconfig))


@pytest.fixture
def make_namespace(k8s: client.ApiClient) -> Iterator[Callable[..., str]]:
    """Creates namespaces whose ``default`` ServiceAccount exists (pods are refused before);
    deletes them, without waiting, at the end of the test. Pod Security ``restricted`` is
    enforced in them unless ``pod_security`` says otherwise (None: not labelled), so every
    trial and worker pod the operator makes is admitted as a locked-down namespace admits it."""
    core = client.CoreV1Api(k8s)
    created: list[str] = []

    def create(pod_security: str | None = "restricted") -> str:
        name = f"e2e-{uuid.uuid4().hex[:8]}"
        labels = {POD_SECURITY: pod_security} if pod_security else {}
        core.create_namespace({"metadata": {"name": name, "labels": labels}})
        created.append(name)
        wait_for(
            lambda: _exists(lambda: core.read_namespaced_service_account("default", name)),
            timeout=30,
            what=f"default ServiceAccount in {name}",
        )
        return name

    yield create
    for name in created:
        try:
            core.delete_namespace(name)
        except ApiException as error:
            if error.status != 404:
                raise


@pytest.fixture
def namespace(make_namespace: Callable[..., str]) -> str:
    return make_namespace()


def _exists(read: Callable[[], object]) -> bool:
    try:
        read()
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


@pytest.fixture(scope="module")
def crds(cluster: Cluster) -> None:
    kubectl(cluster.bin_dir, "apply", "--server-side", "-f", str(REPO / "crds"))
    kubectl(
        cluster.bin_dir,
        "wait",
        "--for=condition=Established",
        "crd/nasexperiments.kubenas.io",
        "crd/nastrials.kubenas.io",
        "--timeout=60s",
    )


@pytest.fixture
def start_operator(
    cluster: Cluster, crds: None, tmp_path: Path
) -> Iterator[Callable[..., OperatorProcess]]:
    started: list[OperatorProcess] = []

    def start(
        namespace: str, prometheus_url: str | None = None, extra_args: tuple[str, ...] = ()
    ) -> OperatorProcess:
        operator = OperatorProcess(
            namespace,
            tmp_path / f"operator-{len(started)}.log",
            prometheus_url or cluster.prometheus_url,
            cluster.pushgateway_url,
            extra_args=extra_args,
            lease_host=cluster.host,
        )
        operator.start()
        started.append(operator)
        return operator

    yield start
    for operator in started:
        operator.stop()


@pytest.fixture
def volume(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[Path]:
    """A host folder that trial pods of ``namespace`` see at the same path (``create_volume``)."""
    folder = create_volume(cluster.bin_dir, namespace, tmp_path / "volume")
    yield folder
    kubectl(cluster.bin_dir, "delete", "pv", f"{namespace}-files", "--wait=false", check=False)
