"""Hardware costs of one network on the device it will train on, measured before training.

A search can then constrain candidates by what they cost to run (``latency_ms <= 5``), not only
by their size. ``params`` and ``flops`` are counted (:mod:`kubenas_trainer.models.cost`) and
always reported; the timed metrics (:data:`TIMED_METRICS`) run inference passes, so only the
ones asked for are measured. ``python -m kubenas_trainer.costs`` measures architectures without
training and writes one JSON line per measurement.
"""

import argparse
import copy
import ctypes
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import nn

from kubenas.api.vocabulary import (
    COST_METRICS,
    NB201_FAMILY,
    TIMED_COST_METRICS,
    TRAINER_FAMILIES,
)
from kubenas_trainer.config import ConfigError
from kubenas_trainer.device import DevicePlan, plan_device
from kubenas_trainer.models import build_model
from kubenas_trainer.models.cost import count_forward_flops, count_parameters
from kubenas_trainer.screen import (
    DEFAULT_CLASSES,
    DEFAULT_INPUT_SHAPE,
    Candidate,
    Progress,
    add_model_arguments,
    all_nb201_architectures,
    parse_shape,
    positive,
    read_architectures,
)

TIMED_METRICS = frozenset(TIMED_COST_METRICS)  # need timing runs

# Timing on more threads than there are idle cores is ruinous: each parallel region waits for
# its slowest thread. On a 2-core machine running two other busy processes, a batch-1 pass took
# 170 to 2600 ms on 2 threads and 25 to 30 ms on 1. One thread also makes the figure independent
# of how many cores a trial is given, and is what HW-NAS latency tables use.
CPU_TIMING_THREADS = 1
# About 1.5 s for a 1.3M-parameter NB201 network on one core: batch 8 already reaches 90 % of
# the throughput of batch 16 at half the time, and 20 passes give as stable a median as 30.
DEFAULT_THROUGHPUT_BATCH = 8
DEFAULT_WARMUP = 5
DEFAULT_REPEATS = 20
# Latency passes run for at least this long, and the figure is the mean of the fastest tenth.
# Noise from other work only ever adds time, and on a shared VM it comes in spells of half a
# second or more, which a median of 20 passes (0.1-0.4 s) sat inside: the same cell measured in
# 5 processes spread 12-22 % by median, 8-12 % by the fastest tenth of 0.5 s of passes.
DEFAULT_LATENCY_SECONDS = 0.5
FASTEST_SHARE = 0.1
MAX_PASSES_PER_REPEAT = 50
MIB = 2**20
# Writing "5" here resets the process's peak resident set size (VmHWM) to the current one.
CLEAR_REFS = Path("/proc/self/clear_refs")
PROC_STATUS = Path("/proc/self/status")


@dataclass(frozen=True)
class Costs:
    """What :func:`measure_costs` found: ``values`` has params, flops and the metrics asked for."""

    values: dict[str, float]
    device_name: str
    seconds: float


def check_metrics(names: Collection[str]) -> None:
    """Refuse metric names this module does not measure, so a typo is not a silently absent cost."""
    unknown = sorted(set(names) - set(COST_METRICS))
    if unknown:
        raise ValueError(
            f"unknown cost metric {', '.join(unknown)}; known: {', '.join(COST_METRICS)}"
        )


