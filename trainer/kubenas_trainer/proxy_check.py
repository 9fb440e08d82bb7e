"""``python -m kubenas_trainer.proxy_check``: do our zero-cost proxies rank networks as they should?

``naslib --scores FILE``: computes synflow, params and flops of the NAS-Bench-201 cells in NASLib's
published zero-cost table (a JSON list of ``{"arch": cell, "synflow": ..., "params": ...,
"flops": ..., "val_accuracy_200ep": ...}``) in NB201's CIFAR-10 setting (3x32x32, 10 classes,
stem 16, 5 cells per stage) and prints the Spearman rank correlation of each with NASLib's value.

``correlate --dataset digits --architectures 50 --epochs 2``: scores random nb201 cells with
every proxy, trains each briefly in-process and prints each proxy's Spearman correlation with the
validation accuracy. Neither command is part of the test suite; see docs/screening.md.
"""

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kubenas.api.builtin_trainer import Hyperparameters
from kubenas.api.space import Nb201CellSpace
from kubenas.api.vocabulary import NB201_FAMILY, format_nb201_cell, parse_nb201_cell
from kubenas.space import build_space
from kubenas_trainer.config import ConfigError, default_data_dir
from kubenas_trainer.data import load_dataset
from kubenas_trainer.device import DevicePlan
from kubenas_trainer.models import build_model
from kubenas_trainer.proxies import PROXIES, Probe, score_architecture, training_probe
from kubenas_trainer.screen import (
    Progress,
    add_model_arguments,
    json_number,
    nb201_architecture,
    pick_device,
    positive,
)
from kubenas_trainer.train import Trainer, to_device

NB201_CIFAR10_SHAPE = (3, 32, 32)
NB201_CIFAR10_CLASSES = 10
NASLIB_CHECKED = ("synflow", "params", "flops")
REQUIRED_SPEARMAN = 0.95


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman's rank correlation with average ranks for ties; ``-inf`` and NaN rank lowest."""
    return float(np.corrcoef(_average_ranks(xs), _average_ranks(ys))[0, 1])


def _average_ranks(values: Sequence[float]) -> np.ndarray:
    array = np.array(values, dtype=np.float64)  # a copy: NaNs are overwritten below
    array[np.isnan(array)] = -np.inf
    group = np.unique(array, return_inverse=True)[1]
    order = np.argsort(array, kind="stable")
    ranks = np.empty(len(array))
    ranks[order] = np.arange(len(array), dtype=np.float64)
    mean_rank = np.bincount(group, weights=ranks) / np.bincount(group)
    return np.asarray(mean_rank[group], dtype=np.float64)


def naslib_edge_order(cell: str) -> str:
    """Re-read a cell string whose six operations are listed in NASLib's op-index edge order
    (1<-0, 2<-0, 3<-0, 2<-1, 3<-1, 3<-2) instead of NB201's (1<-0, 2<-0, 2<-1, 3<-0, ...)."""
    operations = parse_nb201_cell(cell)
    operations[(2, 1)], operations[(3, 0)] = operations[(3, 0)], operations[(2, 1)]
    return format_nb201_cell(operations)


def _number(value: Any) -> float:
    return -math.inf if value is None else float(value)


def _score_cells(
    cells: Sequence[str], names: Sequence[str], args: argparse.Namespace, device: torch.device
) -> tuple[dict[str, dict[str, float]], float]:
    """Each cell's scores in NB201's CIFAR-10 setting, and the wall seconds they took."""
    probe = Probe(NB201_CIFAR10_SHAPE)
    progress = Progress(len(cells), args.progress_every)
    started = time.perf_counter()
    scores: dict[str, dict[str, float]] = {}
    for count, cell in enumerate(cells, start=1):
        architecture = nb201_architecture(cell, args.stem, args.cells_per_stage)
        scores[cell] = score_architecture(
            NB201_FAMILY, architecture, names, probe, NB201_CIFAR10_CLASSES, args.seed, device
        )
        progress.done(count)
    return scores, time.perf_counter() - started


