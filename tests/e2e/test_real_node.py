"""The dev cluster's real node: containerd, runc and the kubelet run our trainer image.

Experiments are applied with kubectl and run by the operator (a host process here), whose
trial pods the real kubelet runs under Pod Security ``restricted``, with checkpoints on a
PersistentVolume, GPUs from the fake device plugin, and logs served by the kubelet.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID
from kubernetes import client, config, watch

import kubenas_images
from kubenas_devcluster import Cluster
from kubenas_devcluster.testing import wait_for

from .operator_harness import (
    POD_SECURITY,
    REPO,
    OperatorProcess,
    condition,
    finished,
    trials,
    volume_documents,
)

pytestmark = pytest.mark.e2e

NAMESPACE = "nas-real"
CLAIM = "nas-checkpoints"
TRAINER_IMAGE = "ghcr.io/kubenas/kubenas-trainer:0.1.0"


@pytest.fixture(scope="module")
def real(cluster: Cluster) -> Cluster:
    return cluster


@pytest.fixture(scope="module")
def api(real: Cluster) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(real.kubeconfig))


@pytest.fixture(scope="module")
def checkpoints(
    real: Cluster, api: client.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A restricted namespace with a PersistentVolume and its claim for checkpoints, set up as
    docs/operate.md tells a user; returns the volume's folder on the host."""
    folder = tmp_path_factory.mktemp("pv")
    folder.chmod(0o777)  # the trainer runs as 65532
    _kubectl(real, "apply", "--server-side", "-f", str(REPO / "crds"))
    _kubectl(real, "wait", "--for=condition=Established", "crd/nasexperiments.kubenas.io")
    documents = [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": NAMESPACE, "labels": {POD_SECURITY: "restricted"}},
        },
        *volume_documents(NAMESPACE, CLAIM, folder, "ReadWriteOnce"),
    ]
    _kubectl(real, "apply", "-f", "-", stdin=yaml.safe_dump_all(documents))
    wait_for(
        lambda: _service_account_exists(api),
        timeout=30,
        what=f"the default ServiceAccount in {NAMESPACE}",
    )
    return folder


@pytest.fixture(scope="module")
def operator(
    real: Cluster, checkpoints: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    process = OperatorProcess(
        NAMESPACE,
        tmp_path_factory.mktemp("operator") / "operator.log",
        real.prometheus_url,
        real.pushgateway_url,
        # As the chart starts it (values.yaml trainer.image).
        extra_args=("--trainer-image", TRAINER_IMAGE),
    )
    process.start()
    yield process
    process.stop()


def test_the_node_is_a_kubelet_with_its_own_credentials_and_fake_gpus(
    real: Cluster, api: client.ApiClient, checkpoints: Path
) -> None:
    node = client.CoreV1Api(api).read_node(real.nodes[0])
    assert node.status.node_info.container_runtime_version.startswith("containerd://")
    assert node.status.node_info.kubelet_version == "v1.36.3"
    assert node.status.allocatable["nvidia.com/gpu"] == "2"
    certificate = x509.load_pem_x509_certificate(
        (real.state_dir / "node" / "kubelet.crt").read_bytes()
    )
    subject = certificate.subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        f"system:node:{real.nodes[0]}"
    )
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:nodes"
    # The Node authorizer: a node reads only the secrets of pods bound to it.
    can = _kubectl(
        real,
        "auth",
        "can-i",
        "list",
        "secrets",
        "-A",
        f"--as=system:node:{real.nodes[0]}",
        "--as-group=system:nodes",
        check=False,
    )
    assert can.stdout.startswith("no"), can.stdout

    # Two pods asking one GPU each at the same time get different devices, as with NVIDIA's.
    for index in range(2):
        client.CoreV1Api(api).create_namespaced_pod(NAMESPACE, _gpu_pod(f"gpu-{index}"))
    for index in range(2):
        wait_for(
            functools.partial(_succeeded, api, f"gpu-{index}"),
            timeout=60,
            what=f"pod gpu-{index} to finish",
        )
    devices = {_kubectl(real, "logs", "-n", NAMESPACE, f"gpu-{i}").stdout.strip() for i in (0, 1)}
    assert devices == {"0", "1"}


