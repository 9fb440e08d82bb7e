"""``kubenas operator``: run the controller against the cluster KUBECONFIG (or the pod) names."""

from __future__ import annotations

import argparse
import asyncio
import logging

from kubenas.k8s.settings import OperatorSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prometheus-url", help="Prometheus HTTP API for trial metrics")
    parser.add_argument("--pushgateway-url", help="Pushgateway the trainers push to")
    parser.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="watch this namespace (repeatable); default: all namespaces",
    )
    parser.add_argument("--metrics-port", type=int, default=8080, help="port of /metrics")
    parser.add_argument(
        "--health-port",
        type=int,
        default=OperatorSettings.health_port,
        help="port of kopf's liveness endpoint /healthz (0: none)",
    )
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=OperatorSettings.request_timeout_seconds,
        help="seconds any Kubernetes API call may take",
    )
    parser.add_argument(
        "--trainer-image",
        default=OperatorSettings.default_image,
        help="image of trials whose experiment names none",
    )
    parser.add_argument(
        "--lease-url",
        help="how worker pods reach this operator's metrics port, where trial reuse "
        "(spec.trial.reuse) hands out trials, e.g. http://kubenas-metrics.kubenas.svc:8080",
    )
    parser.add_argument(
        "--allow-privileged-pods",
        action="store_true",
        help="let pod templates use privileged containers, host namespaces, hostPath",
    )
    parser.add_argument("--verbose", action="store_true")


def settings_from(args: argparse.Namespace) -> OperatorSettings:
    return OperatorSettings(
        prometheus_url=args.prometheus_url,
        pushgateway_url=args.pushgateway_url,
        namespaces=tuple(args.namespace),
        default_image=args.trainer_image,
        allow_privileged_pods=args.allow_privileged_pods,
        lease_url=args.lease_url,
        metrics_port=args.metrics_port,
        health_port=args.health_port,
        request_timeout_seconds=args.request_timeout,
    )


def run(args: argparse.Namespace) -> int:
    import kopf  # the operator's dependencies load only for this command

    from kubenas.k8s import handlers  # noqa: F401  (registers the handlers with kopf)
    from kubenas.k8s.client import load_kube_config

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # kopf logs every handled watch event at INFO ("Handler 'job_event' succeeded."): ten
        # lines per trial, and a measurable share of the operator's CPU. Its warnings stay.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    settings = settings_from(args)
    load_kube_config()
    namespaces = list(settings.namespaces)
    liveness = f"http://0.0.0.0:{settings.health_port}/healthz" if settings.health_port else None
    asyncio.run(
        kopf.operator(
            standalone=True,
            namespaces=namespaces,
            clusterwide=not namespaces,
            liveness_endpoint=liveness,
            memo=kopf.Memo(settings=settings),
        )
    )
    return 0
