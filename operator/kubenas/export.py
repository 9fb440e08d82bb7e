"""``kubenas export``: hand a run's final model to a serving stack as one ONNX or TorchScript file.

The final trial exported and checked the model when it trained (kubenas_trainer.export), so this
only finds the file. A run without a final stage can still export its best search checkpoint,
through the trainer's export command, which says it was not retrained.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from kubenas.api.builtin_trainer import EXPORT_FILES


class ExportFailed(Exception):
    """Nothing to export, said with what to do instead."""


def export_run(source: str, fmt: str, output: Path, namespace: str = "default") -> Path:
    """Write ``source``'s final model in ``fmt`` to ``output``; ``source`` is a local results
    folder or ``nasx/NAME`` on the cluster KUBECONFIG names."""
    if source.startswith(("nasx/", "nasexperiment/", "nasexperiments/")):
        folder = _cluster_export(source.split("/", 1)[1], namespace)
        return _copy(folder / EXPORT_FILES[fmt], output, source)
    run = Path(source)
    summary_path = run / "summary.json"
    if not summary_path.exists():
        raise ExportFailed(f"{run}: no summary.json; give the results folder of kubenas run")
    summary: dict[str, Any] = json.loads(summary_path.read_text(encoding="utf-8"))
    final = summary.get("final")
    if final is not None:
        if final.get("awaitingApproval"):
            raise ExportFailed(
                f"{run}: the final stage awaits approval; run kubenas approve {run} first"
            )
        if not final.get("model"):
            raise ExportFailed(f"{run}: no final trial exported a model; see {run}/summary.md")
        return _copy(Path(final["model"]) / EXPORT_FILES[fmt], output, source)
    checkpoint = run / "best-checkpoint.pt"
    if not checkpoint.exists():
        raise ExportFailed(f"{run}: no final stage and no best-checkpoint.pt to export")
    print(
        f"{run}: no final stage (spec.final); exporting the search's best checkpoint, "
        "as trained at its fidelity",
        file=sys.stderr,
    )
    command = [sys.executable, "-m", "kubenas_trainer.export", "--checkpoint", str(checkpoint)]
    command += ["--format", fmt, "--out-dir", str(run / "best-export"), "-o", str(output)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ExportFailed(done.stderr.strip() or f"exit code {done.returncode}")
    return output


def _copy(file: Path, output: Path, source: str) -> Path:
    if not file.exists():
        raise ExportFailed(f"{source}: {file} is missing")
    output.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(file, output)
    return output


def _cluster_export(name: str, namespace: str) -> Path:
    """The export folder the experiment's status names; it lies on the checkpoint volume."""
    from kubenas.k8s.client import load_kube_config
    from kubenas.k8s.views import NotFound, fetch

    load_kube_config()
    try:
        experiment, _ = fetch(namespace, name)
    except NotFound as exc:
        raise ExportFailed(str(exc)) from exc
    final = (experiment.get("status") or {}).get("final") or {}
    where = final.get("export")
    if not where:
        raise ExportFailed(f"nasx/{name}: no final model exported yet (status.final.export)")
    folder = Path(where)
    if not folder.is_dir():
        raise ExportFailed(
            f"nasx/{name}: the model is in {where} on the checkpoint volume, which this "
            "machine does not mount; copy it out with kubectl cp from a pod that mounts it"
        )
    return folder
