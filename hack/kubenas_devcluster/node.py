"""A real node beside the control plane: containerd with runc, the kubelet, kube-proxy and a
fake GPU device plugin (shared/design/CLUSTER.md, "A real node").

Pods run our images in containers, so what the kubelet does is real: securityContext and Pod
Security, volumes, logs, probes, Services, memory limits. kube-proxy's iptables chains, the
kubelet's port and its device-plugin folder are machine-wide, so a machine runs one real node
at a time; :func:`claim` says which cluster holds it. containerd's image store is cached
outside the state folder, so our images are imported once per content.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kubenas_devcluster import procs
from kubenas_devcluster.certs import Pki, issue_client_cert
from kubenas_devcluster.kubeconfig import write_client_kubeconfig

# Processes of the node, in the order they stop.
STOP_ORDER = ("kubenas-fakegpu", "kube-proxy", "kubelet", "containerd")
POD_SUBNET = "10.244.0.0/24"
CLUSTER_CIDR = "10.244.0.0/16"
BRIDGE = "kubenas0"
CNI_NETWORK = "kubenas"
CNI_BIN_DIR = Path("/usr/lib/cni")
# The kubelet's device-plugin folder is compiled in (deviceplugin/v1beta1 DevicePluginPath).
DEVICE_PLUGIN_DIR = Path("/var/lib/kubelet/device-plugins")
CLAIM = Path("/run/kubenas-devcluster/node.json")
CONTAINERD_NAMESPACE = "k8s.io"
PAUSE_IMAGE = "localhost/kubenas-pause:1"


class NodeBusy(RuntimeError):
    """Another dev cluster on this machine runs the real node."""


@dataclass(frozen=True)
class NodeImage:
    """An image the node must hold: its ID (``sha256:...``), the names it goes by (the first
    is the one its archive carries), and how to write it as an OCI archive when containerd
    lacks it."""

    image_id: str
    names: tuple[str, ...]
    export: Callable[[Path], None]


@dataclass(frozen=True)
class NodePaths:
    """Where one node keeps its configuration, sockets and state (under the cluster's)."""

    root: Path
    image_store: Path

    @property
    def containerd_socket(self) -> Path:
        return self.root / "containerd" / "containerd.sock"

    @property
    def containerd_state(self) -> Path:
        return self.root / "containerd" / "state"

    @property
    def containerd_config(self) -> Path:
        return self.root / "containerd" / "config.toml"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_data_dir(self) -> Path:
        return self.root / "cni" / "ipam"

    @property
    def kubelet_root(self) -> Path:
        return self.root / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet-config.yaml"

    @property
    def kubelet_kubeconfig(self) -> Path:
        return self.root / "kubelet.kubeconfig"

    @property
    def proxy_config(self) -> Path:
        return self.root / "kube-proxy-config.yaml"

    @property
    def proxy_kubeconfig(self) -> Path:
        return self.root / "kube-proxy.kubeconfig"


def host_address() -> str:
    """The host's own IPv4 address (of its default route, else its first global one): where
    pods reach the API server, Prometheus, the Pushgateway and an operator run on the host."""
    with contextlib.suppress(OSError, ValueError, KeyError, IndexError, subprocess.SubprocessError):
        route = subprocess.run(
            ["ip", "-j", "-4", "route", "get", "192.0.2.255"],
            capture_output=True,
            text=True,
            check=True,
        )
        address = str(json.loads(route.stdout)[0]["prefsrc"])
        if not ipaddress.ip_address(address).is_loopback:
            return address
    listed = subprocess.run(
        ["ip", "-j", "-4", "addr", "show", "scope", "global"],
        capture_output=True,
        text=True,
        check=True,
    )
    for link in json.loads(listed.stdout):
        if link.get("ifname") == BRIDGE:
            continue
        for info in link.get("addr_info", []):
            return str(info["local"])
    raise RuntimeError("no global IPv4 address on this machine: a real node needs one")


def containerd_config(paths: NodePaths, sandbox_image: str) -> str:
    """containerd's config (v2): the CRI plugin on overlayfs and runc, without systemd cgroups
    or AppArmor, our CNI folder, and its own root, state and socket."""
    return f"""version = 2
root = "{paths.image_store}"
state = "{paths.containerd_state}"

[grpc]
  address = "{paths.containerd_socket}"

[ttrpc]
  address = "{paths.containerd_socket}.ttrpc"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  disable_apparmor = true
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{paths.cni_conf_dir}"
"""


def cni_conflist(paths: NodePaths) -> dict[str, Any]:
    """A bridge network with host-local addresses; its IP allocations live in the state folder.
    No portmap plugin: Pod Security ``restricted`` forbids host ports, and its shared chains
    would outlive the node."""
    return {
        "cniVersion": "0.4.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_SUBNET}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(paths.cni_data_dir),
                },
            },
            {"type": "loopback"},
        ],
    }