def test_digits_experiment_runs_the_trainer_image_and_asha_resumes_from_the_volume(
    real: Cluster, api: client.ApiClient, checkpoints: Path, operator: OperatorProcess
) -> None:
    _kubectl(real, "apply", "-n", NAMESPACE, "-f", "-", stdin=yaml.safe_dump(_digits("digits")))
    # The operator deletes a Job once its success is recorded (failed ones stay): watch the
    # pods while they exist, and follow the promoted run's log from the kubelet meanwhile.
    images: dict[str, tuple[str, str]] = {}
    follower: subprocess.Popen[str] | None = None
    deadline = time.monotonic() + 420
    done = None
    while done is None and time.monotonic() < deadline:
        pods = client.CoreV1Api(api).list_namespaced_pod(
            NAMESPACE, label_selector="kubenas.io/experiment=digits"
        )
        for pod in pods.items:
            statuses = pod.status.container_statuses or []
            if statuses and statuses[0].image_id:
                images[pod.metadata.name] = (pod.spec.containers[0].image, statuses[0].image_id)
            promoted = pod.metadata.labels.get("kubenas.io/fidelity") == "3"
            if promoted and follower is None and pod.status.phase == "Running":
                follower = _follow_log(real, pod.metadata.name)
        done = finished(api, NAMESPACE, "digits")
        time.sleep(0.3)
    assert done is not None, "the digits experiment did not finish in 420 s"
    assert condition(done, "Succeeded")["status"] == "True", done["status"]  # type: ignore[index]
    listed = trials(api, NAMESPACE)
    assert len(listed) == 4
    assert all(t["status"]["state"] == "Succeeded" for t in listed), listed

    store = kubenas_images.storage()
    trainer_id = kubenas_images.image_id(kubenas_images.image_name("trainer"), store)
    assert len(images) == 5, images  # four trials at 1 epoch, the best one promoted to 3
    for image, image_id in images.values():
        assert image == TRAINER_IMAGE
        assert image_id.endswith(trainer_id), image_id

    promoted = [t for t in listed if t["status"]["fidelity"] == 3]
    assert len(promoted) == 1
    name = promoted[0]["metadata"]["name"]
    assert promoted[0]["status"]["resumedFrom"].endswith(f"{name}/checkpoint.pt")
    assert (checkpoints / "digits" / name / "checkpoint.pt").is_file()
    # The promoted run's own log, from the kubelet: it trained epochs 2 and 3 only.
    assert follower is not None, "the promoted run was never seen running"
    log, _ = follower.communicate(timeout=60)
    epochs = [e["epoch"] for e in _events(log) if e.get("event") == "epoch"]
    assert epochs == [2, 3], log


def test_a_crashed_trial_shows_the_trainers_error_in_kubectl_logs(
    real: Cluster, api: client.ApiClient, checkpoints: Path, operator: OperatorProcess
) -> None:
    """A user's mistake only the kubelet can make real: the checkpoint volume mounted
    read-only. The trainer fails writing its checkpoint; its pod's log says why."""
    doc = _digits("readonly", read_only=True)
    doc["spec"]["budget"] = {"maxTrials": 1, "parallelTrials": 1, "maxFailedTrials": 0}
    doc["spec"]["fidelity"] = {"max": 1}
    _kubectl(real, "apply", "-n", NAMESPACE, "-f", "-", stdin=yaml.safe_dump(doc))
    done = wait_for(
        lambda: finished(api, NAMESPACE, "readonly"), timeout=240, what="the read-only experiment"
    )
    assert condition(done, "Failed")["status"] == "True"  # type: ignore[index]
    log = _kubectl(real, "logs", "-n", NAMESPACE, "-l=kubenas.io/experiment=readonly")
    assert "kubenas_trainer: error: OSError: [Errno 30] Read-only file system" in log.stdout


