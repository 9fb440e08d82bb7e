"""``python -m kubenas_devcluster prereqs|up|kueue|down|agent`` (PYTHONPATH=hack)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from kubenas_devcluster import binaries, cluster, kueue, node, nodeagent

DEFAULT_STATE_DIR = Path(__file__).resolve().parent.parent.parent / ".cluster"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubenas_devcluster", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("prereqs", help="build/cache the binaries, apt-get Prometheus")
    up = commands.add_parser("up", help="start the cluster in the background")
    queues = commands.add_parser("kueue", help="install real Kueue into the running cluster")
    down = commands.add_parser("down", help="stop everything `up` started")
    for sub in (up, queues, down):
        sub.add_argument(
            "--state-dir",
            type=Path,
            default=DEFAULT_STATE_DIR,
            help="where PIDs, logs, kubeconfig and env live (default: %(default)s)",
        )
    up.add_argument("--gpus", type=int, default=2, help="nvidia.com/gpu capacity of each node")
    up.add_argument(
        "--node-agent",
        action="store_true",
        help="run pods as host processes with our node agent instead of a real kubelet",
    )
    up.add_argument("--nodes", type=int, default=1, help="how many nodes (the agent only)")
    up.add_argument(
        "--operator-metrics-port",
        type=int,
        default=None,
        help="port Prometheus scrapes for operator metrics (default: a free one)",
    )
    agent = commands.add_parser("agent", help="run the node agent (started by `up`)")
    agent.add_argument("--kubeconfig", type=Path, required=True)
    agent.add_argument("--work-dir", type=Path, required=True)
    agent.add_argument("--node", action="append", required=True, metavar="NAME=GPUS")
    agent.add_argument("--kubelet-cert", type=Path, required=True, help="log endpoint's cert")
    agent.add_argument("--kubelet-key", type=Path, required=True)
    agent.add_argument(
        "--client-ca", type=Path, required=True, help="CA that signs the log endpoint's clients"
    )
    args = parser.parse_args(argv)

    if args.command == "prereqs":
        binaries.ensure_prerequisites()
    elif args.command == "up":
        started = time.monotonic()
        try:
            running = cluster.Cluster.start(
                args.state_dir,
                gpus=args.gpus,
                nodes=args.nodes,
                operator_metrics_port=args.operator_metrics_port,
                node_kind="agent" if args.node_agent else "real",
            )
        except (cluster.BinariesMissing, node.NodeBusy) as error:
            print(error, file=sys.stderr)
            return 2
        print(
            f"dev cluster up in {time.monotonic() - started:.1f} s: API {running.server}, "
            f"{running.node_kind} node {', '.join(running.nodes)} ({args.gpus} fake GPUs), "
            f"Prometheus {running.prometheus_url}, Pushgateway {running.pushgateway_url}"
        )
        print(f"use it with:  source {running.state_dir / 'env'}")
    elif args.command == "kueue":
        try:
            seconds = kueue.install(cluster.Cluster.load(args.state_dir.resolve()))
        except FileNotFoundError:
            print(f"no dev cluster in {args.state_dir}: `make cluster-up` first", file=sys.stderr)
            return 2
        print(
            f"Kueue {binaries.KUEUE_VERSION} ready in {seconds:.1f} s (namespace {kueue.NAMESPACE})"
        )
    elif args.command == "down":
        cluster.stop(args.state_dir)
        print(f"dev cluster in {args.state_dir} stopped")
    else:
        nodeagent.serve(
            args.kubeconfig,
            args.node,
            args.work_dir,
            (args.kubelet_cert, args.kubelet_key, args.client_ca),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
