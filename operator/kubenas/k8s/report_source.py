"""What ``kubenas report nasx/NAME`` draws: an experiment on the cluster, read back into the same
experiment, records and summary a local run leaves, so both reports are one renderer's."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from kubenas.api.experiment import NASExperiment
from kubenas.api.records import TrialRecord
from kubenas.engine import decide
from kubenas.final import parse_approval
from kubenas.k8s.client import Api, load_kube_config
from kubenas.k8s.reconcile import read_record
from kubenas.k8s.settings import ANNOTATION_APPROVE
from kubenas.k8s.views import fetch
from kubenas.runtime.outputs import write_outputs


def summary_from_cluster(
    namespace: str, name: str
) -> tuple[NASExperiment, list[TrialRecord], dict[str, Any]]:
    """The experiment, its trials' records and the summary a local run of them would write;
    raises :class:`kubenas.k8s.views.NotFound` when the experiment is not there."""
    load_kube_config()
    body, trials = fetch(namespace, name)
    document = {k: body[k] for k in ("apiVersion", "kind", "spec")}
    document["metadata"] = {"name": name, "namespace": namespace}
    experiment = NASExperiment.model_validate(document)
    api = Api()
    try:
        records = [read_record(trial, api) for trial in trials]
    finally:
        api.close()
    annotations = body["metadata"].get("annotations") or {}
    approval = parse_approval(annotations.get(ANNOTATION_APPROVE))
    decisions = decide(experiment.spec, records, now=time.time(), approval=approval)
    with tempfile.TemporaryDirectory() as scratch:  # the tables and plots are not wanted here
        summary = write_outputs(Path(scratch), experiment, records, decisions)
    final = (body.get("status") or {}).get("final") or {}
    if "final" in summary:
        summary["final"]["model"] = final.get("export")
    return experiment, records, summary
