"""The pure builders of what the operator creates: no cluster needed to check them."""

from __future__ import annotations

from typing import Any

import pytest

from kubenas import transitions
from kubenas.api import parse_experiment
from kubenas.api.experiment import NASExperiment
from kubenas.api.pod_policy import PodTemplateError
from kubenas.api.records import TrialRecord, TrialState
from kubenas.api.status import ExperimentStatus
from kubenas.engine import decide
from kubenas.k8s.manifests import build_job, build_trial, job_name
from kubenas.k8s.metrics_source import Availability, MetricsSnapshot
from kubenas.k8s.settings import OperatorSettings
from kubenas.k8s.status import conditions, experiment_status


def _experiment(**trial: Any) -> NASExperiment:
    return parse_experiment(
        {
            "apiVersion": "kubenas.io/v1alpha1",
            "kind": "NASExperiment",
            "metadata": {"name": "exp", "namespace": "team"},
            "spec": {
                "searchSpace": {"family": "nb201-cell", "cellsPerStage": [1]},
                "budget": {"maxTrials": 4, "parallelTrials": 2},
                "fidelity": {"max": 3},
                "trial": {"dataset": "digits", "timeoutSeconds": 600, **trial},
            },
        }
    )


OWNER = {
    "apiVersion": "kubenas.io/v1alpha1",
    "kind": "NASExperiment",
    "metadata": {"name": "exp", "namespace": "team", "uid": "u-1"},
}


def _job(experiment: NASExperiment, settings: OperatorSettings | None = None) -> dict[str, Any]:
    start = decide(experiment.spec, [], now=0.0).start[0]
    record = transitions.created("exp-0000", start, now=0.0)
    trial = build_trial(OWNER, experiment, record, start.architecture)
    trial["metadata"]["uid"] = "u-2"
    return build_job(experiment, trial, record, start.architecture, settings or OperatorSettings())


def test_trial_is_named_by_index_and_owned_by_the_experiment() -> None:
    experiment = _experiment()
    start = decide(experiment.spec, [], now=0.0).start[1]
    trial = build_trial(
        OWNER, experiment, transitions.created("exp-0001", start, 0.0), start.architecture
    )
    assert trial["metadata"]["name"] == "exp-0001"
    assert trial["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert trial["spec"]["architecture"]["cell"].count("~") == 6


def test_job_runs_the_trainer_restricted_with_gpu_and_no_deadline_of_its_own() -> None:
    job = _job(
        _experiment(
            resources={"limits": {"nvidia.com/gpu": 1}},
            queueName="gpu-queue",
            priorityClassName="nas",
            nodeSelector={"gpu": "h200"},
            tolerations=[{"key": "gpu", "operator": "Exists"}],
        )
    )
    assert job["metadata"]["name"] == job_name("exp-0000", 3) == "exp-0000-f3"
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    spec = job["spec"]
    # The engine times trials out from their container's start; a Job deadline would count
    # the time its pod waited for a GPU.
    assert "activeDeadlineSeconds" not in spec and spec["backoffLimit"] == 0
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["priorityClassName"] == "nas"
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    trainer = pod["containers"][0]
    assert trainer["resources"] == {"limits": {"nvidia.com/gpu": "1"}}
    assert trainer["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert trainer["securityContext"]["allowPrivilegeEscalation"] is False
    env = {e["name"]: e["value"] for e in trainer["env"]}
    assert env["KUBENAS_EPOCHS"] == "3" and env["KUBENAS_TRIAL"] == "exp-0000"
    assert env["KUBENAS_CHECKPOINT_DIR"] == "/kubenas/checkpoints/exp/exp-0000"


def test_pod_template_adds_volumes_but_not_privileges() -> None:
    template = {
        "spec": {
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "d"}}],
            "containers": [
                {"name": "trainer", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}
            ],
        }
    }
    job = _job(_experiment(podTemplate=template))
    pod = job["spec"]["template"]["spec"]
    assert pod["volumes"][0]["name"] == "data"
    assert pod["containers"][0]["volumeMounts"][0]["mountPath"] == "/data"
    for bad, field in (
        ({"spec": {"hostNetwork": True}}, "hostNetwork"),
        ({"spec": {"volumes": [{"name": "h", "hostPath": {"path": "/"}}]}}, "volumes[0].hostPath"),
        (
            {
                "spec": {
                    "containers": [{"name": "trainer", "securityContext": {"privileged": True}}]
                }
            },
            "containers[0].securityContext",
        ),
        ({"spec": {"securityContext": {"runAsUser": 0}}}, "spec.securityContext.runAsUser"),
        (
            {"spec": {"containers": [{"name": "trainer", "securityContext": {"runAsUser": 0}}]}},
            "containers[0].securityContext.runAsUser",
        ),
        (
            {
                "spec": {
                    "initContainers": [{"name": "i", "securityContext": {"runAsNonRoot": False}}]
                }
            },
            "initContainers[0].securityContext.runAsNonRoot",
        ),
        (
            {
                "spec": {
                    "containers": [
                        {
                            "name": "side",
                            "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}},
                        }
                    ]
                }
            },
            "containers[0].securityContext.capabilities.add: SYS_ADMIN",
        ),
    ):
        with pytest.raises(PodTemplateError, match=field.replace("[", r"\[").replace("]", r"\]")):
            _job(_experiment(podTemplate=bad))
    allowed = _job(
        _experiment(podTemplate={"spec": {"hostNetwork": True}}),
        OperatorSettings(allow_privileged_pods=True),
    )
    assert allowed["spec"]["template"]["spec"]["hostNetwork"] is True
    bind = {"capabilities": {"add": ["NET_BIND_SERVICE"]}}
    kept = _job(
        _experiment(
            podTemplate={"spec": {"containers": [{"name": "trainer", "securityContext": bind}]}}
        )
    )
    assert kept["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsNonRoot"]


