"""The ``kubenas`` command line: run an experiment locally, validate one, benchmark the search."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from kubenas.api import ExperimentError, load_experiment
from kubenas.api.pod_policy import PodTemplateError, check_pod_template

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_AWAITING_APPROVAL = 0, 1, 2, 3


def _exit_code(summary: dict[str, Any]) -> int:
    """0 for a search that succeeded, 3 for one paused until its final stage is approved."""
    if (summary.get("final") or {}).get("awaitingApproval"):
        return EXIT_AWAITING_APPROVAL
    return EXIT_OK if summary.get("succeeded") else EXIT_FAILED


def _run(args: argparse.Namespace) -> int:
    from kubenas.runtime.local import LocalRunner

    experiment = load_experiment(args.experiment)
    out = Path(args.out) if args.out else Path("runs") / experiment.name
    runner = LocalRunner(
        experiment, out, quiet=args.quiet, cpu_slots=args.cpu_slots, reuse=not args.no_reuse
    )
    return _exit_code(runner.run())


def _approve(args: argparse.Namespace) -> int:
    """Release a local run's final stage, then carry the run on from its folder."""
    from kubenas.runtime.local import LocalRunner, write_approval

    trials = tuple(t.strip() for t in (args.trials or "").split(",") if t.strip())
    out = Path(args.target)
    saved = out / "experiment.yaml"
    if not saved.exists():
        name = args.target.removeprefix("nasx/")
        if "/" in name or out.is_dir():
            print(f"{out}: not a kubenas run folder (no experiment.yaml)", file=sys.stderr)
            return EXIT_FAILED
        return _approve_on_cluster(name, args.namespace, trials)
    experiment = load_experiment(str(saved))
    if experiment.spec.final is None:
        print(f"{out}: the experiment has no final stage (spec.final)", file=sys.stderr)
        return EXIT_FAILED
    write_approval(out, trials)
    runner = LocalRunner(
        experiment, out, quiet=args.quiet, cpu_slots=args.cpu_slots, reuse=not args.no_reuse
    )
    return _exit_code(runner.run())


