"""``python -m kubenas_trainer.screen``: zero-cost proxy scores of many architectures, one process.

Torch is imported and the data loaded once; each architecture is then built at initialisation
(torch seeded with ``--seed``), scored by every ``--proxies`` proxy (see
:mod:`kubenas_trainer.proxies`) and written as one JSON line ``{"architecture": {...},
"<proxy>": score, ..., "seconds": wall}`` to ``--out``; an undefined score (``-inf``: the output
ignores the input) is written as ``null``. Progress goes to stderr. See docs/screening.md.
"""

import argparse
import json
import math
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch

from kubenas.api.space import Nb201CellSpace
from kubenas.api.vocabulary import NB201_FAMILY, TRAINER_FAMILIES, parse_nb201_cell
from kubenas.space import build_space
from kubenas_trainer.config import ConfigError, default_data_dir
from kubenas_trainer.data import load_dataset
from kubenas_trainer.device import cpu_thread_budget
from kubenas_trainer.proxies import PROXIES, Probe, data_proxies, score_architecture, training_probe

DEFAULT_INPUT_SHAPE = (3, 32, 32)  # NAS-Bench-201's CIFAR-10 setting, for data-free screens
DEFAULT_CLASSES = 10


@dataclass(frozen=True)
class Candidate:
    """An architecture to score and where it came from (``FILE:LINE``, or ``cell N`` of a space)."""

    origin: str
    architecture: dict[str, Any]


def nb201_architecture(cell: str, stem_channels: int, cells_per_stage: int) -> dict[str, Any]:
    return {"cell": cell, "stem_channels": stem_channels, "cells_per_stage": cells_per_stage}


def read_architectures(
    path: Path, family: str, stem_channels: int, cells_per_stage: int
) -> list[Candidate]:
    """One architecture per line: architecture JSON, or (nb201-cell) a NAS-Bench-201 cell string
    completed with the stem width and cells per stage. Blank lines and ``#`` comments are skipped.
    """
    candidates = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        origin = f"{path}:{number}"
        if line.startswith("{"):
            try:
                architecture = json.loads(line)
            except json.JSONDecodeError as error:
                raise ConfigError(f"{origin}: not valid JSON: {error}") from error
            if not isinstance(architecture, dict):
                raise ConfigError(f"{origin}: architecture JSON must be an object")
        elif family == NB201_FAMILY:
            try:
                parse_nb201_cell(line)
            except ValueError as error:
                raise ConfigError(f"{origin}: {error}") from error
            architecture = nb201_architecture(line, stem_channels, cells_per_stage)
        else:
            raise ConfigError(f"{origin}: a {family} architecture must be a JSON object")
        candidates.append(Candidate(origin, architecture))
    return candidates


def all_nb201_architectures(stem_channels: int, cells_per_stage: int) -> list[Candidate]:
    """Every cell of the control plane's nb201-cell space, in its canonical grid order."""
    space = build_space(
        Nb201CellSpace(
            family=NB201_FAMILY, stem_channels=[stem_channels], cells_per_stage=[cells_per_stage]
        )
    )
    return [
        Candidate(f"cell {index}", space.to_architecture(assignment))
        for index, assignment in enumerate(space.grid(0))
    ]


class Progress:
    """A stderr line every ``every`` items (and after the last) with the rate and time left."""

    def __init__(self, total: int, every: int, stream: TextIO = sys.stderr) -> None:
        self.total, self.every, self.stream = total, every, stream
        self.started = time.perf_counter()

    def done(self, count: int) -> None:
        if count % self.every and count != self.total:
            return
        elapsed = time.perf_counter() - self.started
        rate = count / elapsed if elapsed > 0 else math.inf
        left = (self.total - count) / rate if rate > 0 else math.inf
        print(
            f"screen: {count}/{self.total} architectures, {rate:.2f}/s, "
            f"elapsed {_duration(elapsed)}, ETA {_duration(left)}",
            file=self.stream,
            flush=True,
        )


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def json_number(value: float) -> float | None:
    """A score as JSON can hold it: ``null`` for an undefined (non-finite) score."""
    return value if math.isfinite(value) else None


def score_candidates(
    family: str,
    candidates: Sequence[Candidate],
    names: Sequence[str],
    probe: Probe,
    num_classes: int,
    seed: int,
    device: torch.device,
) -> Iterator[tuple[Candidate, dict[str, float], float]]:
    """Each candidate with its scores and the wall seconds they took, in order."""
    for candidate in candidates:
        started = time.perf_counter()
        try:
            scores = score_architecture(
                family, candidate.architecture, names, probe, num_classes, seed, device
            )
        except ConfigError as error:
            raise ConfigError(f"{candidate.origin}: {error}") from error
        yield candidate, scores, time.perf_counter() - started


