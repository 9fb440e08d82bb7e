"""The cluster's PKI: a CA, the API server's serving cert, an admin client cert, SA keys, the
kubelet serving cert with the API server's client cert for it (``kubectl logs``), and the
aggregation layer's front-proxy CA and client cert. The CA key is kept, so a real node's own
credentials can be issued (:func:`issue_client_cert`).

Generated fresh for every cluster with ``cryptography``; nothing here is meant to outlive it.
ECDSA P-256 keeps generation instant on a busy 2-core machine; the service-account signing key
is RSA because that is what every token consumer expects.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=30)
FRONT_PROXY_CLIENT = "front-proxy-client"


@dataclass(frozen=True)
class Pki:
    """Paths of the files the control plane and its clients need."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_private_key: Path
    sa_public_key: Path
    kubelet_cert: Path
    kubelet_key: Path
    kubelet_client_cert: Path
    kubelet_client_key: Path
    front_proxy_ca: Path
    front_proxy_client_cert: Path
    front_proxy_client_key: Path


def _self_signed_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        _builder(name, name, key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def write_pki(directory: Path, host_ips: tuple[str, ...] = ()) -> Pki:
    """Create every certificate and key under ``directory``. ``host_ips``: addresses besides
    loopback at which pods and the API server reach the API server and the kubelet."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _self_signed_ca("kubenas-devcluster-ca")
    pki = Pki(
        *(
            directory / name
            for name in (
                "ca.crt",
                "ca.key",
                "apiserver.crt",
                "apiserver.key",
                "admin.crt",
                "admin.key",
                "sa.key",
                "sa.pub",
                "kubelet.crt",
                "kubelet.key",
                "apiserver-kubelet-client.crt",
                "apiserver-kubelet-client.key",
                "front-proxy-ca.crt",
                "front-proxy-client.crt",
                "front-proxy-client.key",
            )
        )
    )
    _write_cert(pki.ca_cert, ca_cert)
    _write_key(pki.ca_key, ca_key)
    extra_ips = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in host_ips]

    serving_key = ec.generate_private_key(ec.SECP256R1())
    sans = x509.SubjectAlternativeName(
        [
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes.default.svc"),
            *extra_ips,
        ]
    )
    serving = _leaf(
        ca_cert, ca_key, serving_key, "kube-apiserver", None, ExtendedKeyUsageOID.SERVER_AUTH
    ).add_extension(sans, critical=False)
    _write_cert(pki.serving_cert, serving.sign(ca_key, hashes.SHA256()))
    _write_key(pki.serving_key, serving_key)

    # One kubelet serving cert for the node agent or the real kubelet, whichever Nodes it
    # serves: the API server dials their InternalIP and checks it against these SANs.
    kubelet_key = ec.generate_private_key(ec.SECP256R1())
    kubelet = _leaf(
        ca_cert, ca_key, kubelet_key, "kubenas-kubelet", None, ExtendedKeyUsageOID.SERVER_AUTH
    ).add_extension(
        x509.SubjectAlternativeName(
            [
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.DNSName("localhost"),
                *extra_ips,
            ]
        ),
        critical=False,
    )
    _write_cert(pki.kubelet_cert, kubelet.sign(ca_key, hashes.SHA256()))
    _write_key(pki.kubelet_key, kubelet_key)

    for cert_path, key_path, name in (
        (pki.admin_cert, pki.admin_key, "admin"),
        (pki.kubelet_client_cert, pki.kubelet_client_key, "kube-apiserver-kubelet-client"),
    ):
        client_key = ec.generate_private_key(ec.SECP256R1())
        client = _leaf(
            ca_cert, ca_key, client_key, name, "system:masters", ExtendedKeyUsageOID.CLIENT_AUTH
        )
        _write_cert(cert_path, client.sign(ca_key, hashes.SHA256()))
        _write_key(key_path, client_key)

    # The aggregation layer: the API server proxies to extension API servers (Kueue's
    # visibility API) as front-proxy-client, under a CA of its own, as kubeadm sets it up.
    proxy_ca_key, proxy_ca = _self_signed_ca("front-proxy-ca")
    _write_cert(pki.front_proxy_ca, proxy_ca)
    proxy_client_key = ec.generate_private_key(ec.SECP256R1())
    proxy_client = _leaf(
        proxy_ca,
        proxy_ca_key,
        proxy_client_key,
        FRONT_PROXY_CLIENT,
        None,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    _write_cert(pki.front_proxy_client_cert, proxy_client.sign(proxy_ca_key, hashes.SHA256()))
    _write_key(pki.front_proxy_client_key, proxy_client_key)

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(pki.sa_private_key, sa_key)
    pki.sa_public_key.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki


def issue_client_cert(
    pki: Pki, cert_path: Path, key_path: Path, common_name: str, organization: str | None
) -> None:
    """A client certificate signed by the cluster's CA: a node's ``system:node:<name>`` in
    ``system:nodes`` (the Node authorizer's identity), or kube-proxy's ``system:kube-proxy``."""
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _leaf(ca_cert, ca_key, key, common_name, organization, ExtendedKeyUsageOID.CLIENT_AUTH)
    _write_cert(cert_path, cert.sign(ca_key, hashes.SHA256()))
    _write_key(key_path, key)


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
    )


def _leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    common_name: str,
    organization: str | None,
    usage: x509.ObjectIdentifier,
) -> x509.CertificateBuilder:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return (
        _builder(x509.Name(attributes), ca_cert.subject, key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=not cert_sign,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