def kubelet_config(paths: NodePaths, pki: Pki, address: str) -> dict[str, Any]:
    """The kubelet on this host: cgroupfs on cgroup v1, no QoS cgroups or node-allocatable
    enforcement, no eviction or image GC (a test machine's disk fills with the trainer image),
    and webhook authentication and authorization of whoever calls it."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": address,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 0,
        "tlsCertFile": str(pki.kubelet_cert),
        "tlsPrivateKeyFile": str(pki.kubelet_key),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki.ca_cert)},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
        "cgroupDriver": "cgroupfs",
        "cgroupsPerQOS": False,
        "enforceNodeAllocatable": [],
        "failSwapOn": False,
        "failCgroupV1": False,
        "makeIPTablesUtilChains": False,
        "evictionHard": {"memory.available": "0%", "nodefs.available": "0%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "resolvConf": "/etc/resolv.conf",
        "maxPods": 110,
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "nodeStatusUpdateFrequency": "5s",
    }


def kube_proxy_config(paths: NodePaths, node_name: str) -> dict[str, Any]:
    """kube-proxy in iptables mode, not touching conntrack limits (no CAP_NET_ADMIN on sysctls
    in every sandbox), health and metrics on free loopback ports."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(paths.proxy_kubeconfig)},
        "mode": "iptables",
        "clusterCIDR": CLUSTER_CIDR,
        "hostnameOverride": node_name,
        "healthzBindAddress": f"127.0.0.1:{procs.free_port()}",
        "metricsBindAddress": f"127.0.0.1:{procs.free_port()}",
        "conntrack": {"maxPerCore": 0, "min": 0},
    }


def claim(state_dir: Path) -> None:
    """Take the machine's one real node for the cluster in ``state_dir``, or say who has it."""
    CLAIM.parent.mkdir(parents=True, exist_ok=True)
    if CLAIM.exists():
        holder = json.loads(CLAIM.read_text())
        if holder["state_dir"] != str(state_dir) and _node_running(Path(holder["state_dir"])):
            raise NodeBusy(
                f"the dev cluster in {holder['state_dir']} runs this machine's real node; "
                "stop it first (make cluster-down, or python -m kubenas_devcluster down "
                f"--state-dir {holder['state_dir']})"
            )
        # A holder that is gone left its mounts, links and chains: clean them first.
        cleanup(NodePaths(Path(holder["root"]), Path(holder["image_store"])))
    CLAIM.write_text(json.dumps({"state_dir": str(state_dir), "root": "", "image_store": ""}))


def start(
    state_dir: Path,
    bin_dir: Path,
    image_store: Path,
    pki: Pki,
    server: str,
    node_name: str,
    gpus: int,
    images: Sequence[NodeImage],
) -> NodePaths:
    """Start containerd, load ``images``, then the kubelet, kube-proxy and the fake device
    plugin. Returns once they run; the caller waits for the Node to become schedulable."""
    paths = NodePaths(state_dir / "node", image_store)
    CLAIM.write_text(
        json.dumps(
            {"state_dir": str(state_dir), "root": str(paths.root), "image_store": str(image_store)}
        )
    )
    address = host_address()
    for directory in (
        paths.containerd_state,
        paths.cni_conf_dir,
        paths.cni_data_dir,
        paths.kubelet_root,
        image_store,
        DEVICE_PLUGIN_DIR,
    ):
        directory.mkdir(parents=True, exist_ok=True)
    paths.containerd_config.write_text(containerd_config(paths, PAUSE_IMAGE))
    (paths.cni_conf_dir / "10-kubenas.conflist").write_text(json.dumps(cni_conflist(paths)))
    paths.kubelet_config.write_text(yaml.safe_dump(kubelet_config(paths, pki, address)))
    paths.proxy_config.write_text(yaml.safe_dump(kube_proxy_config(paths, node_name)))
    for kubeconfig, user, group in (
        (paths.kubelet_kubeconfig, f"system:node:{node_name}", "system:nodes"),
        (paths.proxy_kubeconfig, "system:kube-proxy", None),
    ):
        cert, key = kubeconfig.with_suffix(".crt"), kubeconfig.with_suffix(".key")
        issue_client_cert(pki, cert, key, user, group)
        write_client_kubeconfig(kubeconfig, server, pki.ca_cert, cert, key)

    containerd = procs.spawn(
        "containerd", ["containerd", "--config", str(paths.containerd_config)], state_dir
    )
    _wait_for_socket(paths.containerd_socket, containerd, 30.0)
    for image in images:
        load_image(paths, image)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    procs.spawn(
        "kubelet",
        [
            str(bin_dir / "kubelet"),
            f"--config={paths.kubelet_config}",
            f"--kubeconfig={paths.kubelet_kubeconfig}",
            f"--root-dir={paths.kubelet_root}",
            f"--hostname-override={node_name}",
            f"--node-ip={address}",
            f"--node-labels=kubenas.io/dev-node=true,node.kubernetes.io/instance-type=dev-{gpus}gpu",
            "--v=1",
        ],
        state_dir,
        env=env,
    )
    procs.spawn(
        "kube-proxy",
        [str(bin_dir / "kube-proxy"), f"--config={paths.proxy_config}", "--v=1"],
        state_dir,
        env=env,
    )
    procs.spawn(
        "kubenas-fakegpu",
        [str(bin_dir / "kubenas-fakegpu"), f"-devices={gpus}", f"-plugin-dir={DEVICE_PLUGIN_DIR}"],
        state_dir,
    )
    return paths


