"""Checkpoints that a resumed trial continues from exactly, written so a crash never leaves a
half-written file where the runtime expects a good one."""

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from kubenas_trainer.config import ConfigError

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


def fingerprint(identity: dict[str, Any]) -> str:
    """A digest of what a checkpoint's weights depend on, so a checkpoint of other settings is
    never continued."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def resume_state(
    resume_from: Path | None, checkpoint_dir: Path | None, expected: str, what: str
) -> dict[str, Any] | None:
    """The state to continue from: ``resume_from`` (which must carry the ``expected``
    fingerprint), else the checkpoint an interrupted run of the same trial left in
    ``checkpoint_dir`` (a killed or preempted pod: its Job's next pod gets the same folder;
    ignored unless it matches), else None. ``what`` names the network in messages."""
    if resume_from is not None:
        state = load_checkpoint(resume_from)
        if state.get("fingerprint") != expected:
            raise ConfigError(f"resume_from {resume_from}: not this {what}'s checkpoint")
        return state
    if checkpoint_dir is None or not (checkpoint_dir / CHECKPOINT_NAME).is_file():
        return None
    path = checkpoint_dir / CHECKPOINT_NAME
    state = load_checkpoint(path)
    if state.get("fingerprint") != expected:
        print(
            f"kubenas_trainer: {path} is not this {what}'s checkpoint (other settings); "
            "training from scratch",
            file=sys.stderr,
        )
        return None
    print(f"kubenas_trainer: continuing the {what} from {path}", file=sys.stderr)
    return state