def _approve_on_cluster(name: str, namespace: str, trials: tuple[str, ...]) -> int:
    from kubenas.k8s.client import load_kube_config
    from kubenas.k8s.views import NotFound, approve

    load_kube_config()
    try:
        approve(namespace, name, trials)
    except NotFound as exc:
        print(exc, file=sys.stderr)
        return EXIT_FAILED
    print(f"nasx/{name}: final stage approved ({', '.join(trials) or 'the proposed finalists'})")
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    from kubenas.export import ExportFailed, export_run

    try:
        written = export_run(args.source, args.format, Path(args.output), args.namespace)
    except ExportFailed as exc:
        print(f"kubenas export: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"wrote {written}")
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    from kubenas.report import ReportError, render_report, summary_from_run

    source: str = args.source
    try:
        if source.startswith("nasx/"):
            from kubenas.k8s.report_source import summary_from_cluster
            from kubenas.k8s.views import NotFound

            try:
                found = summary_from_cluster(args.namespace, source.removeprefix("nasx/"))
            except NotFound as exc:
                raise ReportError(str(exc)) from exc
            default = Path(f"{source.removeprefix('nasx/')}-report.html")
        else:
            found = summary_from_run(Path(source))
            default = Path(source) / "report.html"
    except ReportError as exc:
        print(f"kubenas report: {exc}", file=sys.stderr)
        return EXIT_FAILED
    experiment, records, summary = found
    output = Path(args.output) if args.output else default
    output.write_text(render_report(experiment, records, summary), encoding="utf-8")
    print(f"wrote {output}")
    return EXIT_OK


def _operator(args: argparse.Namespace) -> int:
    from kubenas.k8s.main import run

    return run(args)


def _fetch(args: argparse.Namespace) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """The experiment and its trials, from the cluster KUBECONFIG names; None when absent."""
    from kubenas.k8s.client import load_kube_config
    from kubenas.k8s.views import NotFound, fetch

    load_kube_config()
    try:
        return fetch(args.namespace, args.name)
    except NotFound as exc:
        print(exc, file=sys.stderr)
        return None


def _get(args: argparse.Namespace) -> int:
    from kubenas.k8s.views import render

    fetched = _fetch(args)
    if fetched is None:
        return EXIT_FAILED
    print(render(*fetched))
    return EXIT_OK


def _best(args: argparse.Namespace) -> int:
    from kubenas.k8s.views import best_architecture

    fetched = _fetch(args)
    if fetched is None:
        return EXIT_FAILED
    best = best_architecture(fetched[0])
    if best is None:
        print(f"{args.name}: no trial has finished yet", file=sys.stderr)
        return EXIT_FAILED
    if args.output == "json":
        print(json.dumps(best, indent=2, sort_keys=True))
    else:
        print(f"{best['name']}: {json.dumps(best['architecture'], sort_keys=True)}")
    return EXIT_OK


def _validate(args: argparse.Namespace) -> int:
    experiment = load_experiment(args.experiment)
    template = experiment.spec.trial.pod_template or {}
    try:
        # What the operator would refuse before creating any Job, refused here first.
        check_pod_template(template.get("spec") or {}, args.allow_privileged_pods)
    except PodTemplateError as exc:
        raise ExperimentError(args.experiment, [str(exc)]) from None
    print(f"{args.experiment}: valid NASExperiment {experiment.name!r}")
    return EXIT_OK


def _query_budgets(text: str) -> list[int]:
    try:
        budgets = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma list of integers: {text!r}") from None
    if any(b < 1 for b in budgets):
        raise argparse.ArgumentTypeError(f"budgets must be >= 1: {text!r}")
    return budgets


# The strategies the hardware-aware benchmark compares by default (random is the baseline).
MO_STRATEGIES = ["random", "nsga2", "evolution", "local-search", "tpe"]


def _bench_nb201(args: argparse.Namespace) -> int:
    from kubenas.api.vocabulary import PROXIES
    from kubenas.bench.nb201 import (
        DEFAULT_SETTINGS,
        load_proxy_table,
        run_benchmark,
        table_proxies,
    )

    table = Path(args.dataset_file) if args.dataset_file else Path(args.data) / "cifar10.csv"
    strategies = args.strategies.split(",") if args.strategies else list(DEFAULT_SETTINGS)
    unknown = [s for s in strategies if s not in DEFAULT_SETTINGS]
    if unknown:
        print(f"--strategies: unknown {unknown}; known: {list(DEFAULT_SETTINGS)}", file=sys.stderr)
        return EXIT_INVALID
    started = time.perf_counter()
    proxies = args.proxies.split(",") if args.proxies else []
    unknown = [p for p in proxies if p not in PROXIES]
    if unknown or (proxies and not args.proxy_table):
        print(
            f"--proxies names proxies of --proxy-table; known proxies: {', '.join(PROXIES)}",
            file=sys.stderr,
        )
        return EXIT_INVALID
    proxy_table = Path(args.proxy_table) if args.proxy_table else None
    if proxy_table is not None:
        try:
            held = table_proxies(load_proxy_table(proxy_table))
        except (OSError, ValueError) as exc:
            print(f"--proxy-table: {exc}", file=sys.stderr)
            return EXIT_INVALID
        missing = [p for p in proxies if p not in held]
        if missing or not held:
            print(
                f"--proxies: the table has no scores of {', '.join(missing) or 'any proxy'}; "
                f"it has {', '.join(held) or 'none'}",
                file=sys.stderr,
            )
            return EXIT_INVALID
        proxies = proxies or held
    results = run_benchmark(
        table, strategies, args.queries, args.seeds, args.workers, proxy_table, proxies
    )
    budgets = ",".join(str(q) for q in sorted(set(args.queries)))
    screened = f", whole space screened by {'+'.join(proxies)} (free)" if proxies else ""
    print(
        f"NAS-Bench-201 {table}: {budgets} queries, {args.seeds} seeds{screened}, "
        f"score = test_acc_200ep of the best val_acc_12ep found"
    )
    print(f"{'strategy':<14}{'mean':>8}{'std':>8}{'seeds':>7}{'queries':>9}{'cpu s':>9}")
    for r in results:
        print(
            f"{r.strategy:<14}{r.mean:>8.2f}{r.std:>8.2f}{r.seeds:>7}{r.queries:>9}{r.cpu_seconds:>9.1f}"
        )
    print(f"wall time {time.perf_counter() - started:.1f} s")
    if args.json:
        rows = [
            {
                "strategy": r.strategy,
                "mean": round(r.mean, 4),
                "std": round(r.std, 4),
                "seeds": r.seeds,
                "queries": r.queries,
                "cpu_seconds": round(r.cpu_seconds, 2),
            }
            for r in results
        ]
        print(json.dumps({"results": rows}))
    return EXIT_OK


def _bench_nb201_mo(args: argparse.Namespace) -> int:
    from kubenas.bench.nb201 import DEFAULT_SETTINGS, load_proxy_table
    from kubenas.bench.nb201_mo import (
        CONSTRAINED,
        MULTI_OBJECTIVE,
        RANDOM_THEN_FILTER,
        beats,
        cost_table,
        run_benchmark,
    )

    table = Path(args.dataset_file) if args.dataset_file else Path(args.data) / "cifar10.csv"
    try:
        costs = cost_table(load_proxy_table(Path(args.costs)), args.cost_metric)
    except (OSError, ValueError) as exc:
        print(f"--costs: {exc}", file=sys.stderr)
        return EXIT_INVALID
    chosen = args.strategies.split(",") if args.strategies else MO_STRATEGIES
    others = [s for s in chosen if s not in ("random", RANDOM_THEN_FILTER)]
    tasks = {  # each task's baseline always runs, first
        MULTI_OBJECTIVE: ["random", *others],
        CONSTRAINED: [RANDOM_THEN_FILTER, *others],
    }
    known = [*DEFAULT_SETTINGS, RANDOM_THEN_FILTER]
    unknown = sorted({s for names in tasks.values() for s in names if s not in known})
    if unknown:
        print(f"--strategies: unknown {unknown}; known: {list(DEFAULT_SETTINGS)}", file=sys.stderr)
        return EXIT_INVALID
    started = time.perf_counter()
    budgets = ",".join(str(q) for q in sorted(set(args.queries)))
    rows: list[dict[str, Any]] = []
    for task in args.tasks.split(","):
        if task not in tasks:
            print(f"--tasks: want {MULTI_OBJECTIVE} and/or {CONSTRAINED}", file=sys.stderr)
            return EXIT_INVALID
        results = run_benchmark(
            task,
            table,
            Path(args.costs),
            args.cost_metric,
            tasks[task],
            args.queries,
            args.seeds,
            args.workers,
        )
        if task == MULTI_OBJECTIVE:
            print(
                f"{task}: max val_acc_12ep, min {args.cost_metric}; {budgets} queries, "
                f"{args.seeds} seeds; score = hypervolume of the queried cells in "
                f"(test_acc_200ep/100, {args.cost_metric}/{costs.largest:.4g}) from reference "
                f"(0, {costs.largest:.4g})"
            )
            baseline = "random"
        else:
            print(
                f"{task}: max val_acc_12ep with {args.cost_metric} <= {costs.median:.4g} (the "
                f"space's median); {budgets} queries, {args.seeds} seeds; score = test_acc_200ep "
                f"of the best feasible cell found"
            )
            baseline = RANDOM_THEN_FILTER
        base = {r.queries: r for r in results if r.strategy == baseline}
        print(
            f"{'strategy':<20}{'queries':>8}{'mean':>10}{'std':>9}{'stderr':>9}"
            f"{'none':>6}{'cpu s':>8}  vs {baseline}"
        )
        for r in results:
            versus = ""
            if r.strategy != baseline:
                versus = "beats (>2 se)" if beats(r, base[r.queries]) else "not by 2 se"
            print(
                f"{r.strategy:<20}{r.queries:>8}{r.mean:>10.4f}{r.std:>9.4f}{r.stderr:>9.4f}"
                f"{r.missing:>6}{r.cpu_seconds:>8.1f}  {versus}"
            )
            rows.append({**r.__dict__, "beats_baseline": bool(versus.startswith("beats"))})
    print(f"wall time {time.perf_counter() - started:.1f} s")
    if args.json:
        print(json.dumps({"results": rows}))
    return EXIT_OK


def _bench_startup(args: argparse.Namespace) -> int:
    import tempfile

    from kubenas.bench.startup import compare_searches, measure

    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="kubenas-startup-") as work:
        rows = measure(Path(work), args.dataset, args.trials, args.threads)
        print(f"a trial's fixed cost, launch to first training step ({args.dataset}, CPU)")
        for row in rows:
            print(f"{row.mode:<16}median {row.median_s:7.3f} s   max {row.max_s:7.3f} s")
        fresh, warm = rows
        print(f"ratio warm / fresh: {warm.median_s / fresh.median_s:.3f} ({fresh.trials} each)")
        results["startup"] = [r.__dict__ for r in rows]
        if args.search:
            runs = compare_searches(Path(args.search), Path(work), args.cpu_slots)
            print(f"the whole search: kubenas run {args.search}")
            for run in runs:
                print(f"{run.mode:<16}{run.seconds:8.1f} s   best {run.best} {run.metrics}")
            cold, hot = runs
            same = (cold.best, cold.metrics) == (hot.best, hot.metrics)
            print(
                f"ratio warm / fresh: {hot.seconds / cold.seconds:.3f}; "
                f"best result {'the same' if same else 'DIFFERENT'}"
            )
            results["search"] = [r.__dict__ for r in runs]
    if args.json:
        print(json.dumps(results))
    return EXIT_OK