def load_image(paths: NodePaths, image: NodeImage) -> None:
    """Import ``image`` into containerd's CRI namespace unless it holds it already (its store
    outlives clusters), then give it each of its names.

    An OCI archive of a podman image gets another config digest in containerd, so the image's
    podman ID cannot be looked up there: a name carrying that ID says it was imported."""
    keyed = f"{image.names[0]}-{image.image_id.removeprefix('sha256:')[:12]}"
    source = keyed
    if keyed not in image_names(paths):
        started = time.monotonic()
        archive = paths.image_store.parent / f"import-{keyed.rsplit('-', 1)[-1]}.tar"
        try:
            image.export(archive)
            _ctr(paths, "images", "import", str(archive))
        finally:
            archive.unlink(missing_ok=True)
        # The archive names the image by its first name.
        source = image.names[0]
        _ctr(paths, "images", "tag", "--force", source, keyed)
        print(f"  {source}: loaded in {time.monotonic() - started:.0f} s", flush=True)
    for alias in image.names:
        if alias != source:
            _ctr(paths, "images", "tag", "--force", source, alias)


def image_names(paths: NodePaths) -> set[str]:
    """Every name containerd's CRI namespace knows, IDs (``sha256:...``) included."""
    return set(_ctr(paths, "images", "list", "--quiet").split())


def stop(state_dir: Path) -> None:
    """Stop the node's processes and containers, then clean up what they leave behind."""
    if not CLAIM.exists():
        return
    holder = json.loads(CLAIM.read_text())
    if holder["state_dir"] != str(state_dir):
        return
    paths = NodePaths(Path(holder["root"] or state_dir / "node"), Path(holder["image_store"]))
    procs.stop_recorded(state_dir, STOP_ORDER[:3], grace=10.0)
    netns: list[Path] = []
    if paths.containerd_socket.exists():
        netns = _sandbox_netns(paths)
        _kill_containers(paths)
    procs.stop_recorded(state_dir, STOP_ORDER[3:], grace=10.0)
    cleanup(paths, netns)
    CLAIM.unlink(missing_ok=True)


def cleanup(paths: NodePaths, netns: Iterable[Path] = ()) -> None:
    """Remove what a node leaves on the machine: container shims, mounts, the pods' network
    namespaces (``netns``), the bridge, kube-proxy's and the CNI bridge's iptables rules, the
    device-plugin sockets."""
    for pid in _shim_pids(paths):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
    for mount in reversed(_mounts_under((paths.root, paths.image_store))):
        subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
    for path in netns:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)
        path.unlink(missing_ok=True)
    subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True, check=False)
    _remove_iptables_rules()
    (DEVICE_PLUGIN_DIR / "kubenas-fakegpu.sock").unlink(missing_ok=True)
    (DEVICE_PLUGIN_DIR / "kubelet.sock").unlink(missing_ok=True)
    if paths.root != Path():
        shutil.rmtree(paths.containerd_state, ignore_errors=True)


def leftovers(paths: NodePaths) -> list[str]:
    """What of the node is still on the machine (empty after a clean stop): for tests."""
    found = [f"process {pid}" for pid in _shim_pids(paths)]
    found += [f"mount {m}" for m in _mounts_under((paths.root, paths.image_store))]
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        found.append(f"link {BRIDGE}")
    found += [f"iptables {rule}" for rule in _our_iptables_rules()]
    return found


def _node_running(state_dir: Path) -> bool:
    pid_file = state_dir / "pids" / "kubelet.pid"
    with contextlib.suppress(OSError, ValueError):
        return procs.alive(int(pid_file.read_text().strip()))
    return False


