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
    parser.add_argument(
        "--metrics-port", type=int, default=8080, help="port of /metrics and /healthz"
    )
    parser.add_argument(
        "--trainer-image",
        default=OperatorSettings.default_image,
        help="image of trials whose experiment names none",
    )
    parser.add_argument(
        "--allow-privileged-pods",
        action="store_true",
        help="let pod templates use privileged containers, host namespaces, hostPath",
    )
    parser.add_argument("--verbose", action="store_true")


def run(args: argparse.Namespace) -> int:
    import kopf  # the operator's dependencies load only for this command

    from kubenas.k8s import handlers
    from kubenas.k8s.client import load_kube_config

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handlers.configure(
        OperatorSettings(
            prometheus_url=args.prometheus_url,
            pushgateway_url=args.pushgateway_url,
            namespaces=tuple(args.namespace),
            default_image=args.trainer_image,
            allow_privileged_pods=args.allow_privileged_pods,
            metrics_port=args.metrics_port,
        )
    )
    load_kube_config()
    namespaces: list[str] = list(args.namespace)
    asyncio.run(kopf.operator(standalone=True, namespaces=namespaces, clusterwide=not namespaces))
    return 0