def _bench_suggest(args: argparse.Namespace) -> int:
    from kubenas.bench.nb201 import DEFAULT_SETTINGS
    from kubenas.bench.suggest import measure

    strategies = args.strategies.split(",") if args.strategies else list(DEFAULT_SETTINGS)
    print(f"decide() latency with {args.records} finished trials (NB201 space)")
    rows = []
    for strategy in strategies:
        lat = measure(strategy, args.records)
        rows.append(lat)
        print(f"{strategy:<14} median {lat.median_ms:9.1f} ms   max {lat.max_ms:9.1f} ms")
    if args.json:
        print(json.dumps({"results": [r.__dict__ for r in rows]}))
    return EXIT_OK


def _bench_oneshot(args: argparse.Namespace) -> int:
    import tempfile

    from kubenas.bench.oneshot import compare, format_report, ranking_check

    experiment = Path(args.experiment)
    loaded = load_experiment(experiment)  # refuse an invalid experiment before any training
    if loaded.spec.oneshot_method() is None:
        print(f"{experiment}: spec.strategy.name: want oneshot to benchmark", file=sys.stderr)
        return EXIT_INVALID
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    with tempfile.TemporaryDirectory(prefix="kubenas-oneshot-") as work:
        out = Path(args.out) if args.out else Path(work)
        ranking = (
            ranking_check(experiment, args.architectures, args.data_dir, args.seed_ceiling)
            if args.architectures
            else None
        )
        comparison = compare(experiment, out, strategies, args.max_trials)
    print(format_report(ranking, comparison))
    if args.json:
        print(json.dumps({"ranking": ranking, "comparison": comparison}))
    return 0


