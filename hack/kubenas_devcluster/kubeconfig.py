"""Kubeconfig files: the admin's (certificate files) and a pod's (a ServiceAccount token)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kubenas_devcluster.certs import Pki


@dataclass(frozen=True)
class AdminCredentials:
    """What an HTTP client needs to talk to the API server as the cluster admin."""

    server: str
    ca_file: Path
    cert_file: Path
    key_file: Path


def write_admin_kubeconfig(path: Path, server: str, pki: Pki) -> None:
    """A kubeconfig that points at certificate files by absolute path (kubectl, helm, kopf)."""
    user = {"client-certificate": str(pki.admin_cert), "client-key": str(pki.admin_key)}
    _write(path, server, {"certificate-authority": str(pki.ca_cert)}, user, namespace=None)


def write_client_kubeconfig(path: Path, server: str, ca_cert: Path, cert: Path, key: Path) -> None:
    """A kubeconfig with another client certificate: the kubelet's and kube-proxy's own."""
    user = {"client-certificate": str(cert), "client-key": str(key)}
    _write(path, server, {"certificate-authority": str(ca_cert)}, user, namespace=None)


def write_token_kubeconfig(
    path: Path, server: str, ca_pem: bytes, token: str, namespace: str
) -> None:
    """A pod's kubeconfig: its ServiceAccount token, defaulting to its own namespace."""
    cluster = {"certificate-authority-data": base64.b64encode(ca_pem).decode()}
    _write(path, server, cluster, {"token": token}, namespace=namespace)


def read_admin_credentials(path: Path) -> AdminCredentials:
    """Read back a kubeconfig written by :func:`write_admin_kubeconfig`."""
    config: dict[str, Any] = yaml.safe_load(path.read_text())
    cluster = config["clusters"][0]["cluster"]
    user = config["users"][0]["user"]
    return AdminCredentials(
        server=cluster["server"],
        ca_file=Path(cluster["certificate-authority"]),
        cert_file=Path(user["client-certificate"]),
        key_file=Path(user["client-key"]),
    )


def _write(
    path: Path, server: str, cluster: dict[str, str], user: dict[str, str], namespace: str | None
) -> None:
    context: dict[str, str] = {"cluster": "kubenas", "user": "kubenas"}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kubenas", "cluster": {"server": server, **cluster}}],
        "users": [{"name": "kubenas", "user": user}],
        "contexts": [{"name": "kubenas", "context": context}],
        "current-context": "kubenas",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