def measure_costs(
    model: nn.Module,
    sample: torch.Tensor,
    device: torch.device,
    wanted: Collection[str],
    *,
    throughput_batch: int = DEFAULT_THROUGHPUT_BATCH,
    warmup: int = DEFAULT_WARMUP,
    repeats: int = DEFAULT_REPEATS,
    latency_seconds: float = DEFAULT_LATENCY_SECONDS,
    channels_last: bool = False,
    autocast_dtype: torch.dtype | None = None,
) -> Costs:
    """Measure ``model``'s costs on ``device`` for ``sample``, one input of batch 1 on the CPU.

    Timed passes run in eval mode under ``torch.inference_mode`` on a copy of ``model`` moved to
    ``device`` (channels-last and autocast to ``autocast_dtype`` when given, as the trainer runs
    on a GPU; ``torch.float32`` means no autocast), so the caller's module keeps its device,
    memory format, mode and buffers. On CPU everything runs on :data:`CPU_TIMING_THREADS`
    thread(s), and ``device_name`` says so.

    - ``latency_ms``: after ``warmup`` untimed batch-1 passes, timed ones until there are at
      least ``repeats`` and they took ``latency_seconds`` (at most 50 x ``repeats``); the mean of
      the fastest tenth of them (:data:`FASTEST_SHARE`).
    - ``throughput``: inputs per second at ``throughput_batch`` (the sample repeated), median of
      ``max(3, repeats // 5)`` passes after two warm-ups.
    - ``peak_memory_mb``: MiB at the peak of one warmed pass at ``throughput_batch``. On CUDA,
      everything the allocator holds, weights included. On CPU, the growth of the process's
      peak resident set size; free memory cached by malloc is first returned to the system, or
      it would hide part of the peak. Where ``/proc/self/clear_refs`` cannot be written (not
      Linux, or forbidden) there is no way to reset the peak, and the metric is left out.
    """
    check_metrics(wanted)
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"costs are measured on cpu or cuda, not {device.type}")
    if throughput_batch < 1 or repeats < 1 or warmup < 0 or latency_seconds < 0:
        raise ValueError("throughput_batch and repeats must be >= 1, warmup and seconds >= 0")
    started = time.perf_counter()
    timed = TIMED_METRICS & set(wanted)
    with _timing_threads(device):
        parameter = next(model.parameters(), None)
        home = parameter.device if parameter is not None else torch.device("cpu")
        values: dict[str, float] = {
            "params": count_parameters(model),
            "flops": count_forward_flops(model, sample.to(home)),
        }
        if timed:
            layout = torch.channels_last if channels_last and sample.ndim == 4 else None
            network = copy.deepcopy(model).eval().to(device)
            if layout is not None:
                network = network.to(memory_format=layout)
            enabled = autocast_dtype not in (None, torch.float32)
            with (
                torch.inference_mode(),
                torch.autocast(device.type, dtype=autocast_dtype, enabled=enabled),
            ):
                values.update(
                    _timed_metrics(
                        network,
                        sample,
                        device,
                        layout,
                        timed,
                        throughput_batch,
                        warmup,
                        repeats,
                        latency_seconds,
                    )
                )
        name = device_name(device)
    ordered = {metric: values[metric] for metric in COST_METRICS if metric in values}
    return Costs(ordered, name, time.perf_counter() - started)