def _bench_operator(args: argparse.Namespace) -> int:
    from kubenas.bench.operator import format_table, measure

    scales = [int(n) for n in args.experiments.split(",")]
    before = Path(args.before) if args.before else None
    keep = Path(args.keep) if args.keep else None
    rows = measure(scales, args.trials, args.parallel, before, args.timeout, keep)
    print(format_table(rows))
    if args.json:
        print(json.dumps({"results": rows}))
    return EXIT_OK


def _bench_reuse(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from kubenas.bench.reuse import format_table, measure

    runs = measure(Path(args.experiment), args.trials, args.parallel, args.per_pod, args.timeout)
    print(format_table(runs))
    if args.json:
        print(json.dumps({"results": [asdict(r) for r in runs]}))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubenas", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run an experiment on this machine")
    run.add_argument("experiment")
    run.add_argument("--out", help="results folder (default runs/<name>); reused to resume")
    run.add_argument("--quiet", action="store_true", help="log lines instead of a live display")
    run.add_argument(
        "--cpu-slots",
        type=int,
        default=os.cpu_count() or 1,
        help="CPU cores shared by parallel trials when there is no GPU",
    )
    run.add_argument(
        "--no-reuse",
        action="store_true",
        help="a fresh process per trial, instead of the built-in trainer's warm workers",
    )
    run.set_defaults(func=_run)

    approve = sub.add_parser(
        "approve",
        help="release a final stage (approval: manual): a local run continues; on the cluster, "
        "the experiment is annotated",
    )
    approve.add_argument(
        "target", help="a local run's results folder, or NAME / nasx/NAME on the cluster"
    )
    approve.add_argument("-n", "--namespace", default="default")
    approve.add_argument(
        "--trials", help="comma list of candidate trials to retrain instead of the proposed ones"
    )
    approve.add_argument("--quiet", action="store_true", help="log lines instead of a display")
    approve.add_argument("--cpu-slots", type=int, default=os.cpu_count() or 1)
    approve.add_argument("--no-reuse", action="store_true", help="a fresh process per trial")
    approve.set_defaults(func=_approve)

    export = sub.add_parser(
        "export", help="the final model of a run (RUN_DIR) or of an experiment (nasx/NAME)"
    )
    export.add_argument("source", help="a local results folder, or nasx/NAME on the cluster")
    export.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    export.add_argument("-o", "--output", required=True, help="the file to write")
    export.add_argument("-n", "--namespace", default="default")
    export.set_defaults(func=_export)

    report = sub.add_parser(
        "report", help="one self-contained HTML report of a run (RUN_DIR) or of nasx/NAME"
    )
    report.add_argument("source", help="the folder kubenas run wrote, or nasx/NAME on the cluster")
    report.add_argument(
        "-o", "--output", help="the file to write (default RUN_DIR/report.html, NAME-report.html)"
    )
    report.add_argument("-n", "--namespace", default="default")
    report.set_defaults(func=_report)

    operator = sub.add_parser("operator", help="run the Kubernetes operator")
    from kubenas.k8s.main import add_arguments

    add_arguments(operator)
    operator.set_defaults(func=_operator)

    get = sub.add_parser("get", help="an experiment on the cluster and its trials")
    get.add_argument("name")
    get.add_argument("-n", "--namespace", default="default")
    get.set_defaults(func=_get)

    best = sub.add_parser("best", help="the best architecture of an experiment on the cluster")
    best.add_argument("name")
    best.add_argument("-n", "--namespace", default="default")
    best.add_argument("-o", "--output", choices=("json", "text"), default="text")
    best.set_defaults(func=_best)

    validate = sub.add_parser("validate", help="check an experiment file")
    validate.add_argument("experiment")
    validate.add_argument(
        "--allow-privileged-pods",
        action="store_true",
        help="accept pod templates that an operator started with the same flag accepts",
    )
    validate.set_defaults(func=_validate)

    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench", required=True)
    nb201 = bench.add_parser("nb201", help="strategies on a NAS-Bench-201 table")
    nb201.add_argument("--data", default=".", help="folder with cifar10.csv")
    nb201.add_argument("--dataset-file", help="a table with the same columns (overrides --data)")
    nb201.add_argument(
        "--queries",
        type=_query_budgets,
        default=[100],
        help="query budget, or a comma list of budgets scored in one run (50,100,200)",
    )
    nb201.add_argument("--seeds", type=int, default=100)
    nb201.add_argument("--strategies", help="comma list (default: all)")
    nb201.add_argument(
        "--proxy-table",
        help="JSON lines of every cell's zero-cost scores (python -m kubenas_trainer.screen --all)",
    )
    nb201.add_argument(
        "--proxies",
        help="comma list of the table's proxies to screen with (default: every one it holds)",
    )
    nb201.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    nb201.add_argument("--json", action="store_true", help="last line: JSON results")
    nb201.set_defaults(func=_bench_nb201)

    mo = bench.add_parser(
        "nb201-mo", help="multi-objective and constrained search on a NAS-Bench-201 table"
    )
    mo.add_argument("--data", default=".", help="folder with cifar10.csv")
    mo.add_argument("--dataset-file", help="a table with the same columns (overrides --data)")
    mo.add_argument(
        "--costs",
        required=True,
        help="JSON lines of every cell's params and flops "
        "(python -m kubenas_trainer.screen --all --proxies params,flops)",
    )
    mo.add_argument("--cost-metric", choices=("flops", "params"), default="flops")
    mo.add_argument("--tasks", default="multi-objective,constrained")
    mo.add_argument("--queries", type=_query_budgets, default=[50, 100, 200])
    mo.add_argument("--seeds", type=int, default=50)
    mo.add_argument(
        "--strategies",
        help=f"comma list (default: {','.join(MO_STRATEGIES)}); the baselines always run",
    )
    mo.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    mo.add_argument("--json", action="store_true", help="last line: JSON results")
    mo.set_defaults(func=_bench_nb201_mo)

    suggest = bench.add_parser("suggest", help="latency of decide() per strategy")
    suggest.add_argument("--records", type=int, default=10_000)
    suggest.add_argument("--strategies", help="comma list (default: all)")
    suggest.add_argument("--json", action="store_true")
    suggest.set_defaults(func=_bench_suggest)

    startup = bench.add_parser("startup", help="a trial's fixed cost, fresh process vs warm worker")
    startup.add_argument("--dataset", default="digits")
    startup.add_argument("--trials", type=int, default=5, help="trials timed in each mode")
    startup.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each trial")
    startup.add_argument("--search", help="also run this experiment both ways and time it")
    startup.add_argument("--cpu-slots", type=int, default=os.cpu_count() or 1)
    startup.add_argument("--json", action="store_true", help="last line: JSON results")
    startup.set_defaults(func=_bench_startup)

    oneshot = bench.add_parser(
        "oneshot", help="a oneshot experiment's supernet ranking, and its result against cost"
    )
    oneshot.add_argument("experiment", help="a NASExperiment with strategy oneshot")
    oneshot.add_argument(
        "--architectures", type=int, default=30, help="sampled for Kendall tau (0: skip)"
    )
    oneshot.add_argument(
        "--seed-ceiling",
        action="store_true",
        help="train the sampled architectures on a second seed too: tau between the seeds",
    )
    oneshot.add_argument("--strategies", default="local-search,tpe", help="multi-trial rivals")
    oneshot.add_argument("--max-trials", type=int, default=20, help="candidates of each rival")
    oneshot.add_argument("--data-dir", help="the trainer's data folder")
    oneshot.add_argument("--out", help="keep the runs in this folder")
    oneshot.add_argument("--json", action="store_true", help="last line: JSON results")
    oneshot.set_defaults(func=_bench_oneshot)

    bench_op = bench.add_parser("operator", help="operator cost per trial on a dev cluster")
    bench_op.add_argument("--experiments", default="1,10,100", help="comma list of scales")
    bench_op.add_argument("--trials", type=int, default=20, help="trials per experiment")
    bench_op.add_argument("--parallel", type=int, default=1, help="parallelTrials")
    bench_op.add_argument("--before", help="another checkout whose operator to measure too")
    bench_op.add_argument("--timeout", type=float, default=3600, help="seconds per scale")
    bench_op.add_argument("--keep", help="keep logs and audit logs in this folder")
    bench_op.add_argument("--json", action="store_true", help="last line: JSON results")
    bench_op.set_defaults(func=_bench_operator)

    reuse = bench.add_parser(
        "reuse", help="an experiment on a dev cluster with a Job per trial, then with trial reuse"
    )
    reuse.add_argument(
        "experiment", nargs="?", default="examples/digits-cell.yaml", help="its search is run"
    )
    reuse.add_argument("--trials", type=int, default=12, help="maxTrials of each run")
    reuse.add_argument("--parallel", type=int, default=2, help="parallelTrials")
    reuse.add_argument("--per-pod", type=int, default=4, help="maxTrialsPerPod of the reuse run")
    reuse.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    reuse.add_argument("--json", action="store_true", help="last line: JSON results")
    reuse.set_defaults(func=_bench_reuse)
    return parser


def _single_threaded_blas() -> None:
    """The search core's linear algebra is tiny; BLAS thread pools would only fight trials and
    each other for cores (a GP fit took 4x longer with them on 2 busy cores). Must run before
    numpy is first imported, which the commands do lazily."""
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")


def main(argv: list[str] | None = None) -> int:
    _single_threaded_blas()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ExperimentError as exc:
        print(exc, file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
