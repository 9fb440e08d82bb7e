"""Operator-wide settings, from the command line (``kubenas operator --help``)."""

from __future__ import annotations

from dataclasses import dataclass, field

GROUP = "kubenas.io"
VERSION = "v1alpha1"
EXPERIMENTS = "nasexperiments"
TRIALS = "nastrials"

LABEL_EXPERIMENT = "kubenas.io/experiment"
LABEL_ROLE = "kubenas.io/role"  # on each NASTrial: kubectl get nast -l kubenas.io/role=final
# A person releases a final stage with approval: manual: "proposed", or a comma list of the
# candidate trials to retrain instead (docs/final.md).
ANNOTATION_APPROVE = "kubenas.io/approve-final"
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
    # kopf's liveness endpoint (``/healthz``), answered by the ``@kopf.on.probe`` handlers.
    health_port: int = 8081
    # Every Kubernetes API call times out; a whole pass too (an API server that hangs must not
    # hang the experiment's loop: the pass fails and is retried with back-off).
    connect_timeout_seconds: float = 5.0
    request_timeout_seconds: float = 20.0
    pass_timeout_seconds: float = 120.0
    # Pushgateway groups whose experiment or trial is gone are looked for this often.
    pushgateway_gc_seconds: float = 30.0
    run_as_user: int = 65532
    extra_env: dict[str, str] = field(default_factory=dict)
    # How worker pods reach this operator's lease endpoint (trial reuse); None: not served.
    lease_url: str | None = None
