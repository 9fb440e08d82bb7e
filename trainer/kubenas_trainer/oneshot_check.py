"""``python -m kubenas_trainer.oneshot_check``: does a supernet rank architectures as training does?

Reads a NASExperiment, trains its supernet (the ``oneshot`` strategy's method and epochs, or
``--method`` and ``--supernet-epochs``), samples ``--architectures`` distinct architectures of its
space uniformly, scores each with the supernet's inherited weights, trains each standalone with
the built-in trainer, and prints Kendall's tau between the two. It also prints the collapse check:
the share of parameter-free operations among the supernet's top-K architectures beside their
share among the best standalone ones (a supernet that collapses prefers skip connections far more
often than training does). Its figures are measured by hand, not by the test suite.
"""

import argparse
import json
import random
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from scipy.stats import kendalltau  # type: ignore[import-untyped]

from kubenas.api.builtin_trainer import (
    DEFAULT_EPOCHS,
    HyperparameterError,
    Hyperparameters,
)
from kubenas.api.loader import ExperimentError, load_experiment
from kubenas.api.vocabulary import CHAIN_FAMILY, NB201_FAMILY, ONESHOT_METHODS, parse_nb201_cell
from kubenas.space import Assignment, SearchSpace, build_space
from kubenas_trainer.config import ConfigError, default_data_dir
from kubenas_trainer.data import Splits, load_dataset
from kubenas_trainer.device import DevicePlan, plan_device
from kubenas_trainer.models import build_model
from kubenas_trainer.screen import json_number, positive
from kubenas_trainer.supernet_trial import build_supernet
from kubenas_trainer.train import Trainer, to_device

# The oneshot strategy's defaults, for an experiment of another strategy.
DEFAULT_SUPERNET_EPOCHS = 20
DEFAULT_TOP_K = 5
STANDALONE_TOP = 20
PARAMETER_FREE_OPERATIONS = {
    NB201_FAMILY: ("skip_connect", "none", "avg_pool_3x3"),
    CHAIN_FAMILY: ("identity",),
}


def operations(family: str, architecture: Mapping[str, Any]) -> list[str]:
    """Every operation an architecture uses: a cell's six edges, or a chain's blocks."""
    if family == NB201_FAMILY:
        return list(parse_nb201_cell(str(architecture["cell"])).values())
    return [str(block) for stage in architecture["stages"] for block in stage["blocks"]]


def parameter_free_shares(
    family: str, space: SearchSpace, assignments: Sequence[Assignment]
) -> dict[str, float | None]:
    """Per parameter-free operation, and in ``total``, its share of all operations used by
    ``assignments`` (None when they use none, as chains of depth 0 can)."""
    used = [op for a in assignments for op in operations(family, space.to_architecture(a))]
    free = PARAMETER_FREE_OPERATIONS[family]
    shares: dict[str, float | None] = {
        op: used.count(op) / len(used) if used else None for op in free
    }
    shares["total"] = sum(used.count(op) for op in free) / len(used) if used else None
    return shares


def sample_distinct(space: SearchSpace, count: int, seed: int) -> list[Assignment]:
    """``count`` distinct architectures drawn uniformly (all of them when the space is smaller)."""
    size = space.size()
    wanted = count if size is None else min(count, size)
    rng = random.Random(seed)
    drawn: dict[str, Assignment] = {}
    while len(drawn) < wanted:
        assignment = space.sample(rng)
        drawn.setdefault(space.key(assignment), assignment)
    return list(drawn.values())


def train_standalone(
    family: str,
    architecture: Mapping[str, Any],
    splits: Splits,
    hparams: Hyperparameters,
    epochs: int,
    plan: DevicePlan,
    seed: int,
) -> float:
    """Validation accuracy after ``epochs`` epochs, trained as a trial of ``seed`` trains it."""
    torch.manual_seed(seed)
    model = build_model(family, dict(architecture), splits.sample_shape, splits.num_classes)
    trainer = Trainer(model, to_device(splits.train, plan), hparams, epochs, plan, seed)
    for _ in range(epochs):
        trainer.train_epoch()
    return trainer.evaluate(to_device(splits.val, plan))[1]