def parse_shape(text: str) -> tuple[int, ...]:
    """``3x32x32`` -> ``(3, 32, 32)``; ``1x40`` for sequences."""
    try:
        shape = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"want CxHxW or CxL with positive sizes, got {text!r}")
    return shape


def parse_proxies(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in PROXIES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown proxy {', '.join(unknown) or '(none given)'}; known: {', '.join(PROXIES)}"
        )
    return names


def parse_shard(text: str) -> tuple[int, int]:
    """``K/N`` -> ``(K, N)``: this process's share is every N-th candidate from the K-th."""
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit()) or not int(index) < int(count):
        raise argparse.ArgumentTypeError(f"want K/N with 0 <= K < N, got {text!r}")
    return int(index), int(count)


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"want a whole number >= 1, got {text!r}")
    return int(text)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared with :mod:`kubenas_trainer.proxy_check`: the network skeleton and device."""
    parser.add_argument("--stem", type=positive, default=16, help="nb201 stem channels (16)")
    parser.add_argument(
        "--cells-per-stage", type=positive, default=5, help="nb201 cells per stage (5)"
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--seed", type=int, default=0, help="seeds weight init and the batch")
    parser.add_argument(
        "--batch-size", type=positive, default=64, help="mini-batch of the data proxies (64)"
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="as the trainer's --data-dir")
    parser.add_argument(
        "--progress-every", type=positive, default=100, help="a progress line every N (100)"
    )


def pick_device(parser: argparse.ArgumentParser, requested: str) -> torch.device:
    """The device to score on; CPU runs use the trainer's thread budget."""
    if requested == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    torch.set_num_threads(cpu_thread_budget())
    return torch.device("cpu")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kubenas_trainer.screen",
        description="Score many architectures with zero-cost proxies in one process.",
    )
    parser.add_argument("--family", choices=TRAINER_FAMILIES, required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--architectures", type=Path, help="file: one cell string or architecture JSON a line"
    )
    source.add_argument("--all", action="store_true", help="every cell of the nb201-cell space")
    parser.add_argument(
        "--proxies",
        type=parse_proxies,
        required=True,
        help=f"comma list of {', '.join(PROXIES)}",
    )
    parser.add_argument("--dataset", help="trainer dataset for the data proxies (e.g. digits)")
    parser.add_argument(
        "--input-shape", type=parse_shape, help="sample shape without --dataset (3x32x32)"
    )
    parser.add_argument("--classes", type=positive, help="classes without --dataset (10)")
    parser.add_argument(
        "--shard",
        type=parse_shard,
        default=(0, 1),
        help="K/N: score every N-th architecture from the K-th (0-based), so N processes share "
        "one list; concatenate their outputs (0/1)",
    )
    parser.add_argument("--out", type=Path, required=True, help="JSON-lines file to write")
    add_model_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    names: list[str] = args.proxies
    needing_data = data_proxies(names)
    if needing_data and args.dataset is None:
        free = [name for name, proxy in PROXIES.items() if not proxy.needs_data]
        parser.error(
            f"--proxies {', '.join(needing_data)} need training data: give --dataset "
            f"(without it only {', '.join(free)} can be computed)"
        )
    if args.dataset is not None and (args.input_shape or args.classes):
        parser.error("--input-shape and --classes are taken from --dataset; give one or the other")
    if args.all and args.family != NB201_FAMILY:
        parser.error(f"--all enumerates only the {NB201_FAMILY} space")
    device = pick_device(parser, args.device)
    try:
        if args.all:
            candidates = all_nb201_architectures(args.stem, args.cells_per_stage)
        else:
            candidates = read_architectures(
                args.architectures, args.family, args.stem, args.cells_per_stage
            )
        shard, shards = args.shard
        candidates = candidates[shard::shards]
        if args.dataset is None:
            probe = Probe(args.input_shape or DEFAULT_INPUT_SHAPE)
            num_classes = args.classes or DEFAULT_CLASSES
        else:
            splits = load_dataset(args.dataset, args.data_dir or default_data_dir())
            probe = training_probe(splits, args.batch_size, args.seed, device)
            num_classes = splits.num_classes
        progress = Progress(len(candidates), args.progress_every)
        started = time.perf_counter()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("w") as out:
            scored = score_candidates(
                args.family, candidates, names, probe, num_classes, args.seed, device
            )
            for count, (candidate, scores, seconds) in enumerate(scored, start=1):
                row: dict[str, Any] = {"architecture": candidate.architecture}
                row.update({name: json_number(value) for name, value in scores.items()})
                row["seconds"] = round(seconds, 4)
                out.write(json.dumps(row, separators=(",", ":")) + "\n")
                out.flush()
                progress.done(count)
    except (ConfigError, OSError) as error:
        print(f"screen: error: {error}", file=sys.stderr)
        return 2
    total = time.perf_counter() - started
    print(
        f"screen: scored {len(candidates)} architectures in {total:.1f} s on {device.type}; "
        f"wrote {args.out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