def test_pod_security_refuses_a_root_pod_on_the_real_node(
    real: Cluster, api: client.ApiClient, checkpoints: Path
) -> None:
    pod = _gpu_pod("root")
    pod["spec"]["securityContext"] = {"runAsUser": 0}
    refused = _kubectl(
        real, "apply", "-n", NAMESPACE, "-f", "-", stdin=yaml.safe_dump(pod), check=False
    )
    assert refused.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in refused.stderr
    assert "runAsUser=0" in refused.stderr


def _digits(name: str, read_only: bool = False) -> dict[str, Any]:
    mount: dict[str, Any] = {"name": "checkpoints", "mountPath": "/kubenas/checkpoints"}
    if read_only:
        mount["readOnly"] = True
    return {
        "apiVersion": "kubenas.io/v1alpha1",
        "kind": "NASExperiment",
        "metadata": {"name": name},
        "spec": {
            "objective": {"metric": "val_accuracy", "direction": "maximize"},
            "searchSpace": {"family": "nb201-cell", "stemChannels": [8], "cellsPerStage": [1]},
            "strategy": {"name": "random"},
            "seed": 1,
            "budget": {"maxTrials": 4, "parallelTrials": 2, "maxFailedTrials": 1},
            "fidelity": {
                "resource": "epochs",
                "min": 1,
                "max": 3,
                "scheduler": "asha",
                "reductionFactor": 3,
            },
            "trial": {
                "dataset": "digits",
                "timeoutSeconds": 300,
                "command": ["python", "-m", "kubenas_trainer"],
                "resources": {
                    "limits": {"cpu": 1, "memory": "2Gi", "nvidia.com/gpu": 1},
                },
                "checkpointDir": "/kubenas/checkpoints",
                "podTemplate": {
                    "spec": {
                        "volumes": [
                            {"name": "checkpoints", "persistentVolumeClaim": {"claimName": CLAIM}}
                        ],
                        "containers": [{"name": "trainer", "volumeMounts": [mount]}],
                    }
                },
            },
        },
    }


def _gpu_pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "main",
                    "image": "ghcr.io/kubenas/kubenas-operator:0.1.0",
                    "command": ["sh", "-c", "sleep 2; echo $CUDA_VISIBLE_DEVICES"],
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


def _follow_log(real: Cluster, pod: str) -> subprocess.Popen[str]:
    """``kubectl logs -f``: the whole log so far, then the rest until the container ends."""
    return subprocess.Popen(
        [str(real.bin_dir / "kubectl"), "logs", "-f", "-n", NAMESPACE, pod],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **real.env()},
    )


def _events(log: str) -> list[dict[str, Any]]:
    events = []
    for line in log.splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


def _succeeded(api: client.ApiClient, pod: str) -> bool:
    return bool(
        client.CoreV1Api(api).read_namespaced_pod(pod, NAMESPACE).status.phase == "Succeeded"
    )


def _has_trials(api: client.ApiClient, namespace: str, count: int) -> bool:
    return len(trials(api, namespace)) >= count


def _service_account_exists(api: client.ApiClient) -> bool:
    try:
        client.CoreV1Api(api).read_namespaced_service_account("default", NAMESPACE)
    except client.ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def _kubectl(
    real: Cluster, *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(real.bin_dir / "kubectl"), *args],
        capture_output=True,
        text=True,
        input=stdin,
        env={**os.environ, **real.env()},
        timeout=120,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return done