@contextmanager
def _timing_threads(device: torch.device) -> Iterator[None]:
    """Run on :data:`CPU_TIMING_THREADS` CPU threads, then restore the caller's count."""
    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(CPU_TIMING_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _timed_metrics(
    network: nn.Module,
    sample: torch.Tensor,
    device: torch.device,
    layout: torch.memory_format | None,
    timed: frozenset[str],
    throughput_batch: int,
    warmup: int,
    repeats: int,
    latency_seconds: float,
) -> dict[str, float]:
    """The wanted timed metrics of ``network``, which is on ``device`` in eval mode."""

    def batch_of(size: int) -> torch.Tensor:
        inputs = sample.repeat(size, *[1] * (sample.ndim - 1)).to(device)
        return inputs if layout is None else inputs.contiguous(memory_format=layout)

    values: dict[str, float] = {}
    if "latency_ms" in timed:
        single = batch_of(1)
        for _ in range(warmup):
            network(single)
        seconds = _pass_seconds(network, single, repeats, latency_seconds)
        values["latency_ms"] = 1000 * fastest_share_mean(seconds)
    if timed & {"throughput", "peak_memory_mb"}:
        batch = batch_of(throughput_batch)
        network(batch)  # the first pass at a new shape allocates and picks kernels
        # The second warm-up doubles as the memory pass: warmed, and untimed either way.
        if "peak_memory_mb" in timed:
            peak = _peak_memory_mb(device, lambda: network(batch))
            if peak is not None:
                values["peak_memory_mb"] = peak
        else:
            network(batch)
        if "throughput" in timed:
            seconds = _pass_seconds(network, batch, max(3, repeats // 5))
            values["throughput"] = throughput_batch / statistics.median(seconds)
    return values


def fastest_share_mean(seconds: Sequence[float]) -> float:
    """The mean of the fastest :data:`FASTEST_SHARE` of ``seconds`` (at least one)."""
    fastest = sorted(seconds)[: max(1, round(len(seconds) * FASTEST_SHARE))]
    return statistics.fmean(fastest)


def _pass_seconds(
    network: nn.Module, inputs: torch.Tensor, count: int, at_least: float = 0.0
) -> list[float]:
    """Wall seconds of ``count`` or more forward passes, until they took ``at_least`` seconds
    (at most :data:`MAX_PASSES_PER_REPEAT` x ``count``); on CUDA each waits for its kernels."""
    cuda = inputs.device.type == "cuda"
    seconds: list[float] = []
    limit = count * MAX_PASSES_PER_REPEAT
    while len(seconds) < count or (sum(seconds) < at_least and len(seconds) < limit):
        if cuda:
            torch.cuda.synchronize(inputs.device)
        started = time.perf_counter()
        network(inputs)
        if cuda:
            torch.cuda.synchronize(inputs.device)
        seconds.append(time.perf_counter() - started)
    return seconds


def _peak_memory_mb(device: torch.device, run: Callable[[], object]) -> float | None:
    """Peak MiB while ``run`` runs (see :func:`measure_costs`); None where it cannot be known."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        run()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) / MIB
    _return_free_memory()
    try:
        before = _status_kib("VmRSS")
        CLEAR_REFS.write_text("5")
    except OSError:
        return None
    run()
    return max(0.0, (_status_kib("VmHWM") - before) / 1024)


def _return_free_memory() -> None:
    """Hand malloc's cached free pages back to the system (glibc only; elsewhere a no-op)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError, TypeError):
        return
    trim(0)


def _status_kib(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status``, such as VmRSS (now) or VmHWM (peak)."""
    for line in PROC_STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"{PROC_STATUS} has no {field}")


def device_name(device: torch.device) -> str:
    """The device as results should record it: timings are only comparable on the same one."""
    if device.type == "cuda":
        return "cuda: " + torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return f"cpu: {_cpu_model()} ({torch.get_num_threads()} threads)"
    return device.type


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def parse_metrics(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"no metric given; known: {', '.join(COST_METRICS)}")
    try:
        check_metrics(names)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    return names


def parse_architecture(text: str) -> dict[str, Any]:
    try:
        architecture = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON: {error}") from error
    if not isinstance(architecture, dict):
        raise argparse.ArgumentTypeError("architecture JSON must be an object")
    return architecture


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kubenas_trainer.costs",
        description="Measure architectures' hardware costs on this machine, without training.",
    )
    parser.add_argument("--family", choices=TRAINER_FAMILIES, required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--architecture", type=parse_architecture, help="one architecture JSON")
    source.add_argument(
        "--architectures", type=Path, help="file: one cell string or architecture JSON a line"
    )
    source.add_argument("--all", action="store_true", help="every cell of the nb201-cell space")
    parser.add_argument(
        "--input-shape",
        type=parse_shape,
        default=DEFAULT_INPUT_SHAPE,
        help="sample shape, CxHxW or CxL (3x32x32)",
    )
    parser.add_argument("--classes", type=positive, default=DEFAULT_CLASSES, help="classes (10)")
    parser.add_argument(
        "--metrics",
        type=parse_metrics,
        default=list(COST_METRICS),
        help=f"comma list of {', '.join(COST_METRICS)} (all)",
    )
    parser.add_argument(
        "--throughput-batch",
        type=positive,
        default=DEFAULT_THROUGHPUT_BATCH,
        help=f"batch of the throughput and memory passes ({DEFAULT_THROUGHPUT_BATCH})",
    )
    parser.add_argument(
        "--warmup",
        type=positive,
        default=DEFAULT_WARMUP,
        help=f"untimed passes before the latency ones ({DEFAULT_WARMUP})",
    )
    parser.add_argument(
        "--repeats",
        type=positive,
        default=DEFAULT_REPEATS,
        help=f"least timed latency passes ({DEFAULT_REPEATS})",
    )
    parser.add_argument(
        "--latency-seconds",
        type=float,
        default=DEFAULT_LATENCY_SECONDS,
        help=f"least seconds of timed latency passes ({DEFAULT_LATENCY_SECONDS})",
    )
    parser.add_argument(
        "--times", type=positive, default=1, help="measure each architecture N times (1)"
    )
    parser.add_argument("--out", type=Path, help="JSON-lines file to write (default stdout)")
    add_model_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.all and args.family != NB201_FAMILY:
        parser.error(f"--all enumerates only the {NB201_FAMILY} space")
    try:
        plan = plan_device(args.device)  # cuDNN, TF32, bf16 and layout exactly as a trial's
    except RuntimeError as error:
        parser.error(f"--device {args.device}: {error}")
    try:
        if args.all:
            candidates = all_nb201_architectures(args.stem, args.cells_per_stage)
        elif args.architectures is not None:
            candidates = read_architectures(
                args.architectures, args.family, args.stem, args.cells_per_stage
            )
        else:
            candidates = [Candidate("--architecture", args.architecture)]
        if args.out is None:
            _measure_all(args, candidates, plan, sys.stdout)
        else:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with args.out.open("w") as out:
                _measure_all(args, candidates, plan, out)
    except (ConfigError, OSError) as error:
        print(f"costs: error: {error}", file=sys.stderr)
        return 2
    return 0


def _measure_all(
    args: argparse.Namespace,
    candidates: Sequence[Candidate],
    plan: DevicePlan,
    out: TextIO,
) -> None:
    """Measure each candidate ``--times`` times, a JSON line each and a stderr summary each."""
    generator = torch.Generator().manual_seed(args.seed)
    sample = torch.randn((1, *args.input_shape), generator=generator)
    progress = Progress(len(candidates), args.progress_every)
    for count, candidate in enumerate(candidates, start=1):
        torch.manual_seed(args.seed)
        try:
            model = build_model(args.family, candidate.architecture, args.input_shape, args.classes)
        except ConfigError as error:
            raise ConfigError(f"{candidate.origin}: {error}") from error
        measured = []
        for _ in range(args.times):
            costs = measure_costs(
                model,
                sample,
                plan.device,
                args.metrics,
                throughput_batch=args.throughput_batch,
                warmup=args.warmup,
                repeats=args.repeats,
                latency_seconds=args.latency_seconds,
                channels_last=plan.channels_last,
                autocast_dtype=plan.autocast_dtype,
            )
            row: dict[str, Any] = {"architecture": candidate.architecture}
            row["device"] = costs.device_name
            row.update({name: round(value, 4) for name, value in costs.values.items()})
            row["seconds"] = round(costs.seconds, 4)
            out.write(json.dumps(row, separators=(",", ":")) + "\n")
            out.flush()
            measured.append(costs)
        print(f"costs: {candidate.origin}: {summary(measured)}", file=sys.stderr, flush=True)
        progress.done(count)


def summary(measured: Sequence[Costs]) -> str:
    """One human line: each metric's median over the measurements, and latency's spread."""

    def median(name: str) -> float:
        return statistics.median(costs.values[name] for costs in measured)

    values = measured[0].values
    parts = [f"params {_si(median('params'))}", f"flops {_si(median('flops'))}"]
    if "latency_ms" in values:
        parts.append(f"latency {median('latency_ms'):.3g} ms")
        if len(measured) > 1:
            latencies = [costs.values["latency_ms"] for costs in measured]
            spread = (max(latencies) - min(latencies)) / median("latency_ms")
            parts.append(f"latency spread {spread:.1%} over {len(measured)}")
    if "throughput" in values:
        parts.append(f"throughput {median('throughput'):.4g}/s")
    if "peak_memory_mb" in values:
        parts.append(f"peak memory {median('peak_memory_mb'):.1f} MiB")
    seconds = statistics.median(costs.seconds for costs in measured)
    return ", ".join(parts) + f"; {measured[0].device_name}, {seconds:.2f} s each"


def _si(value: float) -> str:
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"


if __name__ == "__main__":
    sys.exit(main())