def check_naslib(args: argparse.Namespace, device: torch.device) -> int:
    """Print our proxies' Spearman with NASLib's, reading its cell strings both as written and in
    NASLib's op-index edge order; 0 when each proxy reaches the required correlation under one.

    params and flops do not depend on which edge holds which operation (every edge of a cell has
    the same width), so only synflow is computed again for the second reading.
    """
    rows: list[dict[str, Any]] = json.loads(args.scores.read_text())[: args.limit]
    written = sorted({row["arch"] for row in rows})
    ours, seconds = _score_cells(written, NASLIB_CHECKED, args, device)
    print(
        f"{len(rows)} NASLib rows, {len(written)} distinct cells: {', '.join(NASLIB_CHECKED)} in "
        f"{seconds:.1f} s on {device.type} (stem {args.stem}, {args.cells_per_stage} cells per "
        f"stage, {'x'.join(map(str, NB201_CIFAR10_SHAPE))}, {NB201_CIFAR10_CLASSES} classes)"
    )
    reread = sorted({naslib_edge_order(cell) for cell in written} - set(ours))
    reread_scores, reread_seconds = _score_cells(reread, ["synflow"], args, device)
    print(f"{len(reread)} more cells in NASLib's edge order: synflow in {reread_seconds:.1f} s")

    def reread_score(cell: str, proxy: str) -> float:
        if proxy != "synflow":
            return ours[cell][proxy]
        other = naslib_edge_order(cell)
        return (ours[other] if other in ours else reread_scores[other])[proxy]

    readings: dict[str, Callable[[str, str], float]] = {
        "as written": lambda cell, proxy: ours[cell][proxy],
        "NASLib edge order": reread_score,
    }
    print(f"{'proxy':<10}{'rows':>6}" + "".join(f"{name:>20}" for name in readings))
    passed = True
    for proxy in NASLIB_CHECKED:
        scored = [row for row in rows if proxy in row]
        theirs = [_number(row[proxy]) for row in scored]
        values = [
            spearman([reading(row["arch"], proxy) for row in scored], theirs)
            for reading in readings.values()
        ]
        passed = passed and max(values) >= REQUIRED_SPEARMAN
        print(f"{proxy:<10}{len(scored):>6}" + "".join(f"{value:>20.4f}" for value in values))
    with_accuracy = [row for row in rows if "synflow" in row and "val_accuracy_200ep" in row]
    if with_accuracy:
        accuracy = [float(row["val_accuracy_200ep"]) for row in with_accuracy]
        naslib_synflow = spearman([_number(row["synflow"]) for row in with_accuracy], accuracy)
        print(f"Spearman of synflow with the table's val_accuracy_200ep ({len(accuracy)} rows):")
        print(f"{'NASLib synflow':<32}{naslib_synflow:>8.4f}")
        for name, reading in readings.items():
            ranked = [reading(row["arch"], "synflow") for row in with_accuracy]
            print(f"{'our synflow, ' + name:<32}{spearman(ranked, accuracy):>8.4f}")
    print(f"{'pass' if passed else 'FAIL'}: each proxy needs Spearman >= {REQUIRED_SPEARMAN}")
    return 0 if passed else 1


def _train_accuracy(
    architecture: dict[str, Any],
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    sample_shape: tuple[int, ...],
    num_classes: int,
    epochs: int,
    plan: DevicePlan,
    seed: int,
) -> float:
    """Validation accuracy after ``epochs`` epochs of the trainer's default recipe, starting from
    the same initialisation the proxies scored (torch seeded with ``seed`` before building)."""
    torch.manual_seed(seed)
    model = build_model(NB201_FAMILY, architecture, sample_shape, num_classes)
    trainer = Trainer(model, train, Hyperparameters(), epochs, plan, seed)
    for _ in range(epochs):
        trainer.train_epoch()
    return trainer.evaluate(val)[1]