def _wait_for_socket(socket: Path, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"containerd exited with code {process.returncode}")
        if socket.exists():
            return
        time.sleep(0.1)
    raise TimeoutError(f"containerd's socket {socket} did not appear in {timeout:.0f} s")


def _ctr(paths: NodePaths, *args: str) -> str:
    result = subprocess.run(
        ["ctr", "--address", str(paths.containerd_socket), "-n", CONTAINERD_NAMESPACE, *args],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"ctr {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def _kill_containers(paths: NodePaths) -> None:
    """SIGKILL every container's task and delete it, so no container process outlives the node."""
    with contextlib.suppress(RuntimeError):
        tasks = _ctr(paths, "tasks", "list", "--quiet").split()
        for task in tasks:
            with contextlib.suppress(RuntimeError):
                _ctr(paths, "tasks", "kill", "--signal", "SIGKILL", task)
        deadline = time.monotonic() + 10
        for task in tasks:
            while time.monotonic() < deadline:
                try:
                    _ctr(paths, "tasks", "delete", "--force", task)
                    break
                except RuntimeError:
                    time.sleep(0.2)
        for container in _ctr(paths, "containers", "list", "--quiet").split():
            with contextlib.suppress(RuntimeError):
                _ctr(paths, "containers", "delete", container)


def _sandbox_netns(paths: NodePaths) -> list[Path]:
    """The network namespaces the CRI made for this node's pods, read from their specs."""
    found = []
    with contextlib.suppress(RuntimeError):
        for container in _ctr(paths, "containers", "list", "--quiet").split():
            with contextlib.suppress(RuntimeError, ValueError, KeyError):
                spec = json.loads(_ctr(paths, "containers", "info", container))["Spec"]
                for namespace in spec["linux"]["namespaces"]:
                    path = namespace.get("path", "")
                    if namespace["type"] == "network" and "/netns/" in path:
                        found.append(Path(path))
    return sorted(set(found))


def _shim_pids(paths: NodePaths) -> list[int]:
    """containerd's runc shims started for this node (they outlive containerd by design)."""
    needle = str(paths.containerd_socket).encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            if b"containerd-shim" in cmdline and needle in cmdline:
                found.append(int(entry))
    return found


def _mounts_under(roots: Iterable[Path]) -> list[str]:
    prefixes = [str(root) + "/" for root in roots if str(root) not in ("", ".")]
    mounts = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1].replace("\\040", " ")
        if any(target.startswith(prefix) for prefix in prefixes):
            mounts.append(target)
    return mounts


def _iptables_save() -> Mapping[str, list[str]]:
    tables: dict[str, list[str]] = {}
    for table in ("nat", "filter", "mangle"):
        saved = subprocess.run(
            ["iptables", "-t", table, "-S"], capture_output=True, text=True, check=False
        )
        tables[table] = saved.stdout.splitlines()
    return tables


_CNI_COMMENT = f'"name: \\"{CNI_NETWORK}\\"'


def _our_chains(rules: list[str]) -> set[str]:
    """kube-proxy's chains, and the per-pod chains our CNI network's tagged rules jump to."""
    chains = {r.split()[1] for r in rules if r.startswith("-N KUBE-")}
    for rule in rules:
        words = rule.split()
        if _CNI_COMMENT in rule and "-j" in words:
            target = words[words.index("-j") + 1]
            if target.startswith("CNI-"):
                chains.add(target)
    return chains


def _ours(rule: str, chains: set[str]) -> bool:
    words = rule.split()
    return (
        _CNI_COMMENT in rule
        or "KUBE-" in rule
        or (len(words) > 1 and words[1] in chains)
        or (("-j" in words) and words[words.index("-j") + 1] in chains)
    )


def _our_iptables_rules() -> list[str]:
    found = []
    for table, rules in _iptables_save().items():
        chains = _our_chains(rules)
        found += [f"-t {table} {r}" for r in rules if _ours(r, chains)]
    return found


def _remove_iptables_rules() -> None:
    """Delete our rules (``-A``) first, then flush and delete our chains (``-N``)."""
    for table, rules in _iptables_save().items():
        chains = _our_chains(rules)
        for rule in rules:
            if rule.startswith("-A ") and _ours(rule, chains):
                subprocess.run(
                    ["sh", "-c", f"iptables -t {table} -D {rule[3:]}"],
                    capture_output=True,
                    check=False,
                )
        for chain in chains:
            subprocess.run(["iptables", "-t", table, "-F", chain], capture_output=True, check=False)
        for chain in chains:
            subprocess.run(["iptables", "-t", table, "-X", chain], capture_output=True, check=False)