def check(args: argparse.Namespace) -> dict[str, Any]:
    """Run the whole benchmark; returns its figures (what ``--json`` prints)."""
    experiment = load_experiment(args.experiment)
    spec = experiment.spec
    family = spec.search_space.family
    methods = ONESHOT_METHODS.get(family)
    if methods is None:
        raise ConfigError(f"a {family} space has no supernet; want {' or '.join(ONESHOT_METHODS)}")
    oneshot = spec.strategy if getattr(spec.strategy, "name", None) == "oneshot" else None
    method = args.method or getattr(oneshot, "method", None) or methods[0]
    if method not in methods:
        raise ConfigError(f"--method: a {family} supernet trains with {', '.join(methods)}")
    supernet_epochs = (
        args.supernet_epochs or getattr(oneshot, "supernet_epochs", None) or DEFAULT_SUPERNET_EPOCHS
    )
    top_k = args.top_k or getattr(oneshot, "top_k", None) or DEFAULT_TOP_K
    standalone_epochs = args.standalone_epochs or (
        spec.fidelity.max if spec.fidelity is not None else DEFAULT_EPOCHS
    )
    seed = spec.seed if args.seed is None else args.seed
    try:
        hparams = Hyperparameters.from_mapping(spec.trial.hyperparameters)
    except HyperparameterError as error:
        raise ConfigError(str(error)) from error
    plan = plan_device(args.device)
    space = build_space(spec.search_space)
    splits = load_dataset(spec.trial.dataset, args.data_dir or default_data_dir())

    supernet = build_supernet(method, space, splits, hparams, supernet_epochs, plan, seed)
    started = time.perf_counter()
    while supernet.epoch < supernet_epochs:
        metrics = supernet.train_epoch()
        _progress(
            f"supernet {method}: epoch {supernet.epoch}/{supernet_epochs}, train accuracy "
            f"{metrics['train_accuracy']:.3f}, entropy {supernet.entropy():.3f}"
        )
    supernet_seconds = time.perf_counter() - started
    started = time.perf_counter()
    top = supernet.top(top_k)
    derive_seconds = time.perf_counter() - started

    sampled = sample_distinct(space, args.architectures, seed)
    started = time.perf_counter()
    scores = supernet.score(sampled)
    score_seconds = time.perf_counter() - started
    accuracies: list[float] = []
    standalone_seconds = 0.0
    for count, assignment in enumerate(sampled, start=1):
        started = time.perf_counter()
        accuracies.append(
            train_standalone(
                family,
                space.to_architecture(assignment),
                splits,
                hparams,
                standalone_epochs,
                plan,
                seed,
            )
        )
        standalone_seconds += time.perf_counter() - started
        _progress(
            f"standalone: {count}/{len(sampled)} trained, val accuracy {accuracies[-1]:.3f}, "
            f"{standalone_seconds:.1f} s so far"
        )
    tau, p_value = kendalltau(scores, accuracies)
    ceiling: float | None = None
    if args.seed_ceiling:
        again = []
        for count, assignment in enumerate(sampled, start=1):
            architecture = space.to_architecture(assignment)
            again.append(
                train_standalone(
                    family, architecture, splits, hparams, standalone_epochs, plan, seed + 1
                )
            )
            _progress(f"second seed: {count}/{len(sampled)} trained")
        ceiling = float(kendalltau(accuracies, again)[0])
    best_standalone = sorted(
        range(len(sampled)), key=lambda index: accuracies[index], reverse=True
    )[:STANDALONE_TOP]
    return {
        "experiment": experiment.metadata.name,
        "family": family,
        "method": method,
        "dataset": spec.trial.dataset,
        "device": plan.device.type,
        "seed": seed,
        "supernet_epochs": supernet_epochs,
        "standalone_epochs": standalone_epochs,
        "top_k": top_k,
        "architectures": [
            {
                "architecture": space.to_architecture(assignment),
                "supernet_score": score,
                "standalone_val_accuracy": accuracy,
            }
            for assignment, score, accuracy in zip(sampled, scores, accuracies, strict=True)
        ],
        "kendall_tau": json_number(float(tau)),
        "kendall_p": json_number(float(p_value)),
        "seed_ceiling_tau": None if ceiling is None else json_number(ceiling),
        "derived": [
            {"architecture": space.to_architecture(assignment), "score": score}
            for assignment, score in top
        ],
        "parameter_free_share": {
            "supernet_top_k": parameter_free_shares(family, space, [a for a, _ in top]),
            "standalone_top": parameter_free_shares(
                family, space, [sampled[index] for index in best_standalone]
            ),
            "standalone_top_count": len(best_standalone),
        },
        "supernet_train_seconds": round(supernet_seconds, 3),
        "supernet_derive_seconds": round(derive_seconds, 3),
        "supernet_score_seconds": round(score_seconds, 3),
        "standalone_train_seconds": round(standalone_seconds, 3),
    }


