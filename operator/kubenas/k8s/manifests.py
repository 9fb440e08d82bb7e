"""Pure builders of the objects the operator creates: NASTrials and trainer Jobs.

No API calls here: given the experiment and the engine's decision, return the manifest. Names
are deterministic (trial ``<experiment>-<index>``, Job ``<trial>-f<fidelity>``), so a restart
between deciding and creating finds AlreadyExists instead of making a duplicate.
"""

from __future__ import annotations

import copy
from typing import Any

from kubenas.api.builtin_trainer import runs_builtin_trainer
from kubenas.api.experiment import NASExperiment
from kubenas.api.pod_policy import check_pod_template
from kubenas.api.records import TrialRecord
from kubenas.api.trial import TRIAL_KIND, TrialSpec
from kubenas.contract import checkpoint_folder, trial_environment
from kubenas.k8s.settings import (
    GROUP,
    LABEL_EXPERIMENT,
    LABEL_FIDELITY,
    LABEL_MANAGED_BY,
    LABEL_ROLE,
    LABEL_TRIAL,
    MANAGER,
    VERSION,
    OperatorSettings,
)

TRAINER_CONTAINER = "trainer"
LABEL_WORKER = "kubenas.io/worker"
WORKER_TOKEN_KEY = "token"
TERMINATION_LOG = "/dev/termination-log"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


def owner_reference(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def job_name(trial: str, fidelity: int | None) -> str:
    return f"{trial}-f{fidelity if fidelity is not None else 0}"


def build_trial(
    experiment_obj: dict[str, Any],
    experiment: NASExperiment,
    record: TrialRecord,
    architecture: dict[str, Any],
) -> dict[str, Any]:
    """The NASTrial of a new record, owned by the experiment (its status is written next)."""
    spec = TrialSpec(
        experiment=experiment.name,
        index=record.index,
        parameters=record.params,
        architecture=architecture,
        key=record.key,
        fidelity=record.fidelity,
        role=record.role,
        source=record.source,
        baseline=record.baseline,
        replica=record.replica,
    )
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": TRIAL_KIND,
        "metadata": {
            "name": record.name,
            "namespace": experiment_obj["metadata"]["namespace"],
            "labels": {
                LABEL_EXPERIMENT: experiment.name,
                LABEL_MANAGED_BY: MANAGER,
                LABEL_ROLE: record.role.value,
            },
            "ownerReferences": [owner_reference(experiment_obj)],
        },
        "spec": spec.to_wire(),
    }


def _quantities(resources: dict[str, Any]) -> dict[str, Any]:
    """Resource quantities as the API's string form (YAML gives ``nvidia.com/gpu: 1`` as int)."""
    return {
        section: {name: str(value) for name, value in amounts.items()}
        if isinstance(amounts, dict)
        else amounts
        for section, amounts in resources.items()
    }


def _restricted(container: dict[str, Any], run_as_user: int) -> None:
    container["securityContext"] = {
        **(container.get("securityContext") or {}),
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "runAsUser": (container.get("securityContext") or {}).get("runAsUser", run_as_user),
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def run_environment(
    experiment: NASExperiment,
    namespace: str,
    record: TrialRecord,
    architecture: dict[str, Any],
    settings: OperatorSettings,
) -> dict[str, str]:
    """Everything a trial run is told, whether it runs in a Job of its own or on a worker."""
    spec = experiment.spec
    env = trial_environment(experiment, record, architecture)
    env["KUBENAS_NAMESPACE"] = namespace
    env["KUBENAS_CHECKPOINT_DIR"] = (
        f"{spec.trial.checkpoint_dir.rstrip('/')}/{experiment.name}/{checkpoint_folder(record)}"
    )
    env["KUBENAS_REPORT"] = "stdout"
    if settings.pushgateway_url:
        env["KUBENAS_PUSHGATEWAY_URL"] = settings.pushgateway_url
    env.update(settings.extra_env)
    return env


def _pod_template(
    experiment: NASExperiment,
    settings: OperatorSettings,
    command: list[str],
    env: list[dict[str, Any]],
    labels: dict[str, str],
) -> dict[str, Any]:
    """The pod of a trial or worker Job: the user's template under the trainer container, with
    the experiment's resources and placement, every container restricted."""
    spec = experiment.spec
    template = copy.deepcopy(spec.trial.pod_template or {})
    pod_meta = template.get("metadata") or {}
    pod_spec: dict[str, Any] = template.get("spec") or {}
    check_pod_template(pod_spec, settings.allow_privileged_pods)

    containers = pod_spec.get("containers") or []
    trainer = next((c for c in containers if c.get("name") == TRAINER_CONTAINER), None)
    if trainer is None:
        trainer = {"name": TRAINER_CONTAINER}
        containers = [trainer, *containers]
    ours = {e["name"] for e in env}
    user_env = [e for e in trainer.get("env") or [] if e.get("name") not in ours]
    trainer.update(
        {
            "image": spec.trial.image or trainer.get("image") or settings.default_image,
            "command": command,
            "env": env + user_env,
            "terminationMessagePath": TERMINATION_LOG,
            "terminationMessagePolicy": "File",
        }
    )
    if spec.trial.resources is not None:
        trainer["resources"] = _quantities(spec.trial.resources)
    for container in containers:
        _restricted(container, settings.run_as_user)

    pod_spec["containers"] = containers
    pod_spec["restartPolicy"] = "Never"
    pod_spec["securityContext"] = {
        **(pod_spec.get("securityContext") or {}),
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if spec.trial.node_selector:
        pod_spec["nodeSelector"] = dict(spec.trial.node_selector)
    if spec.trial.tolerations:
        pod_spec["tolerations"] = copy.deepcopy(spec.trial.tolerations)
    if spec.trial.priority_class_name:
        pod_spec["priorityClassName"] = spec.trial.priority_class_name
    return {
        "metadata": {
            "labels": {**(pod_meta.get("labels") or {}), **labels},
            "annotations": dict(pod_meta.get("annotations") or {}),
        },
        "spec": pod_spec,
    }


def build_job(
    experiment: NASExperiment,
    trial_obj: dict[str, Any],
    record: TrialRecord,
    architecture: dict[str, Any],
    settings: OperatorSettings,
) -> dict[str, Any]:
    """The trainer Job of the trial's current run (its fidelity), owned by the NASTrial."""
    spec = experiment.spec
    namespace = trial_obj["metadata"]["namespace"]
    labels = {
        LABEL_MANAGED_BY: MANAGER,
        LABEL_EXPERIMENT: experiment.name,
        LABEL_TRIAL: record.name,
        LABEL_FIDELITY: str(record.fidelity or 0),
    }
    if spec.trial.queue_name:
        labels[QUEUE_LABEL] = spec.trial.queue_name
    env = run_environment(experiment, namespace, record, architecture, settings)
    listed = [{"name": k, "value": v} for k, v in sorted(env.items())]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(record.name, record.fidelity),
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(trial_obj)],
        },
        "spec": {
            # No activeDeadlineSeconds: it counts from the Job's start, queue time included;
            # the engine times a trial out from its container's start (kubenas.engine).
            "backoffLimit": spec.trial.backoff_limit,
            **_queued(spec.trial.queue_name),
            "template": _pod_template(
                experiment, settings, list(spec.trial.command), listed, labels
            ),
        },
    }


