"""Operator-wide settings, from the command line (``kubenas operator --help``)."""

from __future__ import annotations

from dataclasses import dataclass, field

GROUP = "kubenas.io"
VERSION = "v1alpha1"
EXPERIMENTS = "nasexperiments"
TRIALS = "nastrials"

LABEL_EXPERIMENT = "kubenas.io/experiment"
LABEL_TRIAL = "kubenas.io/trial"
LABEL_FIDELITY = "kubenas.io/fidelity"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "kubenas"
FINALIZER = "kubenas.io/pushgateway-cleanup"


@dataclass(frozen=True)
class OperatorSettings:
    prometheus_url: str | None = None
    pushgateway_url: str | None = None
    namespaces: tuple[str, ...] = ()
    default_image: str = "kubenas-trainer:0.1.0"
    allow_privileged_pods: bool = False
    metrics_port: int = 8080
    run_as_user: int = 65532
    extra_env: dict[str, str] = field(default_factory=dict)