def test_the_chart_runs_the_operator_image_and_survives_three_pod_kills(
    real: Cluster, api: client.ApiClient
) -> None:
    """helm install as a user would (images by the chart's defaults, the ServiceAccount token
    mounted by the kubelet, Pod Security restricted on both namespaces); the operator pod is
    killed three times mid-search and the search still trains each trial exactly once."""
    watched = "nas-chart"
    for namespace in ("kubenas-system", watched):
        _kubectl(real, "create", "namespace", namespace)
        _kubectl(real, "label", "namespace", namespace, f"{POD_SECURITY}=restricted")
    _kubectl(real, "apply", "--server-side", "-f", str(REPO / "crds"))
    helm = subprocess.run(
        [
            str(real.bin_dir / "helm"),
            "install",
            "kubenas",
            str(REPO / "charts" / "kubenas"),
            "-n",
            "kubenas-system",
            "--wait",
            "--timeout=180s",
            "--set=crds.install=false",
            f"--set=prometheus.url={real.prometheus_url}",
            f"--set=pushgateway.url={real.pushgateway_url}",
            f"--set=watchNamespaces={{{watched}}}",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **real.env()},
        timeout=240,
    )
    assert helm.returncode == 0, helm.stderr
    core = client.CoreV1Api(api)
    selector = "app.kubernetes.io/component=operator"
    (pod,) = core.list_namespaced_pod("kubenas-system", label_selector=selector).items
    store = kubenas_images.storage()
    operator_id = kubenas_images.image_id(kubenas_images.image_name("operator"), store)
    assert pod.spec.containers[0].image == "ghcr.io/kubenas/kubenas-operator:0.1.0"
    assert pod.status.container_statuses[0].image_id.endswith(operator_id)
    assert pod.spec.service_account_name == "kubenas"

    created: dict[str, set[str]] = {}
    stop = threading.Event()
    watcher = threading.Thread(target=_record_jobs, args=(api, watched, created, stop))
    watcher.start()
    try:
        doc = _digits("killed")
        doc["spec"]["fidelity"] = {"max": 2}
        doc["spec"]["budget"] = {"maxTrials": 6, "parallelTrials": 2}
        trial = doc["spec"]["trial"]
        del trial["podTemplate"], trial["checkpointDir"]
        _kubectl(real, "apply", "-n", watched, "-f", "-", stdin=yaml.safe_dump(doc))
        for kill in range(3):
            wait_for(
                functools.partial(_has_trials, api, watched, 2 * kill + 1),
                timeout=180,
                what=f"trial {2 * kill + 1} before kill {kill + 1}",
            )
            (pod,) = core.list_namespaced_pod("kubenas-system", label_selector=selector).items
            _kubectl(
                real,
                "delete",
                "pod",
                "-n",
                "kubenas-system",
                pod.metadata.name,
                "--grace-period=0",
                "--force",
            )
        done = wait_for(
            lambda: finished(api, watched, "killed"), timeout=420, what="the killed experiment"
        )
    finally:
        stop.set()
        watcher.join(timeout=30)
    listed = trials(api, watched)
    reasons = [(t["status"].get("reason"), t["status"].get("message")) for t in listed]
    assert condition(done, "Succeeded")["status"] == "True", reasons  # type: ignore[index]
    assert len(listed) == 6
    assert all(t["status"]["state"] == "Succeeded" for t in listed), listed
    # Each trial's run is one Job, created once: no run was started twice across the kills.
    assert len(created) == 6, created
    assert all(len(uids) == 1 for uids in created.values()), created
    restarts = core.list_namespaced_pod("kubenas-system", label_selector=selector).items
    assert len(restarts) == 1 and restarts[0].metadata.name != pod.metadata.name


def _record_jobs(
    api: client.ApiClient, namespace: str, created: dict[str, set[str]], stop: threading.Event
) -> None:
    """Every Job the operator creates in ``namespace``: name to the UIDs it had."""
    batch = client.BatchV1Api(api)
    while not stop.is_set():
        for event in watch.Watch().stream(batch.list_namespaced_job, namespace, timeout_seconds=2):
            job = event["object"]
            created.setdefault(job.metadata.name, set()).add(job.metadata.uid)