def correlate(args: argparse.Namespace, device: torch.device) -> int:
    """Score random nb201 cells with every proxy, train each, print Spearman with val accuracy."""
    space = build_space(
        Nb201CellSpace(
            family=NB201_FAMILY, stem_channels=[args.stem], cells_per_stage=[args.cells_per_stage]
        )
    )
    if args.architectures > (space.size() or 0):
        raise ConfigError(f"--architectures: the space has only {space.size()} cells")
    rng = random.Random(args.seed)
    architectures: dict[str, dict[str, Any]] = {}
    while len(architectures) < args.architectures:
        architecture = space.to_architecture(space.sample(rng))
        architectures.setdefault(architecture["cell"], architecture)
    splits = load_dataset(args.dataset, args.data_dir or default_data_dir())
    probe = training_probe(splits, args.batch_size, args.seed, device)
    plan = DevicePlan(device, False, False, torch.get_num_threads())
    train, val = to_device(splits.train, plan), to_device(splits.val, plan)
    names = list(PROXIES)
    results: list[tuple[dict[str, float], float]] = []
    progress = Progress(len(architectures), args.progress_every)
    proxy_seconds = train_seconds = 0.0
    out = args.out.open("w") if args.out else None
    try:
        for count, architecture in enumerate(architectures.values(), start=1):
            started = time.perf_counter()
            scores = score_architecture(
                NB201_FAMILY, architecture, names, probe, splits.num_classes, args.seed, device
            )
            proxy_seconds += time.perf_counter() - started
            started = time.perf_counter()
            accuracy = _train_accuracy(
                architecture,
                train,
                val,
                splits.sample_shape,
                splits.num_classes,
                args.epochs,
                plan,
                args.seed,
            )
            train_seconds += time.perf_counter() - started
            results.append((scores, accuracy))
            if out is not None:
                row = {"architecture": architecture, "val_accuracy": accuracy}
                row.update({name: json_number(value) for name, value in scores.items()})
                out.write(json.dumps(row, separators=(",", ":")) + "\n")
                out.flush()
            progress.done(count)
    finally:
        if out is not None:
            out.close()
    _print_correlations(args, names, results, proxy_seconds, train_seconds)
    return 0


def _print_correlations(
    args: argparse.Namespace,
    names: Sequence[str],
    results: Sequence[tuple[Mapping[str, float], float]],
    proxy_seconds: float,
    train_seconds: float,
) -> None:
    accuracies = [accuracy for _, accuracy in results]
    print(
        f"{len(results)} nb201 cells (stem {args.stem}, {args.cells_per_stage} cells per stage) "
        f"on {args.dataset}, {args.epochs} epochs each; val accuracy "
        f"{min(accuracies):.3f}..{max(accuracies):.3f}; proxies {proxy_seconds:.1f} s, "
        f"training {train_seconds:.1f} s"
    )
    print(f"{'proxy':<10}{'Spearman with val accuracy':>28}")
    for name in names:
        value = spearman([scores[name] for scores, _ in results], accuracies)
        print(f"{name:<10}{value:>28.4f}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kubenas_trainer.proxy_check",
        description="Check the zero-cost proxies against published scores or trained accuracy.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    naslib = commands.add_parser("naslib", help="Spearman with NASLib's NB201 CIFAR-10 scores")
    naslib.add_argument(
        "--scores", type=Path, required=True, help="NASLib's zero-cost JSON (a list of cells)"
    )
    naslib.add_argument("--limit", type=positive, default=None, help="only the first N cells")
    add_model_arguments(naslib)
    trained = commands.add_parser("correlate", help="Spearman with accuracy after training")
    trained.add_argument("--dataset", default="digits", help="trainer dataset (digits)")
    trained.add_argument(
        "--architectures", type=positive, default=50, help="random cells to train (50)"
    )
    trained.add_argument("--epochs", type=positive, default=2, help="epochs per cell (2)")
    trained.add_argument("--out", type=Path, default=None, help="also write each cell as JSON")
    add_model_arguments(trained)
    trained.set_defaults(cells_per_stage=1, progress_every=5)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    device = pick_device(parser, args.device)
    try:
        if args.command == "naslib":
            return check_naslib(args, device)
        return correlate(args, device)
    except (ConfigError, OSError, ValueError) as error:
        print(f"proxy_check: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