def print_report(figures: Mapping[str, Any]) -> None:
    print(
        f"{figures['experiment']}: {figures['method']} supernet of {figures['family']} on "
        f"{figures['dataset']} ({figures['device']}), {figures['supernet_epochs']} epochs; "
        f"{len(figures['architectures'])} sampled architectures trained "
        f"{figures['standalone_epochs']} epochs each"
    )
    print(f"{'supernet score':>15}{'standalone val acc':>20}  architecture")
    rows = sorted(
        figures["architectures"], key=lambda row: row["standalone_val_accuracy"], reverse=True
    )
    for row in rows:
        print(
            f"{row['supernet_score']:>15.4f}{row['standalone_val_accuracy']:>20.4f}  "
            f"{json.dumps(row['architecture'], separators=(',', ':'))}"
        )
    print(
        f"Kendall tau of supernet score with standalone val accuracy: "
        f"{_figure(figures['kendall_tau'])} (p {_figure(figures['kendall_p'])})"
    )
    if figures["seed_ceiling_tau"] is not None:
        print(
            "Kendall tau of standalone val accuracy on one seed with another (what any score "
            f"could reach on this data): {_figure(figures['seed_ceiling_tau'])}"
        )
    shares = figures["parameter_free_share"]
    print(
        f"parameter-free share: {'operation':<14}{'supernet top-' + str(figures['top_k']):>18}"
        f"{'standalone top-' + str(shares['standalone_top_count']):>20}"
    )
    for op, value in shares["supernet_top_k"].items():
        print(f"{'':22}{op:<14}{_figure(value):>18}{_figure(shares['standalone_top'][op]):>20}")
    print(
        f"trainer seconds: supernet {figures['supernet_train_seconds']:.1f} train + "
        f"{figures['supernet_derive_seconds']:.1f} derive + "
        f"{figures['supernet_score_seconds']:.1f} score; standalone "
        f"{figures['standalone_train_seconds']:.1f}"
    )


def _figure(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.3f}"


def _progress(line: str) -> None:
    print(f"oneshot_check: {line}", file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kubenas_trainer.oneshot_check",
        description="Kendall tau of a supernet's scores with standalone training, and collapse.",
    )
    parser.add_argument("--experiment", type=Path, required=True, help="NASExperiment YAML")
    parser.add_argument(
        "--method",
        choices=sorted({m for methods in ONESHOT_METHODS.values() for m in methods}),
        help="supernet method (default: the oneshot strategy's, else the family's)",
    )
    parser.add_argument(
        "--supernet-epochs",
        type=positive,
        help=f"default: the oneshot strategy's supernetEpochs, else {DEFAULT_SUPERNET_EPOCHS}",
    )
    parser.add_argument(
        "--top-k",
        type=positive,
        help=f"architectures derived (default: the oneshot strategy's topK, else {DEFAULT_TOP_K})",
    )
    parser.add_argument(
        "--architectures", type=positive, default=30, help="distinct architectures sampled (30)"
    )
    parser.add_argument(
        "--standalone-epochs",
        type=positive,
        help=f"epochs per sampled architecture (default: fidelity.max, else {DEFAULT_EPOCHS})",
    )
    parser.add_argument("--seed", type=int, help="seeds everything (default: the spec's seed)")
    parser.add_argument(
        "--seed-ceiling",
        action="store_true",
        help="also train each sampled architecture on a second seed and print Kendall tau "
        "between the seeds: the ceiling of any ranking on this data",
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--data-dir", type=Path, help="as the trainer's --data-dir")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        figures = check(args)
    except (ConfigError, ExperimentError, OSError) as error:
        print(f"oneshot_check: error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(figures))
    else:
        print_report(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
