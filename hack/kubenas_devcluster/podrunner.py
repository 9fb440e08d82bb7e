"""Run one bound pod as local processes and report its status, as the kubelet would.

Each container is a process in its own process group (so a stop reaches everything it
spawned), with the env the pod declares, the GPU indices it was given in
``CUDA_VISIBLE_DEVICES`` and, unless the pod opts out, a kubeconfig holding a token of its
ServiceAccount, so RBAC applies to it as in a real cluster.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from kubenas_devcluster.apiclient import ApiClient, ApiError, Json
from kubenas_devcluster.gpus import GpuAllocator
from kubenas_devcluster.kubeconfig import write_token_kubeconfig
from kubenas_devcluster.podenv import ContainerConfigError, declared_env, expand
from kubenas_devcluster.podstatus import Conditions, ContainerState, now, pod_status, terminated

log = logging.getLogger(__name__)

GPU_RESOURCE = "nvidia.com/gpu"
TERMINATION_MESSAGE_LIMIT = 4096
FALLBACK_LOG_LIMIT = 2048
TOKEN_SECONDS = 24 * 3600
_PYTHON = re.compile(r"^python(3(\.\d+)?)?$")


@dataclass(frozen=True)
class NodeContext:
    """What every pod runner of one node shares."""

    api: ApiClient
    node_name: str
    gpus: GpuAllocator
    work_dir: Path
    base_env: dict[str, str]
    python: str


@dataclass
class _Container:
    spec: Json
    status: ContainerState
    gpu_indices: list[int]
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    next_start: float = 0.0
    done: bool = False

    @property
    def exit_code(self) -> int | None:
        finished = self.status.state.get("terminated")
        return None if finished is None else int(finished["exitCode"])


class PodRunner:
    """Owns one pod's processes from binding until the pod is deleted or the agent stops."""

    def __init__(self, node: NodeContext, pod: Json) -> None:
        self._node = node
        self._pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.node_name = node.node_name
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self._path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        self._dir = node.work_dir / "pods" / f"{meta['namespace']}_{meta['name']}_{self.uid[:8]}"
        self._restart_policy: str = pod["spec"].get("restartPolicy", "Always")
        self._conditions = Conditions()
        self._start_time = now()
        self._init: list[_Container] = []
        self._containers: list[_Container] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._grace = 30.0
        self._delete_when_stopped = False
        self._finished = False
        self._thread = threading.Thread(target=self._run, name=f"pod-{meta['name']}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def request_stop(self, grace: float, delete: bool) -> None:
        """Stop the processes (SIGTERM, SIGKILL after ``grace`` s); then DELETE the pod if asked."""
        with self._lock:
            self._grace = min(self._grace, grace) if self._stop.is_set() else grace
            self._delete_when_stopped = self._delete_when_stopped or delete
            self._stop.set()
            finished = self._finished
        if finished and delete:
            delete_pod(self._node.api, self._pod)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def log_path(self, container: str) -> Path | None:
        """Where ``container`` (init or app) writes its output, which every run appends to;
        None if the pod has no such container."""
        spec = self._pod["spec"]
        names = {c["name"] for c in [*(spec.get("initContainers") or []), *spec["containers"]]}
        return self._log_file(container) if container in names else None

    def _log_file(self, container: str) -> Path:
        return self._dir / f"{container}.log"

    def _run(self) -> None:
        try:
            self._run_pod()
        except Exception:
            log.exception("pod %s failed in the agent", self._path)
        finally:
            self._kill_all(grace=0.0)
            self._node.gpus.release(self.uid)
            with self._lock:
                self._finished = True
                delete = self._delete_when_stopped
            if delete:
                delete_pod(self._node.api, self._pod)

    def _run_pod(self) -> None:
        spec = self._pod["spec"]
        self._dir.mkdir(parents=True, exist_ok=True)
        self._init = [
            _Container(c, ContainerState(c["name"], c.get("image", ""), init=True), [])
            for c in spec.get("initContainers") or []
        ]
        self._containers = [
            _Container(c, ContainerState(c["name"], c.get("image", "")), [])
            for c in spec["containers"]
        ]
        if self._init:
            for container in self._containers:
                container.status.state = {"waiting": {"reason": "PodInitializing"}}
        self._report("Pending")
        if not self._wait_for_gpus() or not self._prepare():
            return
        while not self._stop.is_set():
            waiting_init = [c for c in self._init if not c.done]
            if waiting_init:
                # Init containers run one at a time, in order; a failed one fails the pod.
                changed, phase = self._step(waiting_init[:1]), "Pending"
                if waiting_init[0].done and waiting_init[0].exit_code != 0:
                    self._report("Failed", final=True)
                    return
            else:
                changed, phase = self._step(self._containers), "Running"
                if all(c.done for c in self._containers):
                    failed = any(c.exit_code != 0 for c in self._containers)
                    self._report("Failed" if failed else "Succeeded", final=True)
                    return
            if changed:
                self._report(phase)
            self._stop.wait(0.2)
        with self._lock:
            grace = self._grace
        self._kill_all(grace)

    def _wait_for_gpus(self) -> bool:
        """Take the pod's GPU indices and split them among its containers, in order; an init
        container reuses the first ones (the pod needs the larger of the two demands)."""
        wanted = [_gpu_count(c.spec) for c in self._containers]
        init_wanted = [_gpu_count(c.spec) for c in self._init]
        while not self._stop.is_set():
            indices = self._node.gpus.allocate(self.uid, max([sum(wanted), *init_wanted]))
            if indices is not None:
                for init, count in zip(self._init, init_wanted, strict=True):
                    init.gpu_indices = indices[:count]
                for container, count in zip(self._containers, wanted, strict=True):
                    container.gpu_indices, indices = indices[:count], indices[count:]
                return True
            self._stop.wait(0.5)
        return False

    def _prepare(self) -> bool:
        """Resolve env, command and credentials; retried, as the kubelet does, until it works."""
        reported = ""
        while not self._stop.is_set():
            try:
                kubeconfig = self._service_account_kubeconfig()
                for container in [*self._init, *self._containers]:
                    self._resolve(container, kubeconfig)
                return True
            except (ContainerConfigError, ApiError, OSError) as error:
                if str(error) != reported:
                    reported = str(error)
                    for container in [*self._init, *self._containers]:
                        container.status.state = {
                            "waiting": {"reason": "CreateContainerConfigError", "message": reported}
                        }
                    self._report("Pending")
                self._stop.wait(1.0)
        return False

    def _resolve(self, container: _Container, kubeconfig: Path | None) -> None:
        spec = container.spec
        if spec.get("restartPolicy") == "Always":
            raise ContainerConfigError(
                f"init container {spec['name']}: sidecars (restartPolicy: Always) are not "
                "supported by the dev cluster"
            )
        declared = declared_env(self._node.api, self._pod, spec)
        argv = [
            expand(part, declared)
            for part in [*(spec.get("command") or []), *(spec.get("args") or [])]
        ]
        if not spec.get("command"):
            raise ContainerConfigError(
                f"container {spec['name']} has no command; the dev cluster runs commands, "
                "not images"
            )
        if _PYTHON.match(argv[0]):
            argv[0] = self._node.python
        env = dict(self._node.base_env)
        threads = _cpu_threads(spec)
        if threads is not None:
            env["OMP_NUM_THREADS"] = str(threads)
        env.update(
            {
                "HOSTNAME": self._pod["metadata"]["name"],
                "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in container.gpu_indices),
                "KUBENAS_TERMINATION_MESSAGE_PATH": str(self._termination_file(container)),
            }
        )
        if kubeconfig is not None:
            env["KUBECONFIG"] = str(kubeconfig)
        env.update(declared)
        container.argv, container.env = argv, env

    def _service_account_kubeconfig(self) -> Path | None:
        """A kubeconfig with a token bound to this pod (TokenRequest), as a mounted token is."""
        meta, spec = self._pod["metadata"], self._pod["spec"]
        account = spec.get("serviceAccountName") or "default"
        base = f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{account}"
        automount = spec.get("automountServiceAccountToken")
        if automount is None:
            automount = self._node.api.get(base).get("automountServiceAccountToken", True)
        if not automount:
            return None
        answer = self._node.api.create(
            f"{base}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {
                    "expirationSeconds": TOKEN_SECONDS,
                    "boundObjectRef": {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "name": meta["name"],
                        "uid": meta["uid"],
                    },
                },
            },
        )
        path = self._dir / "kubeconfig"
        write_token_kubeconfig(
            path,
            self._node.api.server,
            self._node.api.ca_pem,
            answer["status"]["token"],
            meta["namespace"],
        )
        return path

    def _step(self, containers: list[_Container]) -> bool:
        """Start due containers and collect exited ones; True when the status changed."""
        changed = False
        for container in containers:
            if container.done:
                continue
            if container.process is None:
                if time.monotonic() >= container.next_start:
                    self._spawn(container)
                    changed = True
                continue
            code = container.process.poll()
            if code is not None:
                self._finish(container, 128 - code if code < 0 else code)
                changed = True
        return changed

    def _spawn(self, container: _Container) -> None:
        workdir = Path(container.spec.get("workingDir") or self._dir)
        termination_file = self._termination_file(container)
        started_at = now()
        try:
            workdir.mkdir(parents=True, exist_ok=True)
            termination_file.write_bytes(b"")
            with open(self._log_file(container.spec["name"]), "ab") as output:
                container.process = subprocess.Popen(
                    container.argv,
                    cwd=workdir,
                    env=container.env,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError as error:
            container.status.state = terminated(128, f"StartError: {error}", started_at)
            self._after_exit(container, 128)
            return
        (self._dir / f"{container.spec['name']}.pgid").write_text(f"{container.process.pid}\n")
        container.status.state = {"running": {"startedAt": started_at}}
        log.info(
            "started %s/%s as pid %d", self._path, container.spec["name"], container.process.pid
        )

    def _finish(self, container: _Container, exit_code: int) -> None:
        assert container.process is not None
        _kill_group(container.process.pid, signal.SIGKILL)
        (self._dir / f"{container.spec['name']}.pgid").unlink(missing_ok=True)
        container.process = None
        started_at = container.status.state.get("running", {}).get("startedAt", now())
        container.status.state = terminated(
            exit_code, self._message(container, exit_code), started_at
        )
        self._after_exit(container, exit_code)

    def _after_exit(self, container: _Container, exit_code: int) -> None:
        """Restart per ``restartPolicy`` with the kubelet's doubling back-off, or mark done.
        An init container that succeeded is done whatever the policy."""
        policy = self._restart_policy
        always = policy == "Always" and not container.status.init
        if always or (exit_code != 0 and policy != "Never"):
            container.status.last_state = container.status.state
            container.status.restart_count += 1
            backoff = min(2.0 ** (container.status.restart_count - 1), 30.0)
            container.next_start = time.monotonic() + backoff
            container.status.state = {"waiting": {"reason": "CrashLoopBackOff"}}
        else:
            container.done = True

    def _message(self, container: _Container, exit_code: int) -> str:
        """The termination message file (4 KiB cap), or the log's tail if the pod asks so."""
        with contextlib.suppress(OSError):
            data = self._termination_file(container).read_bytes()[:TERMINATION_MESSAGE_LIMIT]
            if data.strip():
                return data.decode(errors="replace")
        if (
            exit_code != 0
            and container.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError"
        ):
            with contextlib.suppress(OSError):
                data = self._log_file(container.spec["name"]).read_bytes()
                return data[-FALLBACK_LOG_LIMIT:].decode(errors="replace")
        return ""

    def _termination_file(self, container: _Container) -> Path:
        return self._dir / f"{container.spec['name']}.termination-log"

    def _kill_all(self, grace: float) -> None:
        """SIGTERM every running container's group, SIGKILL what is left after ``grace``."""
        running = [c for c in [*self._init, *self._containers] if c.process is not None]
        for container in running:
            assert container.process is not None
            _kill_group(container.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(
            c.process is not None and c.process.poll() is None for c in running
        ):
            time.sleep(0.1)
        for container in running:
            assert container.process is not None
            _kill_group(container.process.pid, signal.SIGKILL)
            container.process.wait()
            (self._dir / f"{container.spec['name']}.pgid").unlink(missing_ok=True)
            container.process = None

    def _report(self, phase: str, final: bool = False) -> None:
        """Patch the pod's status; a final status is retried, since Jobs wait on it."""
        status = pod_status(
            phase,
            self._start_time,
            self._conditions,
            [c.status for c in self._init],
            [c.status for c in self._containers],
            self.uid,
        )
        for _ in range(20 if final else 1):
            try:
                self._node.api.patch_merge(f"{self._path}/status", {"status": status})
                return
            except ApiError as error:
                if error.status == 404:
                    return
                log.warning("status of %s not written: %s", self._path, error)
            except OSError as error:
                log.warning("status of %s not written: %s", self._path, error)
            time.sleep(0.5)


def delete_pod(api: ApiClient, pod: Json) -> None:
    """The kubelet's last word: remove the pod object now that its processes are gone."""
    meta = pod["metadata"]
    with contextlib.suppress(ApiError, OSError):
        api.delete(
            f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
            {
                "apiVersion": "v1",
                "kind": "DeleteOptions",
                "gracePeriodSeconds": 0,
                "preconditions": {"uid": meta["uid"]},
            },
        )


def _cpu_threads(container: Json) -> int | None:
    """Threads a CPU limit allows. A kubelet enforces the limit with a cgroup quota; the agent
    has no cgroups, so it tells the process instead (OpenMP and torch read this variable)."""
    limit = ((container.get("resources") or {}).get("limits") or {}).get("cpu")
    if limit is None:
        return None
    text = str(limit)
    cores = int(text[:-1]) / 1000 if text.endswith("m") else float(text)
    return max(1, math.ceil(cores))


def _gpu_count(container: Json) -> int:
    resources = container.get("resources") or {}
    for key in ("limits", "requests"):
        value = (resources.get(key) or {}).get(GPU_RESOURCE)
        if value is not None:
            return int(value)
    return 0


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
