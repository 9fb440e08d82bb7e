"""The project's container images, built here without a Docker engine (``make images``).

A base image comes from Debian packages (mmdebstrap), and buildah builds the Dockerfile's
``operator`` and ``trainer`` targets on it, unchanged. podman runs them with runc. Storage
and configuration live in a cache outside the checkout (``$KUBENAS_CACHE/images``). Each image
is tagged with a key of everything that goes into it, so a ``make images`` after an unrelated
change builds nothing. docs/operate.md ("Building them without Docker") says how.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VERSION = "0.1.0"
BASE = "localhost/kubenas-base:bookworm"
# What the Dockerfile copies into the images (its .dockerignore admits only these).
SOURCES = ("Dockerfile", "pyproject.toml", "README.md", "operator", "trainer")
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates", "python-is-python3")
# The host's CA bundle, bind-mounted into each RUN step so pip can verify HTTPS here.
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
TARGETS = ("operator", "trainer")
# Without CAP_SYS_RESOURCE podman cannot raise its defaults; these fit under the host's.
ULIMITS = ("nofile=20000:20000", "nproc=32768:32768")


def cache_root() -> Path:
    base = Path(os.environ.get("KUBENAS_CACHE") or Path.home() / ".cache" / "kubenas")
    return base / "images"


@dataclass(frozen=True)
class Storage:
    """A private containers storage and configuration, so nothing touches the host's own."""

    root: Path

    @property
    def storage_conf(self) -> Path:
        return self.root / "storage.conf"

    @property
    def containers_conf(self) -> Path:
        return self.root / "containers.conf"

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.storage_conf.write_text(
            "[storage]\n"
            'driver = "overlay"\n'
            f'graphroot = "{self.root / "graph"}"\n'
            f'runroot = "{self.root / "run"}"\n'
        )
        ulimits = ", ".join(f'"{u}"' for u in ULIMITS)
        self.containers_conf.write_text(
            "[containers]\n"
            f"default_ulimits = [{ulimits}]\n"
            "[engine]\n"
            'runtime = "runc"\n'
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
        )

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "CONTAINERS_STORAGE_CONF": str(self.storage_conf),
            "CONTAINERS_CONF": str(self.containers_conf),
            "BUILDAH_ISOLATION": "chroot",
        }


def storage() -> Storage:
    found = Storage(cache_root() / "storage")
    found.prepare()
    return found


def _run(
    argv: list[str], store: Storage, *, capture: bool = False
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env=store.env(), check=True, text=True, capture_output=capture, cwd=REPO
    )


def image_exists(name: str, store: Storage) -> bool:
    found = subprocess.run(
        ["podman", "image", "exists", name], env=store.env(), capture_output=True, check=False
    )
    return found.returncode == 0


def image_id(name: str, store: Storage) -> str:
    out = _run(["podman", "image", "inspect", "--format", "{{.Id}}", name], store, capture=True)
    return out.stdout.strip()


def _mirror() -> str:
    """The Debian mirror apt uses here (only package registries are reachable)."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split(":", 1)[1].strip()
    return "http://deb.debian.org/debian"


def ensure_base(store: Storage) -> None:
    """The base image: Debian bookworm's Python from Debian packages, made once."""
    if image_exists(BASE, store):
        print(f"  {BASE}: cached", flush=True)
        return
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kubenas-base-") as scratch:
        rootfs = Path(scratch) / "rootfs.tar"
        subprocess.run(
            [
                "mmdebstrap",
                "--variant=apt",
                f"--include={','.join(BASE_PACKAGES)}",
                "bookworm",
                str(rootfs),
                _mirror(),
            ],
            check=True,
        )
        _run(["podman", "import", str(rootfs), BASE], store, capture=True)
    print(f"  {BASE}: made in {time.monotonic() - started:.0f} s", flush=True)


