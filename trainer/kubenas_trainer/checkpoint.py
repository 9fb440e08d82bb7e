"""Checkpoints that a resumed trial continues from exactly, written so a crash never leaves a
half-written file where the runtime expects a good one."""

import os
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(directory: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``directory/checkpoint.pt`` via a temporary file and an atomic rename."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CHECKPOINT_NAME
    partial = directory / f".{CHECKPOINT_NAME}.{os.getpid()}.partial"
    torch.save(state, partial)
    os.replace(partial, path)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load onto the CPU (RNG states must live there; ``load_state_dict`` moves the rest), and
    tensors and plain values only (``weights_only``): a checkpoint is data, not code."""
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return state
