"""The API server itself refuses a bad NASExperiment, as ``kubectl`` users meet it.

The CRDs' schemas and CEL rules are the cluster's copy of the pydantic models' checks. These
tests apply them to a real API server with the built kubectl and check what a user sees: each
invalid manifest in ``invalid-manifests/`` is refused with its field named, every example is
accepted with the defaults the models would fill in, and what defines a search cannot change
while it runs.
"""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubenas.api.experiment import NASExperiment
from kubenas_devcluster import Cluster

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
INVALID = sorted((Path(__file__).parent / "invalid-manifests").glob("*.yaml"))
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
IMMUTABLE = "cannot change while the experiment runs"
# Fields some variants of a union have: the CRD cannot default them (a default would fill every
# variant), so the operator's pydantic model fills them in instead.
UNIONS = ("searchSpace", "strategy")

MINIMAL: dict[str, Any] = {
    "apiVersion": "kubenas.io/v1alpha1",
    "kind": "NASExperiment",
    "metadata": {"name": "minimal"},
    "spec": {
        "searchSpace": {"family": "nb201-cell"},
        "budget": {"maxTrials": 8},
        "fidelity": {"max": 4},
        "trial": {"dataset": "digits"},
    },
}


class Kubectl:
    """The built kubectl against the dev cluster, in one namespace."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.base = [
            str(cluster.bin_dir / "kubectl"),
            f"--kubeconfig={cluster.kubeconfig}",
            f"--namespace={namespace}",
        ]

    def run(
        self, *args: str, manifest: dict[str, Any] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*self.base, *args],
            capture_output=True,
            text=True,
            timeout=60,
            input=None if manifest is None else yaml.safe_dump(manifest),
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr}")
        return done

    def apply(
        self, manifest: dict[str, Any], *flags: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.run(
            "apply",
            "--server-side",
            "--field-manager=e2e",
            *flags,
            "-f",
            "-",
            manifest=manifest,
            check=check,
        )

    def server_defaulted(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """The object as the API server would store it, without storing it."""
        done = self.apply(manifest, "--dry-run=server", "-o", "json")
        stored: dict[str, Any] = json.loads(done.stdout)
        return stored


@pytest.fixture(scope="module")
def crds_installed(cluster: Cluster) -> None:
    """The CRDs, applied the way a user installs them and ready to serve."""
    kubectl = [str(cluster.bin_dir / "kubectl"), f"--kubeconfig={cluster.kubeconfig}"]
    applied = subprocess.run(
        [*kubectl, "apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert applied.returncode == 0, applied.stderr
    ready = subprocess.run(
        [
            *kubectl,
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/nasexperiments.kubenas.io",
            "crd/nastrials.kubenas.io",
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert ready.returncode == 0, ready.stderr


@pytest.fixture
def kubectl(cluster: Cluster, crds_installed: None, namespace: str) -> Iterator[Kubectl]:
    yield Kubectl(cluster, namespace)


def expected_field(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: <field>'"
    return first.removeprefix("# expect: ").strip()


def test_there_are_enough_invalid_manifests() -> None:
    assert len({expected_field(p) for p in INVALID}) >= 12


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_experiment_is_refused_naming_the_field(kubectl: Kubectl, path: Path) -> None:
    manifest = yaml.safe_load(path.read_text())
    done = kubectl.apply(manifest, check=False)
    assert done.returncode != 0, f"{path.name} was accepted"
    assert expected_field(path) in done.stderr, done.stderr


def model_defaults(manifest: dict[str, Any], server_spec: dict[str, Any]) -> dict[str, Any]:
    """The spec the pydantic model fills in, less the union fields the CRD leaves to it.

    Those are left out only where the user did not write them and the server does not have
    them, so a union field the server drops or invents still fails the comparison.
    """
    spec = NASExperiment.model_validate(manifest).to_wire()["spec"]
    for union in UNIONS:
        written = manifest["spec"].get(union, {})
        kept = server_spec.get(union, {})
        spec[union] = {k: v for k, v in spec[union].items() if k in written or k in kept}
    return spec  # type: ignore[no-any-return]


def test_minimal_experiment_gets_the_models_defaults(kubectl: Kubectl) -> None:
    server = kubectl.server_defaulted(MINIMAL)["spec"]
    assert server == model_defaults(MINIMAL, server)
    assert server["searchSpace"] == {"family": "nb201-cell"}
    assert server["strategy"] == {"name": "random"}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_is_accepted_with_the_models_defaults(kubectl: Kubectl, path: Path) -> None:
    manifest = yaml.safe_load(path.read_text())
    server = kubectl.server_defaulted(manifest)["spec"]
    assert server == model_defaults(manifest, server)


def test_strategy_is_immutable_but_the_budget_may_grow(kubectl: Kubectl) -> None:
    kubectl.apply(MINIMAL)

    changed = copy.deepcopy(MINIMAL)
    changed["spec"]["strategy"] = {"name": "evolution"}
    refused = kubectl.apply(changed, check=False)
    assert refused.returncode != 0
    assert "spec.strategy" in refused.stderr and IMMUTABLE in refused.stderr, refused.stderr

    grown = copy.deepcopy(MINIMAL)
    grown["spec"]["budget"]["maxTrials"] = 16
    kubectl.apply(grown)
    stored = json.loads(kubectl.run("get", "nasx", "minimal", "-o", "json").stdout)
    assert stored["spec"]["budget"]["maxTrials"] == 16
    assert stored["spec"]["strategy"] == {"name": "random"}


def test_fidelity_cannot_be_removed_while_running(kubectl: Kubectl) -> None:
    kubectl.apply(MINIMAL)
    without = copy.deepcopy(MINIMAL)
    del without["spec"]["fidelity"]
    refused = kubectl.run("replace", "-f", "-", manifest=without, check=False)
    assert refused.returncode != 0
    assert "spec.fidelity" in refused.stderr, refused.stderr


def test_kubectl_get_shows_the_printer_columns(kubectl: Kubectl) -> None:
    kubectl.apply(MINIMAL)
    header = kubectl.run("get", "kubenas").stdout.splitlines()[0].split()
    assert header == ["NAME", "STATE", "DONE", "TOTAL", "BEST", "FRONT", "AGE"]
