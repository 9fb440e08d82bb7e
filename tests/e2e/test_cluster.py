"""The dev cluster behaves like a real one where kubenas relies on it: its real node runs our
images' containers with fake GPUs assigned, init containers, service-account rights, logs
through the API server, and leaves no process of a deleted pod."""

from __future__ import annotations

import json
import os
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from kubenas_devcluster import Cluster
from kubenas_devcluster.procs import alive
from kubenas_devcluster.testing import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def namespace(make_namespace: Callable[..., str]) -> str:
    """Plain pods, not the operator's locked-down ones: no Pod Security label."""
    return make_namespace(None)


# The images the node holds: the trainer's (python) and the operator's (a shell, python and
# the Kubernetes client).
TRAINER_IMAGE = "kubenas-trainer:0.1.0"
SHELL_IMAGE = "ghcr.io/kubenas/kubenas-operator:0.1.0"
# Writes the GPUs it saw and when it ran to its termination message, after sleeping argv[1] s.
GPU_PROBE = (
    "import json, os, sys, time; start = time.time(); time.sleep(float(sys.argv[1])); "
    "open('/dev/termination-log', 'w').write(json.dumps("
    "{'gpus': os.environ['CUDA_VISIBLE_DEVICES'], 'start': start, 'end': time.time()}))"
)


def gpu_job(name: str, seconds: float) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "trainer",
                            "image": TRAINER_IMAGE,
                            "command": ["python", "-c", GPU_PROBE, str(seconds)],
                            "resources": {"limits": {"nvidia.com/gpu": "1"}},
                        }
                    ],
                }
            },
        },
    }


def job_pod(core: client.CoreV1Api, namespace: str, job: str) -> client.V1Pod:
    pods = core.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items
    assert len(pods) == 1, [p.metadata.name for p in pods]
    return pods[0]


def terminated(pod: client.V1Pod) -> client.V1ContainerStateTerminated:
    state = pod.status.container_statuses[0].state
    assert state.terminated is not None, state
    return state.terminated


def job_done(batch: client.BatchV1Api, namespace: str, name: str) -> bool:
    status = batch.read_namespaced_job_status(name, namespace).status
    assert not status.failed, f"job {name} failed"
    return bool(status.succeeded)


def test_gpu_job_reports_its_termination_message(k8s: client.ApiClient, namespace: str) -> None:
    batch, core = client.BatchV1Api(k8s), client.CoreV1Api(k8s)
    batch.create_namespaced_job(namespace, gpu_job("probe", 0))
    wait_for(lambda: job_done(batch, namespace, "probe"), timeout=60, what="job probe")

    pod = job_pod(core, namespace, "probe")
    assert pod.status.phase == "Succeeded"
    finished = terminated(pod)
    assert finished.exit_code == 0
    assert json.loads(finished.message)["gpus"] in ("0", "1")


def test_init_containers_run_to_completion_first(k8s: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(k8s)
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "init"},
            "spec": {
                "restartPolicy": "Never",
                "volumes": [{"name": "shared", "emptyDir": {}}],
                "initContainers": [
                    {
                        "name": "prepare",
                        "image": SHELL_IMAGE,
                        "command": ["sh", "-c", "sleep 1; echo prepared > /shared/greeting"],
                        "volumeMounts": [{"name": "shared", "mountPath": "/shared"}],
                    }
                ],
                "containers": [
                    {
                        "name": "main",
                        "image": SHELL_IMAGE,
                        "command": ["sh", "-c", "cat /shared/greeting > /dev/termination-log"],
                        "volumeMounts": [{"name": "shared", "mountPath": "/shared"}],
                    }
                ],
            },
        },
    )
    pod = wait_for(
        lambda: _finished(core.read_namespaced_pod("init", namespace)), timeout=30, what="pod init"
    )

    assert pod.status.phase == "Succeeded"
    assert pod.status.init_container_statuses[0].state.terminated.exit_code == 0
    assert terminated(pod).message.strip() == "prepared"


