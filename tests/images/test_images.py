"""The images as a user gets them: built by ``make images`` (buildah, from a Debian-made base)
and run with podman and runc, each as its numeric non-root user. The operator image has no
torch and validates every example with a read-only root and no network; the trainer image
trains one real digits trial from the environment the operator would give it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

import kubenas_images
from kubenas.api import parse_experiment
from kubenas.api.records import TrialRecord, TrialRole
from kubenas.contract import record_architecture, trial_environment
from kubenas.final import baseline_key

pytestmark = pytest.mark.images

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
USER = "65532"


@pytest.fixture(scope="session")
def images() -> dict[str, str]:
    """Both images, built unless their content is cached (then in well under 10 s)."""
    operator, trainer = kubenas_images.build_all()
    return {"operator": operator, "trainer": trainer}


def podman_run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", "run", "--rm", *args],
        env=kubenas_images.storage().env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize("target", kubenas_images.TARGETS)
def test_each_image_runs_as_its_numeric_non_root_user(images: dict[str, str], target: str) -> None:
    for flag in ("-u", "-g"):
        ran = podman_run("--network", "none", "--entrypoint", "id", images[target], flag)
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.strip() == USER, (flag, ran.stdout)


@pytest.mark.parametrize("target", kubenas_images.TARGETS)
def test_each_images_user_has_a_name(images: dict[str, str], target: str) -> None:
    """containerd, unlike podman, adds no passwd entry for a numeric USER; kopf asks for the
    user's name (getpass) and crashed without one on a real kubelet."""
    probe = "import getpass; print(getpass.getuser())"
    ran = podman_run("--network", "none", "--entrypoint", "python", images[target], "-c", probe)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "kubenas"


def test_the_trainer_can_write_the_default_checkpoint_dir(images: dict[str, str]) -> None:
    """trial.checkpointDir defaults to /kubenas/checkpoints: a trial without a volume there
    must still run (it crashed with PermissionError on a real kubelet)."""
    probe = "touch /kubenas/checkpoints/probe && echo ok"
    ran = podman_run("--network", "none", "--entrypoint", "sh", images["trainer"], "-c", probe)
    assert ran.stdout.strip() == "ok", ran.stderr


def test_the_operator_image_has_no_torch(images: dict[str, str]) -> None:
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is not None)"
    ran = podman_run("--network", "none", "--entrypoint", "python", images["operator"], "-c", probe)
    assert ran.returncode == 0, "torch is installed in the operator image"


def _validate(image: str, mounted: Path, name: str) -> subprocess.CompletedProcess[str]:
    return podman_run(
        "--read-only",
        "--network",
        "none",
        "-v",
        f"{mounted}:/work:ro",
        image,
        "validate",
        f"/work/{name}",
    )


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_example_validates_inside_the_operator_image_read_only_and_offline(
    images: dict[str, str], example: Path
) -> None:
    ran = _validate(images["operator"], example.parent, example.name)
    assert ran.returncode == 0, ran.stdout + ran.stderr


def test_an_invalid_experiment_is_refused_inside_the_image_naming_the_field(
    images: dict[str, str], tmp_path: Path
) -> None:
    doc = (EXAMPLES[0]).read_text().replace("parallelTrials:", "parallelTrials: 999 #")
    (tmp_path / "bad.yaml").write_text(doc)
    tmp_path.chmod(0o755)  # the image's user is not the test's
    (tmp_path / "bad.yaml").chmod(0o644)
    ran = _validate(images["operator"], tmp_path, "bad.yaml")
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert "spec.budget.parallelTrials" in ran.stdout + ran.stderr


def test_the_trainer_image_trains_one_digits_trial(images: dict[str, str]) -> None:
    """The demo's hand-designed baseline, with the environment its trial Job gets, in a
    container with a read-only root, no network and the restricted pod's user. (Not the first
    candidate: some random cells diverge in their first epoch at the demo's learning rate.)"""
    experiment = parse_experiment(
        yaml.safe_load((REPO / "examples" / "digits-cell.yaml").read_text())
    )
    (baseline,) = experiment.spec.baselines
    record = TrialRecord(
        name="digits-cell-0000",
        index=0,
        params={},
        key=baseline_key(baseline.name, 0),
        fidelity=1,
        role=TrialRole.BASELINE,
        baseline=baseline.name,
    )
    env = trial_environment(experiment, record, record_architecture(experiment, record))
    env["KUBENAS_REPORT"] = "stdout"
    args = [f"--env={name}={value}" for name, value in sorted(env.items())]
    ran = podman_run("--read-only", "--network", "none", *args, images["trainer"])
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    events = [json.loads(line) for line in ran.stdout.splitlines() if line.startswith("{")]
    final = next(e for e in events if e.get("event") == "final")
    print(f"trainer image, one digits epoch: {final['metrics']}")
    assert final["metrics"]["epochs"] == 1
    assert final["metrics"]["val_accuracy"] > 0.2, "one epoch learns more than chance (0.1)"
