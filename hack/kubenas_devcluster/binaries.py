"""Build the dev cluster's binaries from Go modules into a cache outside the checkout.

There is no container engine and no download site here, only the Go module proxy, so
kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, the node's kubelet and
kube-proxy, etcd, helm, Kueue's manager and our fake GPU device plugin are compiled from their
modules (recipe in shared/design/CLUSTER.md). A CI run works in a fresh clone, so the cache
lives under ``$KUBENAS_CACHE`` (default ``~/.cache/kubenas``) and a build is skipped when the
cached binary already reports the wanted version.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = "v1.36.3"
STAGING_VERSION = "v0.36.3"
ETCD_VERSION = "v3.6.16"
HELM_VERSION = "v3.22.0"
KUEUE_VERSION = "v0.17.0"
KUEUE_MODULE = "sigs.k8s.io/kueue"

KUBE_COMMANDS = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kubectl",
)
# Debian packages by the command each installs: Prometheus, and the real node's runtime.
DEBIAN_PACKAGES = {
    "prometheus": "prometheus",
    "prometheus-pushgateway": "prometheus-pushgateway",
    "containerd": "containerd",
    "runc": "runc",
    "conntrack": "conntrack",
    "socat": "socat",
    "iptables": "iptables",
    "/usr/lib/cni/bridge": "containernetworking-plugins",
}
FAKE_GPU_SOURCE = Path(__file__).resolve().parent / "fakegpu" / "main.go"
FAKE_GPU = "kubenas-fakegpu"


@dataclass(frozen=True)
class Binary:
    """A cached binary and the command line whose output must contain ``expect``: the binary
    with ``version_args``, or, with ``go_build_info``, ``go version -m`` on it (for a binary
    that prints no version, Go's own record of the modules it was built from)."""

    name: str
    version_args: tuple[str, ...]
    expect: str
    go_build_info: bool = False


def _source_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


BINARIES = (
    *(
        Binary(name, ("--version",), f"Kubernetes {KUBERNETES_VERSION}")
        for name in KUBE_COMMANDS
        if name != "kubectl"
    ),
    Binary("kubectl", ("version", "--client"), f"Client Version: {KUBERNETES_VERSION}"),
    Binary("etcd", ("--version",), f"etcd Version: {ETCD_VERSION.lstrip('v')}"),
    Binary("helm", ("version", "--short"), HELM_VERSION),
    Binary("kueue", (), f"{KUEUE_MODULE}\t{KUEUE_VERSION}", go_build_info=True),
    Binary(FAKE_GPU, ("-version",), f"kubenas-fakegpu {_source_hash(FAKE_GPU_SOURCE)}"),
)


def cache_dir() -> Path:
    """The cache root: ``$KUBENAS_CACHE`` or ``~/.cache/kubenas``."""
    return Path(os.environ.get("KUBENAS_CACHE") or Path.home() / ".cache" / "kubenas")


def bin_dir() -> Path:
    """Where the built binaries live."""
    return cache_dir() / "bin"


def missing_binaries(directory: Path | None = None) -> list[str]:
    """Names of binaries absent from ``directory`` or reporting another version."""
    directory = directory or bin_dir()
    return [b.name for b in BINARIES if not _has_version(directory / b.name, b)]


def missing_debian_commands() -> list[str]:
    """Prometheus commands not on PATH (Debian installs them under /usr/bin)."""
    return [cmd for cmd in DEBIAN_PACKAGES if shutil.which(cmd) is None]


def ensure_prerequisites() -> None:
    """Build what is missing or stale and install the Debian packages, timing each step."""
    started = time.monotonic()
    directory = bin_dir()
    directory.mkdir(parents=True, exist_ok=True)
    print(f"kubenas_devcluster: binaries in {directory}", flush=True)
    missing = set(missing_binaries(directory))
    kube = [cmd for cmd in (*KUBE_COMMANDS, FAKE_GPU) if cmd in missing]
    if kube:
        _timed(
            f"build {', '.join(kube)} (Kubernetes {KUBERNETES_VERSION})",
            lambda: _build_kubernetes(directory, kube),
        )
    if "etcd" in missing:
        _timed(f"build etcd {ETCD_VERSION}", lambda: _build_etcd(directory))
    if "helm" in missing:
        _timed(f"build helm {HELM_VERSION}", lambda: _build_helm(directory))
    if "kueue" in missing:
        _timed(f"build kueue {KUEUE_VERSION}", lambda: _build_kueue(directory))
    for name in sorted(set(BINARIES_BY_NAME) - missing):
        print(f"  {name}: cached, version ok", flush=True)
    packages = [DEBIAN_PACKAGES[cmd] for cmd in missing_debian_commands()]
    if packages:
        _timed(f"apt-get install {' '.join(packages)}", lambda: _apt_install(packages))
    else:
        print(f"  Debian packages installed: {' '.join(sorted(set(DEBIAN_PACKAGES.values())))}")
    if missing or packages:
        still_missing = missing_binaries(directory) + missing_debian_commands()
        if still_missing:
            raise RuntimeError(f"still missing or wrong version after build: {still_missing}")
    print(f"prerequisites ready in {time.monotonic() - started:.1f} s", flush=True)


BINARIES_BY_NAME = {b.name: b for b in BINARIES}


def _has_version(path: Path, binary: Binary) -> bool:
    if not os.access(path, os.X_OK):
        return False
    argv = ["go", "version", "-m", str(path)] if binary.go_build_info else [str(path)]
    try:
        result = subprocess.run(
            [*argv, *binary.version_args], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return binary.expect in result.stdout + result.stderr


def _timed(what: str, step: Callable[[], None]) -> None:
    print(f"==> {what}", flush=True)
    started = time.monotonic()
    step()
    print(f"<== {what}: {time.monotonic() - started:.0f} s", flush=True)


def _go(args: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run ``go`` at low priority (the machine is shared); return stdout, fail loudly."""
    command = ["nice", "-n", "10", "go", *args]
    print(f"  $ {' '.join(args[:6])}{' ...' if len(args) > 6 else ''}", flush=True)
    result = subprocess.run(
        command,
        cwd=cwd,
        env={**os.environ, "CGO_ENABLED": "0", **(env or {})},
        stdout=subprocess.PIPE,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"go {' '.join(args)} failed with exit code {result.returncode}")
    return result.stdout


def _scratch_module(name: str) -> Path:
    """A fresh throwaway module; each build gets its own so deps are not lifted across."""
    path = cache_dir() / "build" / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    _go(["mod", "init", f"local/{name}"], cwd=path)
    return path


def _staging_modules(module_dir: Path) -> list[str]:
    """The ``k8s.io/X => ./staging/...`` replacements listed in k8s.io/kubernetes' go.mod."""
    info = json.loads(
        _go(["mod", "download", "-json", f"k8s.io/kubernetes@{KUBERNETES_VERSION}"], cwd=module_dir)
    )
    go_mod = Path(info["GoMod"]).read_text()
    return sorted(set(re.findall(r"^\s*(k8s\.io/[\w.-]+)\s+=>\s+\./staging/", go_mod, re.M)))


def _version_ldflags() -> str:
    major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    stamps = {
        "gitVersion": KUBERNETES_VERSION,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
    }
    packages = ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
    flags = [f"-X {pkg}.{key}={value}" for pkg in packages for key, value in stamps.items()]
    return " ".join(["-s", "-w", *flags])


def _build_kubernetes(out: Path, commands: Sequence[str]) -> None:
    module = _scratch_module("k8s")
    staging = _staging_modules(module)
    print(f"  {len(staging)} staging modules pinned to {STAGING_VERSION}", flush=True)
    _go(["mod", "edit", *(f"-replace={m}={m}@{STAGING_VERSION}" for m in staging)], cwd=module)
    packages = [f"k8s.io/kubernetes/cmd/{cmd}" for cmd in KUBE_COMMANDS]
    _go(["get", "-tool", *(f"{p}@{KUBERNETES_VERSION}" for p in packages)], cwd=module)
    wanted = [f"k8s.io/kubernetes/cmd/{cmd}" for cmd in KUBE_COMMANDS if cmd in commands]
    if wanted:
        _go(
            [
                "build",
                "-trimpath",
                "-tags",
                "selinux,notest",
                "-ldflags",
                _version_ldflags(),
                "-o",
                f"{out}/",
                *wanted,
            ],
            cwd=module,
        )
    if FAKE_GPU in commands:
        # Built in the same module, so it speaks the kubelet's own device-plugin API version.
        (module / "fakegpu").mkdir()
        shutil.copy(FAKE_GPU_SOURCE, module / "fakegpu" / "main.go")
        stamp = f"-s -w -X main.version={_source_hash(FAKE_GPU_SOURCE)}"
        _go(
            ["build", "-trimpath", "-ldflags", stamp, "-o", str(out / FAKE_GPU), "./fakegpu"],
            cwd=module,
        )


def _build_etcd(out: Path) -> None:
    module = _scratch_module("etcd")
    _go(["get", "-tool", f"go.etcd.io/etcd/server/v3@{ETCD_VERSION}"], cwd=module)
    _go(
        [
            "build",
            "-trimpath",
            "-ldflags",
            "-s -w",
            "-o",
            str(out / "etcd"),
            "go.etcd.io/etcd/server/v3",
        ],
        cwd=module,
    )


def _go_install(out: Path, package: str, version: str, version_variable: str) -> None:
    """``go install package@version`` into ``out``, stamping ``version`` into the Go
    variable its own build sets."""
    ldflags = f"-s -w -X {version_variable}={version}"
    _go(
        ["install", "-trimpath", "-ldflags", ldflags, f"{package}@{version}"],
        cwd=cache_dir(),
        env={"GOBIN": str(out)},
    )


def _build_helm(out: Path) -> None:
    _go_install(
        out, "helm.sh/helm/v3/cmd/helm", HELM_VERSION, "helm.sh/helm/v3/internal/version.version"
    )


def _build_kueue(out: Path) -> None:
    """Kueue's manager, as its Makefile's ``build`` makes it (its image holds only this)."""
    _go_install(
        out, f"{KUEUE_MODULE}/cmd/kueue", KUEUE_VERSION, f"{KUEUE_MODULE}/pkg/version.GitVersion"
    )


def module_dir(module: str, version: str) -> Path:
    """A Go module's unpacked source (downloaded into Go's module cache if absent): where
    Kueue's own Helm chart is read from."""
    info = json.loads(_go(["mod", "download", "-json", f"{module}@{version}"], cwd=cache_dir()))
    return Path(info["Dir"])


def _apt_install(packages: list[str]) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
    ):
        subprocess.run([*prefix, *command], env=env, check=True, stdout=sys.stderr)