def test_scheduler_runs_at_most_two_one_gpu_jobs_on_two_gpus(
    k8s: client.ApiClient, namespace: str
) -> None:
    batch, core = client.BatchV1Api(k8s), client.CoreV1Api(k8s)
    names = [f"trial-{i}" for i in range(4)]
    for name in names:
        batch.create_namespaced_job(namespace, gpu_job(name, 3))

    most_running = 0
    deadline = time.monotonic() + 90
    while not all(job_done(batch, namespace, name) for name in names):
        assert time.monotonic() < deadline, "4 GPU jobs did not complete in 90 s"
        pods = core.list_namespaced_pod(namespace).items
        most_running = max(most_running, sum(p.status.phase == "Running" for p in pods))
        time.sleep(0.2)

    assert 1 <= most_running <= 2
    runs = [json.loads(terminated(job_pod(core, namespace, name)).message) for name in names]
    overlapping = [
        (first, second)
        for i, first in enumerate(runs)
        for second in runs[i + 1 :]
        if first["start"] < second["end"] and second["start"] < first["end"]
    ]
    assert overlapping, runs
    for first, second in overlapping:
        assert first["gpus"] != second["gpus"], (first, second)


def sleeper_pod(name: str) -> dict[str, Any]:
    """A pod whose shell waits on a long ``sleep``; both carry ``E2E_SLEEPER=name``."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 2,
            "containers": [
                {
                    "name": "main",
                    "image": SHELL_IMAGE,
                    "command": ["sh", "-c", "sleep 300 & wait"],
                    "env": [{"name": "E2E_SLEEPER", "value": name}],
                }
            ],
        },
    }


def sleeper_pids(name: str) -> list[int]:
    """The host's processes of a sleeper pod's container (a container's processes are the
    host's, in namespaces of their own), found by their environment."""
    marker = f"E2E_SLEEPER={name}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in environ and alive(int(entry)):
            found.append(int(entry))
    return found


def started_pids(name: str) -> list[int]:
    """The shell and its ``sleep``, once both run."""
    pids: list[int] = wait_for(
        lambda: found if len(found := sleeper_pids(name)) == 2 else None,
        timeout=60,
        what=f"pod {name}'s processes",
    )
    return pids


def test_deleting_pods_and_namespaces_leaves_no_process(
    k8s: client.ApiClient, make_namespace: Callable[..., str]
) -> None:
    core = client.CoreV1Api(k8s)
    namespace = make_namespace(None)
    deleted, left = f"deleted-{namespace}", f"left-{namespace}"
    core.create_namespaced_pod(namespace, sleeper_pod(deleted))
    core.create_namespaced_pod(namespace, sleeper_pod(left))
    deleted_pids = started_pids(deleted)
    left_pids = started_pids(left)

    core.delete_namespaced_pod(deleted, namespace)
    wait_for(
        lambda: not any(alive(pid) for pid in deleted_pids),
        timeout=15,
        what="the deleted pod's processes to end",
    )
    wait_for(
        lambda: (
            not core.list_namespaced_pod(namespace, field_selector=f"metadata.name={deleted}").items
        ),
        timeout=15,
        what="the pod object to go",
    )

    core.delete_namespace(namespace)
    wait_for(
        lambda: namespace not in {n.metadata.name for n in core.list_namespace().items},
        timeout=60,
        what=f"namespace {namespace} to be deleted",
    )
    assert not any(alive(pid) for pid in left_pids)


# Lists the pod's namespace's ConfigMaps with the token the kubelet mounted, through the
# ``kubernetes`` Service (kube-proxy); a refusal exits 1 with the API server's answer.
LIST_CONFIGMAPS = (
    "import sys; from kubernetes import client, config; config.load_incluster_config(); "
    "namespace = open('/var/run/secrets/kubernetes.io/serviceaccount/namespace').read(); "
    "\ntry: client.CoreV1Api().list_namespaced_config_map(namespace)"
    "\nexcept client.ApiException as error: sys.exit(str(error.body))"
)


def test_pods_act_with_their_service_account_rights(k8s: client.ApiClient, namespace: str) -> None:
    core, rbac = client.CoreV1Api(k8s), client.RbacAuthorizationV1Api(k8s)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "worker"}})

    def run_kubectl(name: str) -> client.V1Pod:
        core.create_namespaced_pod(
            namespace,
            {
                "metadata": {"name": name},
                "spec": {
                    "serviceAccountName": "worker",
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "main",
                            "image": SHELL_IMAGE,
                            "command": ["python", "-c", LIST_CONFIGMAPS],
                            "terminationMessagePolicy": "FallbackToLogsOnError",
                        }
                    ],
                },
            },
        )
        return wait_for(
            lambda: _finished(core.read_namespaced_pod(name, namespace)),
            timeout=30,
            what=f"pod {name}",
        )

    refused = run_kubectl("before-binding")
    assert refused.status.phase == "Failed"
    message = terminated(refused).message
    assert "Forbidden" in message and f"system:serviceaccount:{namespace}:worker" in message

    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "read-configmaps"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "worker-reads-configmaps"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "read-configmaps",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "worker", "namespace": namespace}],
        },
    )
    assert run_kubectl("after-binding").status.phase == "Succeeded"


