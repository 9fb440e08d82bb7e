"""``python -m kubenas_trainer.bench``: training throughput of one candidate on this machine.

Reports images/s, achieved TFLOP/s (FlopCounterMode's forward+backward FLOPs per step, times
steps, over time), the epoch time and the start-up time from process start to the end of the
first training step (imports, data, model, first-step kernels). CPU runs are kept short with
``--steps``; the epoch time is then extrapolated from the timed steps.
"""

import argparse
import copy
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from kubenas.api.builtin_trainer import Hyperparameters
from kubenas_trainer.config import default_data_dir
from kubenas_trainer.data import load_dataset
from kubenas_trainer.device import plan_device
from kubenas_trainer.models import build_model
from kubenas_trainer.models.cost import count_parameters, count_training_flops
from kubenas_trainer.train import Trainer, to_device

REFERENCE_CHAIN = {
    "stem_channels": 32,
    "stages": [
        {"width": 64, "blocks": ["conv3x3", "mbconv3x3_e6"]},
        {"width": 128, "blocks": ["conv3x3", "mbconv3x3_e6"]},
        {"width": 256, "blocks": ["conv3x3", "mbconv3x3_e2"]},
    ],
}


def seconds_since_process_start() -> float:
    """Wall time since the kernel started this process (Linux ``/proc``), imports included."""
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime, in clock ticks
    return time.clock_gettime(time.CLOCK_BOOTTIME) - started


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    plan = plan_device(args.device)
    splits = load_dataset(args.dataset, Path(args.data_dir))
    torch.manual_seed(0)
    model = build_model(
        args.family, json.loads(args.architecture), splits.sample_shape, splits.num_classes
    )
    hparams = Hyperparameters(batch_size=args.batch_size)
    trainer = Trainer(
        model, to_device(splits.train, plan), hparams, 1, plan, seed=0, compile_model=args.compile
    )
    steps = args.steps or trainer.steps_per_epoch
    order = torch.randperm(len(trainer.train_y), device=plan.device)

    def run_steps(count: int, first: int) -> float:
        started = time.perf_counter()
        for index in range(first, first + count):
            position = (index % trainer.steps_per_epoch) * trainer.batch_size
            batch = order[position : position + trainer.batch_size]
            trainer.step(trainer.train_x[batch], trainer.train_y[batch])
        if plan.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    run_steps(1, 0)
    startup = seconds_since_process_start()
    run_steps(args.warmup_steps, 1)
    elapsed = run_steps(steps, 1 + args.warmup_steps)
    probe = torch.from_numpy(splits.train[0][:2])
    step_flops = count_training_flops(copy.deepcopy(model).cpu().float(), probe)
    step_flops = step_flops * trainer.batch_size // len(probe)
    return {
        "device": plan.device.type,
        "threads": plan.threads,
        "family": args.family,
        "dataset": args.dataset,
        "params": count_parameters(model),
        "batch_size": trainer.batch_size,
        "timed_steps": steps,
        "images_per_second": round(steps * trainer.batch_size / elapsed, 1),
        "tflops_per_second": round(step_flops * steps / elapsed / 1e12, 4),
        "training_flops_per_step": step_flops,
        "epoch_seconds": round(elapsed / steps * trainer.steps_per_epoch, 3),
        "startup_seconds": round(startup, 3),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kubenas_trainer.bench", description=__doc__)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--family", default="chain", choices=["chain", "nb201-cell"])
    parser.add_argument("--architecture", default=json.dumps(REFERENCE_CHAIN))
    parser.add_argument("--dataset", default="synthetic:3x32x32:10:50000")
    parser.add_argument("--data-dir", default=str(default_data_dir()))
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=0, help="timed steps (default: one epoch)")
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="use torch.compile")
    parser.add_argument("--json", action="store_true", help="end with the figures as JSON")
    args = parser.parse_args(argv)
    result = run_bench(args)
    for key, value in result.items():
        print(f"{key:>24}: {value}")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