def test_conditions_read_as_kstatus_expects() -> None:
    answered = MetricsSnapshot(Availability.ANSWERED)
    running = {
        c.type: c.status
        for c in conditions(
            [],
            1,
            finished=False,
            succeeded=False,
            reason="Running",
            message="",
            metrics=answered,
            now=0.0,
        )
    }
    assert running["Reconciling"] == "True" and running["Stalled"] == "False"
    down = MetricsSnapshot(Availability.UNREACHABLE, problem="down")
    failed = {
        c.type: (c.status, c.reason)
        for c in conditions(
            [],
            1,
            finished=True,
            succeeded=False,
            reason="TooManyFailures",
            message="x",
            metrics=down,
            now=0.0,
        )
    }
    assert failed["Failed"] == ("True", "TooManyFailures") and failed["Stalled"][0] == "True"
    assert failed["MetricsAvailable"] == ("False", "PrometheusUnreachable")


def test_status_has_counters_and_best_never_every_trial() -> None:
    experiment = _experiment()
    starts = decide(experiment.spec, [], now=0.0).start
    records = [
        TrialRecord(
            name=f"exp-{s.index:04d}",
            index=s.index,
            params=s.params,
            key=s.key,
            state=TrialState.SUCCEEDED,
            fidelity=3,
            metrics={"val_accuracy": 0.5 + s.index},
        )
        for s in starts
    ]
    decisions = decide(experiment.spec, records, now=1.0)
    status = experiment_status(
        experiment,
        ExperimentStatus(),
        2,
        records,
        decisions,
        metrics=MetricsSnapshot(Availability.NOT_CONFIGURED),
        now=1.0,
    ).to_wire()
    assert status["observedGeneration"] == 2
    assert status["trials"]["succeeded"] == 2 and status["trials"]["done"] == 2
    assert status["bestTrial"]["name"] == "exp-0001"
    assert "exp-0000" not in str({k: v for k, v in status.items() if k != "bestTrial"})