def content_key(target: str, base_id: str) -> str:
    """A digest of everything that goes into the image: the base, the target and the files the
    Dockerfile copies (byte for byte, by path; caches and bytecode left out as it leaves them)."""
    digest = hashlib.sha256(f"{target}\0{base_id}\0".encode())
    for source in SOURCES:
        path = REPO / source
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            relative = file.relative_to(REPO)
            if "__pycache__" in relative.parts or file.suffix == ".pyc":
                continue
            digest.update(str(relative).encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def image_name(target: str) -> str:
    return f"localhost/kubenas-{target}:{VERSION}"


def build(target: str, store: Storage) -> str:
    """Build the Dockerfile's ``target`` unless an image of the same content exists; returns
    its name (tagged both ``VERSION`` and the content key)."""
    key = content_key(target, image_id(BASE, store))
    keyed = f"localhost/kubenas-{target}:{key}"
    if image_exists(keyed, store):
        _run(["podman", "tag", keyed, image_name(target)], store)
        print(f"  {image_name(target)}: cached ({key})", flush=True)
        return image_name(target)
    started = time.monotonic()
    argv = [
        "buildah",
        "bud",
        "--isolation",
        "chroot",
        "--layers",
        "--build-arg",
        f"PYTHON_IMAGE={BASE}",
        "--target",
        target,
        "-t",
        image_name(target),
        "-t",
        keyed,
    ]
    if CA_BUNDLE.exists():
        argv += ["-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"]
    for ulimit in ULIMITS:
        argv += ["--ulimit", ulimit]
    _run([*argv, "."], store)
    print(f"  {image_name(target)}: built in {time.monotonic() - started:.0f} s", flush=True)
    _forget_older(target, key, store)
    return image_name(target)


def _forget_older(target: str, key: str, store: Storage) -> None:
    """Remove the target's images of older content (a trainer image is 6.5 GB); the layers
    that build cache still uses stay."""
    listed = _run(
        ["podman", "images", "--format", "{{.Tag}}", f"localhost/kubenas-{target}"],
        store,
        capture=True,
    )
    for tag in set(listed.stdout.split()) - {VERSION, key, "<none>"}:
        subprocess.run(
            ["podman", "rmi", f"localhost/kubenas-{target}:{tag}"],
            env=store.env(),
            capture_output=True,
            check=False,
        )


PAUSE = "localhost/kubenas-pause:1"
# The pod sandbox's process: it only holds the pod's namespaces, and ends at once on SIGTERM.
PAUSE_ENTRYPOINT = json.dumps(
    ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"]
)


def ensure_pause(store: Storage) -> str:
    """The real node's pod-sandbox ("pause") image, from the base: no registry serves one here."""
    if image_exists(PAUSE, store):
        return PAUSE
    container = _run(["buildah", "from", "--pull-never", BASE], store, capture=True).stdout.strip()
    _run(
        [
            "buildah",
            "config",
            "--entrypoint",
            PAUSE_ENTRYPOINT,
            "--cmd",
            "",
            "--user",
            "65535:65535",
            container,
        ],
        store,
    )
    _run(["buildah", "commit", "--quiet", "--rm", container, PAUSE], store, capture=True)
    print(f"  {PAUSE}: made", flush=True)
    return PAUSE


def export_oci_archive(name: str, store: Storage, path: Path) -> None:
    """Write image ``name`` as an OCI archive: what containerd's ``ctr images import`` reads."""
    path.unlink(missing_ok=True)
    _run(["podman", "save", "--quiet", "--format", "oci-archive", "-o", str(path), name], store)


def missing_tools() -> list[str]:
    return [tool for tool in ("buildah", "podman", "mmdebstrap", "runc") if not shutil.which(tool)]


def build_all(targets: tuple[str, ...] = TARGETS) -> list[str]:
    missing = missing_tools()
    if missing:
        print(f"missing {', '.join(missing)}: make system-packages installs them", file=sys.stderr)
        raise SystemExit(2)
    store = storage()
    ensure_base(store)
    built = [build(target, store) for target in targets]
    ensure_pause(store)  # the real node's pod sandbox (kubenas_devcluster)
    return built
