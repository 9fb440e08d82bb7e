"""Where a trial computes and how: the device, mixed precision, memory layout and CPU threads."""

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class DevicePlan:
    """bf16 autocast and channels-last only pay off on a GPU; on CPU everything stays fp32."""

    device: torch.device
    mixed_precision: bool
    channels_last: bool
    threads: int

    @property
    def autocast_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.mixed_precision else torch.float32


def plan_device(requested: str) -> DevicePlan:
    """Pick the device (``auto``: CUDA when available) and configure torch for it."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device cuda requested but CUDA is not available")
    use_cuda = requested == "cuda" or (requested == "auto" and torch.cuda.is_available())
    threads = cpu_thread_budget()
    torch.set_num_threads(threads)
    if use_cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return DevicePlan(torch.device("cuda"), True, True, threads)
    return DevicePlan(torch.device("cpu"), False, False, threads)


def cpu_thread_budget() -> int:
    """Threads this process may use: ``OMP_NUM_THREADS`` when set (the local runner sets it when
    trials share the machine), else the CPUs it may run on, capped by a cgroup CPU quota."""
    requested = os.environ.get("OMP_NUM_THREADS", "")
    if requested.isdigit() and int(requested) > 0:
        return int(requested)
    available = len(os.sched_getaffinity(0))
    quota = _cgroup_cpu_quota()
    return max(1, min(available, quota)) if quota else available


def _cgroup_cpu_quota() -> int | None:
    """The container's CPU limit in whole CPUs (rounded up), from cgroup v2's ``cpu.max``."""
    try:
        limit, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    return None if limit == "max" else math.ceil(int(limit) / int(period))
