"""Batch-norm statistics for one path through a supernet.

A supernet's running statistics mix every path it trained; a sub-network read off it is only
judged fairly after its own statistics are re-estimated on training data (SPOS, Guo et al. 2020).
"""

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

RECALIBRATION_BATCHES = 4


@torch.no_grad()
def recalibrate_batch_norm(
    model: nn.Module,
    forward: Callable[[torch.Tensor], torch.Tensor],
    train_x: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    batches: int = RECALIBRATION_BATCHES,
) -> None:
    """Reset every batch-norm layer of ``model`` and re-estimate its statistics as the plain
    mean over ``batches`` random training batches pushed through ``forward`` (one path)."""
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches below
    was_training = model.training
    model.train()
    for _ in range(batches):
        picked = torch.randint(len(train_x), (min(batch_size, len(train_x)),), generator=generator)
        forward(train_x[picked.to(train_x.device)])
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.train(was_training)


@contextlib.contextmanager
def statistics_kept(model: nn.Module) -> Iterator[None]:
    """Put every buffer of ``model`` (its batch-norm statistics) back as it was, so scoring
    paths in between never changes the supernet's later training."""
    saved = [buffer.clone() for buffer in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, kept in zip(model.buffers(), saved, strict=True):
                buffer.copy_(kept)