def test_pod_logs_are_read_through_the_api_server(
    k8s: client.ApiClient, cluster: Cluster, namespace: str
) -> None:
    core = client.CoreV1Api(k8s)
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "talker"},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "main",
                        "image": SHELL_IMAGE,
                        # The runtime reads stdout and stderr through two pipes: a pause
                        # between lines keeps their order in the log.
                        "command": [
                            "sh",
                            "-c",
                            "echo one; sleep 0.2; echo two >&2; sleep 0.2; echo three",
                        ],
                    }
                ],
            },
        },
    )
    pod = wait_for(
        lambda: _finished(core.read_namespaced_pod("talker", namespace)),
        timeout=30,
        what="pod talker",
    )
    assert pod.status.phase == "Succeeded"

    assert core.read_namespaced_pod_log("talker", namespace) == "one\ntwo\nthree\n"
    assert core.read_namespaced_pod_log("talker", namespace, tail_lines=1) == "three\n"
    assert core.read_namespaced_pod_log("talker", namespace, limit_bytes=5) == "one\nt"

    # The kubelet's own endpoint, at the node's address, refuses a client without credentials.
    node = core.read_node(pod.spec.node_name)
    assert {"type": "InternalIP", "address": cluster.host} in [
        a.to_dict() for a in node.status.addresses
    ]
    port = node.status.daemon_endpoints.kubelet_endpoint.port
    no_client_cert = ssl.create_default_context(cafile=str(cluster.state_dir / "pki" / "ca.crt"))
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(
            f"https://{cluster.host}:{port}/containerLogs/{namespace}/talker/main",
            context=no_client_cert,
            timeout=5,
        )
    assert refused.value.code == 401


def _finished(pod: client.V1Pod) -> client.V1Pod | None:
    return pod if pod.status.phase in ("Succeeded", "Failed") else None


def test_pushed_metric_reaches_prometheus_within_a_scrape(cluster: Cluster) -> None:
    trial, value = uuid.uuid4().hex[:8], time.time()
    group = f"{cluster.pushgateway_url}/metrics/job/kubenas-e2e/trial/{trial}"
    urllib.request.urlopen(
        urllib.request.Request(group, data=f"kubenas_e2e_probe {value}\n".encode(), method="PUT"),
        timeout=5,
    )
    pushed = time.monotonic()
    query = urllib.parse.urlencode({"query": f'kubenas_e2e_probe{{trial="{trial}"}}'})

    def scraped() -> list[Any]:
        url = f"{cluster.prometheus_url}/api/v1/query?{query}"
        with urllib.request.urlopen(url, timeout=5) as answer:
            result: list[Any] = json.load(answer)["data"]["result"]
            return result

    result = wait_for(scraped, timeout=10, what="the pushed metric in Prometheus", interval=0.1)
    assert time.monotonic() - pushed < 1 + 3
    assert result[0]["metric"]["job"] == "kubenas-e2e"
    assert float(result[0]["value"][1]) == pytest.approx(value)
    urllib.request.urlopen(urllib.request.Request(group, method="DELETE"), timeout=5)
