"""Command lines of etcd and the Kubernetes control plane, flags as in CLUSTER.md.

Pure builders: they only say how each daemon is started; :mod:`cluster` starts them.
"""

from __future__ import annotations

from pathlib import Path

from kubenas_devcluster.certs import FRONT_PROXY_CLIENT, Pki

SERVICE_CIDR = "10.0.0.0/24"


def etcd_argv(bin_dir: Path, data_dir: Path, client_port: int, peer_port: int) -> list[str]:
    client = f"http://127.0.0.1:{client_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    return [
        str(bin_dir / "etcd"),
        "--name=node0",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=node0={peer}",
        "--unsafe-no-fsync=true",
        "--log-level=warn",
    ]


# Metadata of every answered request (who, verb, resource, response code): enough for a test
# to measure which permissions a ServiceAccount really uses.
AUDIT_POLICY = (
    "apiVersion: audit.k8s.io/v1\nkind: Policy\n"
    "omitStages: [RequestReceived]\nrules:\n  - level: Metadata\n"
)


def apiserver_argv(
    bin_dir: Path,
    pki: Pki,
    port: int,
    etcd_port: int,
    audit: tuple[Path, Path] | None = None,
    node_address: str | None = None,
) -> list[str]:
    """``audit``: (policy file, log file) to write an audit log as JSON lines. ``node_address``:
    the host address of a real node, whose pods reach the API server there through the
    ``kubernetes`` Service; None for the node agent, whose "pods" are host processes."""
    if node_address is None:
        # The agent's pods use loopback, and nothing can reach a Service IP.
        network = [
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none",
            "--authorization-mode=RBAC",
            "--kubelet-preferred-address-types=InternalIP",
        ]
    else:
        # The real kubelet authenticates as system:node:<name>: the Node authorizer and the
        # NodeRestriction admission plugin limit it to its own Node and pods.
        network = [
            "--bind-address=0.0.0.0",
            f"--advertise-address={node_address}",
            "--endpoint-reconciler-type=lease",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--kubelet-preferred-address-types=InternalIP,Hostname",
        ]
    audit_flags = (
        []
        if audit is None
        else [
            f"--audit-policy-file={audit[0]}",
            f"--audit-log-path={audit[1]}",
            "--audit-log-format=json",
        ]
    )
    return [
        str(bin_dir / "kube-apiserver"),
        f"--etcd-servers=http://127.0.0.1:{etcd_port}",
        f"--secure-port={port}",
        *network,
        f"--tls-cert-file={pki.serving_cert}",
        f"--tls-private-key-file={pki.serving_key}",
        f"--client-ca-file={pki.ca_cert}",
        # `kubectl logs`: dial the kubelet endpoint at the Node's InternalIP.
        f"--kubelet-certificate-authority={pki.ca_cert}",
        f"--kubelet-client-certificate={pki.kubelet_client_cert}",
        f"--kubelet-client-key={pki.kubelet_client_key}",
        f"--service-account-issuer=https://127.0.0.1:{port}",
        f"--service-account-key-file={pki.sa_public_key}",
        f"--service-account-signing-key-file={pki.sa_private_key}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        # The aggregation layer (APIService objects, e.g. Kueue's visibility API).
        f"--requestheader-client-ca-file={pki.front_proxy_ca}",
        f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki.front_proxy_client_cert}",
        f"--proxy-client-key-file={pki.front_proxy_client_key}",
        "--profiling=false",
        *audit_flags,
    ]


def controller_manager_argv(bin_dir: Path, pki: Pki, kubeconfig: Path) -> list[str]:
    # The default controller set includes what the tests lean on: job, garbage collector,
    # serviceaccount(-token), namespace, pod GC, ttl-after-finished and node-lifecycle (which
    # lifts the not-ready taint from new nodes).
    return [
        str(bin_dir / "kube-controller-manager"),
        f"--kubeconfig={kubeconfig}",
        "--leader-elect=false",
        "--secure-port=0",
        f"--service-account-private-key-file={pki.sa_private_key}",
        f"--root-ca-file={pki.ca_cert}",
        "--profiling=false",
    ]


def scheduler_argv(bin_dir: Path, kubeconfig: Path) -> list[str]:
    return [
        str(bin_dir / "kube-scheduler"),
        f"--kubeconfig={kubeconfig}",
        "--leader-elect=false",
        "--secure-port=0",
        "--profiling=false",
    ]
