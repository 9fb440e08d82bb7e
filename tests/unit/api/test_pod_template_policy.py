"""``kubenas validate`` refuses the pod templates the operator would refuse, naming the field,
before anything is applied; ``--allow-privileged-pods`` matches the operator's flag."""

from pathlib import Path

import pytest

from kubenas.cli import main

HEADER = (
    "apiVersion: kubenas.io/v1alpha1\nkind: NASExperiment\nmetadata: {name: x}\n"
    "spec:\n  searchSpace: {family: nb201-cell}\n  budget: {maxTrials: 2}\n"
    "  trial:\n    dataset: digits\n    podTemplate:\n      spec:\n"
)
TEMPLATES = {
    "root": (
        "        securityContext: {runAsUser: 0}\n",
        "spec.trial.podTemplate.spec.securityContext.runAsUser: running as root",
    ),
    "privileged": (
        "        containers: [{name: trainer, securityContext: {privileged: true}}]\n",
        "spec.trial.podTemplate.spec.containers[0].securityContext: privileged containers",
    ),
    "hostPath": (
        "        volumes: [{name: data, hostPath: {path: /srv}}]\n",
        "spec.trial.podTemplate.spec.volumes[0].hostPath: not allowed",
    ),
    "capability": (
        "        containers:\n"
        "          - {name: trainer, securityContext: {capabilities: {add: [SYS_ADMIN]}}}\n",
        "spec.trial.podTemplate.spec.containers[0].securityContext.capabilities.add: SYS_ADMIN",
    ),
}


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_validate_refuses_what_the_operator_refuses(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    template, message = TEMPLATES[name]
    path = tmp_path / f"{name}.yaml"
    path.write_text(HEADER + template)
    assert main(["validate", str(path)]) == 2
    assert message in capsys.readouterr().err
    assert main(["validate", "--allow-privileged-pods", str(path)]) == 0


def test_a_restricted_template_with_a_volume_claim_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "pvc.yaml"
    path.write_text(
        HEADER + "        volumes: [{name: c, persistentVolumeClaim: {claimName: nas}}]\n"
        "        containers: [{name: trainer, volumeMounts: [{name: c, mountPath: /c}]}]\n"
    )
    assert main(["validate", str(path)]) == 0
