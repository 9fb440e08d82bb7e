"""The training loop, built for throughput on small models.

The whole dataset lives on the device; batches are index slices of a per-epoch permutation, and
loss and accuracy accumulate in device tensors, so the host synchronises once per epoch rather
than once per step. The learning rate follows one cosine over ``schedule_epochs`` with a linear
warmup, a pure function of the global step, so training in stages (1, then 3, then 9 epochs)
matches one run to 9.
"""

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kubenas.api.builtin_trainer import Hyperparameters
from kubenas_trainer.device import DevicePlan

EVAL_BATCH = 2048
Batch = tuple[torch.Tensor, torch.Tensor]


def to_device(arrays: tuple[np.ndarray, np.ndarray], plan: DevicePlan) -> Batch:
    x = torch.from_numpy(arrays[0]).to(plan.device)
    if plan.channels_last and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, torch.from_numpy(arrays[1]).to(plan.device)


def cosine_with_warmup(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Learning-rate factor at a global step: linear warmup, then a cosine down to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


class Trainer:
    """Owns the model, optimizer and schedule of one trial; its state is the checkpoint."""

    def __init__(
        self,
        model: nn.Module,
        train: Batch,
        hparams: Hyperparameters,
        schedule_epochs: int,
        plan: DevicePlan,
        seed: int,
        compile_model: bool = False,
    ) -> None:
        self.plan = plan
        self.seed = seed
        self.train_x, self.train_y = train
        self.model = model.to(plan.device)
        if plan.channels_last and self.train_x.ndim == 4:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward: Callable[[torch.Tensor], torch.Tensor] = (
            torch.compile(self.model) if compile_model else self.model
        )
        self.batch_size = min(hparams.batch_size, len(self.train_y))
        self.steps_per_epoch = len(self.train_y) // self.batch_size  # drops a ragged last batch
        self.label_smoothing = hparams.label_smoothing
        self.optimizer = _optimizer(self.model, hparams)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            cosine_with_warmup(
                schedule_epochs * self.steps_per_epoch,
                round(hparams.warmup_epochs * self.steps_per_epoch),
            ),
        )
        self.epoch = 0

    def autocast(self) -> torch.autocast:
        return torch.autocast(
            self.plan.device.type, dtype=self.plan.autocast_dtype, enabled=self.plan.mixed_precision
        )

    def step(self, x: torch.Tensor, y: torch.Tensor) -> Batch:
        """One optimisation step; returns the batch's summed loss and correct count, on device."""
        with self.autocast():
            logits = self.forward(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach() * len(y), (logits.detach().argmax(dim=1) == y).sum()

    def train_epoch(self) -> dict[str, float]:
        """Train one epoch in an order fixed by (seed, epoch), so a resumed run replays it."""
        self.model.train()
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(len(self.train_y), generator=generator).to(self.plan.device)
        loss_sum = torch.zeros((), device=self.plan.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.plan.device)
        for step in range(self.steps_per_epoch):
            batch = order[step * self.batch_size : (step + 1) * self.batch_size]
            batch_loss, batch_correct = self.step(self.train_x[batch], self.train_y[batch])
            loss_sum += batch_loss
            correct += batch_correct
        self.epoch += 1
        seen = self.steps_per_epoch * self.batch_size
        return {"train_loss": loss_sum.item() / seen, "train_accuracy": correct.item() / seen}

    @torch.no_grad()
    def evaluate(self, data: Batch) -> tuple[float, float]:
        """Mean cross-entropy (without label smoothing) and accuracy over ``data``."""
        self.model.eval()
        x, y = data
        loss_sum = torch.zeros((), device=self.plan.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.plan.device)
        for start in range(0, len(y), EVAL_BATCH):
            batch_y = y[start : start + EVAL_BATCH]
            with self.autocast():
                logits = self.forward(x[start : start + EVAL_BATCH]).float()
            loss_sum += F.cross_entropy(logits, batch_y, reduction="sum")
            correct += (logits.argmax(dim=1) == batch_y).sum()
        return loss_sum.item() / len(y), correct.item() / len(y)

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])
        restore_rng_state(state["rng"])


def rng_state() -> dict[str, Any]:
    """torch's random state (and every GPU's), so a resumed run draws what a straight one would."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _optimizer(model: nn.Module, hparams: Hyperparameters) -> torch.optim.Optimizer:
    if hparams.optimizer == "adamw":
        return torch.optim.AdamW(
            model.parameters(), lr=hparams.learning_rate, weight_decay=hparams.weight_decay
        )
    return torch.optim.SGD(
        model.parameters(),
        lr=hparams.learning_rate,
        momentum=hparams.momentum,
        weight_decay=hparams.weight_decay,
        nesterov=hparams.momentum > 0,
    )