def _queued(queue_name: str | None) -> dict[str, Any]:
    """A Job for a Kueue queue is created suspended, as Kueue's batch/Job integration asks:
    Kueue unsuspends it once the queue's quota admits it, and suspends it again to preempt."""
    return {"suspend": True} if queue_name else {}


def worker_secret_name(experiment: str) -> str:
    return f"{experiment}-worker-token"


def build_worker_secret(experiment_obj: dict[str, Any], token: str) -> dict[str, Any]:
    """The token an experiment's worker pods show the operator, owned by the experiment."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": worker_secret_name(experiment_obj["metadata"]["name"]),
            "namespace": experiment_obj["metadata"]["namespace"],
            "labels": {
                LABEL_MANAGED_BY: MANAGER,
                LABEL_EXPERIMENT: experiment_obj["metadata"]["name"],
            },
            "ownerReferences": [owner_reference(experiment_obj)],
        },
        "type": "Opaque",
        "stringData": {WORKER_TOKEN_KEY: token},
    }


def build_worker_job(
    experiment_obj: dict[str, Any],
    experiment: NASExperiment,
    name: str,
    lease_url: str,
    settings: OperatorSettings,
) -> dict[str, Any]:
    """A worker Job (trial reuse): one pod that asks the operator at ``lease_url`` for trial
    after trial, up to ``maxTrialsPerPod``; every trial's own settings come with its lease.
    Owned by the experiment, since it outlives any one trial."""
    spec = experiment.spec
    assert spec.trial.reuse is not None, "a worker Job is built only for trial reuse"
    namespace = experiment_obj["metadata"]["namespace"]
    labels = {
        LABEL_MANAGED_BY: MANAGER,
        LABEL_EXPERIMENT: experiment.name,
        LABEL_WORKER: name,
    }
    if spec.trial.queue_name:
        labels[QUEUE_LABEL] = spec.trial.queue_name
    command = [
        "python",
        "-m",
        "kubenas_trainer.worker",
        "--serve",
        lease_url,
        "--max-trials",
        str(spec.trial.reuse.max_trials_per_pod),
    ]
    if runs_builtin_trainer(spec.trial.command):
        command += ["--dataset", spec.trial.dataset]
    plain = {
        "KUBENAS_NAMESPACE": namespace,
        "KUBENAS_EXPERIMENT": experiment.name,
        "KUBENAS_WORKER": name,
        **{var.name: var.value for var in spec.trial.env},
        **settings.extra_env,
    }
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(plain.items())]
    env += [
        {"name": "KUBENAS_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {
            "name": "KUBENAS_WORKER_TOKEN",
            "valueFrom": {
                "secretKeyRef": {
                    "name": worker_secret_name(experiment.name),
                    "key": WORKER_TOKEN_KEY,
                }
            },
        },
    ]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(experiment_obj)],
        },
        "spec": {
            # The pod is the unit a lease is lost with: no retries of a worker that died.
            "backoffLimit": 0,
            **_queued(spec.trial.queue_name),
            "template": _pod_template(experiment, settings, command, env, labels),
        },
    }
