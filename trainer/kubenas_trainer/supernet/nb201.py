"""β-DARTS over NAS-Bench-201 cells: one relaxed network whose every edge mixes every operation.

DARTS (Liu et al., ICLR 2019) relaxes each edge's choice into a softmax over its operations,
weighted by architecture parameters alpha that every cell shares, and alternates first-order
updates: alpha on a validation batch, then the weights on a training batch. Plain DARTS drifts
towards parameter-free cells; β-DARTS (Ye et al., CVPR 2022) adds the Beta-Decay regulariser,
the mean over edges of logsumexp(alpha_edge), to the alpha loss, its weight rising linearly.
Architectures are read off as the most probable cells, each scored with inherited weights.
"""

import hashlib
import heapq
import math
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from kubenas.api.builtin_trainer import Hyperparameters
from kubenas.api.vocabulary import NB201_EDGES, NB201_FAMILY, NB201_NODES, nb201_edge_name
from kubenas.space import Assignment, SearchSpace
from kubenas_trainer.config import ConfigError
from kubenas_trainer.data import Splits
from kubenas_trainer.device import DevicePlan
from kubenas_trainer.models.layers import Classifier, Geometry
from kubenas_trainer.models.nb201 import ReductionBlock, _edge_op
from kubenas_trainer.supernet.batchnorm import recalibrate_batch_norm, statistics_kept
from kubenas_trainer.train import (
    EVAL_BATCH,
    Batch,
    _optimizer,
    cosine_with_warmup,
    restore_rng_state,
    rng_state,
    to_device,
)

# DARTS's architecture optimizer, which β-DARTS keeps, tuned for its schedule: 50 epochs of
# CIFAR-10's 25,000-image search split at batch 64, about 19,500 alpha steps. A shorter
# schedule gets a proportionally larger step, so alpha can travel as far (capped).
ALPHA_LEARNING_RATE = 3e-4
REFERENCE_ALPHA_STEPS = 50 * 390
MAX_ALPHA_LEARNING_RATE = 3e-2
ALPHA_BETAS = (0.5, 0.999)
ALPHA_WEIGHT_DECAY = 1e-3
ALPHA_INIT_SCALE = 1e-3
# The Beta-Decay weight reached at the end of the schedule: β-DARTS's reference raises it as
# 50 * epoch / 100 over its 50 search epochs, so to 25.
BETA_DECAY_MAX = 25.0
# DARTS and β-DARTS clip the supernet's weight gradients at this norm.
WEIGHT_GRAD_CLIP = 5.0
# top(k) scores this many of the most probable architectures per architecture it returns, and
# at least MIN_POOL: on a small dataset alpha stays near uniform, and then the inherited
# weights, not alpha, tell the candidates apart.
CANDIDATES_PER_PICK = 4
MIN_POOL = 100
NONE_OP = "none"

# The operation of every edge, in NB201_EDGES order: one path through the supernet.
CellPath = tuple[str, ...]


class _MixedEdge(nn.Module):
    """One edge's candidate operations, built exactly as the standalone network builds them;
    ``none`` has no module, since it contributes zero."""

    def __init__(self, operations: Sequence[str], channels: int, geometry: Geometry) -> None:
        super().__init__()
        self.ops = nn.ModuleDict(
            {op: _edge_op(op, channels, geometry) for op in operations if op != NONE_OP}
        )
        self.weight_index = [list(operations).index(op) for op in self.ops]

    def mixed(self, x: torch.Tensor, weights: torch.Tensor) -> list[torch.Tensor]:
        """The terms of Σ softmax(alpha)_o · op_o(x), given this edge's row of softmax(alpha)."""
        return [
            weights[i] * op(x) for i, op in zip(self.weight_index, self.ops.values(), strict=True)
        ]

    def chosen(self, x: torch.Tensor, op: str) -> list[torch.Tensor]:
        """The single term of the chosen operation (none for ``none``), computed alone."""
        return [] if op == NONE_OP else [self.ops[op](x)]


class _MixedCell(nn.Module):
    """A NB201 cell of mixed edges: node j sums the terms of every edge into it."""

    def __init__(self, operations: Sequence[str], channels: int, geometry: Geometry) -> None:
        super().__init__()
        self.edges = nn.ModuleList(_MixedEdge(operations, channels, geometry) for _ in NB201_EDGES)

    def relaxed(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return self._nodes(x, lambda e, state: self._edge(e).mixed(state, weights[e]))

    def path(self, x: torch.Tensor, path: CellPath) -> torch.Tensor:
        return self._nodes(x, lambda e, state: self._edge(e).chosen(state, path[e]))

    def _edge(self, index: int) -> _MixedEdge:
        return cast(_MixedEdge, self.edges[index])

    def _nodes(
        self, x: torch.Tensor, terms: Callable[[int, torch.Tensor], list[torch.Tensor]]
    ) -> torch.Tensor:
        """Sum in the standalone Cell's order, so a path computes exactly what it computes."""
        states = [x]
        for node in range(1, NB201_NODES):
            incoming = [
                term
                for e, (target, source) in enumerate(NB201_EDGES)
                if target == node
                for term in terms(e, states[source])
            ]
            states.append(sum(incoming[1:], incoming[0]) if incoming else torch.zeros_like(x))
        return states[-1]


class _Supernetwork(nn.Module):
    """``build_nb201``'s skeleton with mixed cells; ``layers`` is indexed as its Sequential."""

    def __init__(
        self,
        operations: Sequence[str],
        in_channels: int,
        geometry: Geometry,
        num_classes: int,
        channels: int,
        cells: int,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [*geometry.conv_bn(in_channels, channels, 3)]
        for stage in range(3):
            if stage > 0:
                layers.append(ReductionBlock(channels, channels * 2, geometry))
                channels, geometry = channels * 2, geometry.reduced()
            layers.extend(_MixedCell(operations, channels, geometry) for _ in range(cells))
        layers += [geometry.batch_norm(channels), nn.ReLU(), Classifier(channels, num_classes)]
        self.layers = nn.ModuleList(layers)

    def relaxed(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return self._through(x, lambda cell, h: cell.relaxed(h, weights))

    def path(self, x: torch.Tensor, path: CellPath) -> torch.Tensor:
        return self._through(x, lambda cell, h: cell.path(h, path))

    def _through(
        self, x: torch.Tensor, cell_forward: Callable[[_MixedCell, torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        for layer in self.layers:
            x = cell_forward(layer, x) if isinstance(layer, _MixedCell) else layer(x)
        return x


def alpha_learning_rate(total_steps: int) -> float:
    """DARTS's alpha step, scaled up for a schedule shorter than DARTS's own."""
    scale = max(1.0, REFERENCE_ALPHA_STEPS / max(1, total_steps))
    return min(MAX_ALPHA_LEARNING_RATE, ALPHA_LEARNING_RATE * scale)


def build_beta_darts(
    space: SearchSpace,
    splits: Splits,
    hparams: Hyperparameters,
    schedule_epochs: int,
    plan: DevicePlan,
    seed: int,
) -> "BetaDartsSupernet":
    """A β-DARTS supernet over ``space``'s cell operations; weights and alpha drawn from ``seed``.

    The macro skeleton is not searched: ``stem_channels`` and ``cells_per_stage`` must each have
    a single value.
    """
    if space.family != NB201_FAMILY:
        raise ConfigError(f"beta-darts searches {NB201_FAMILY} spaces, not {space.family}")
    channels, cells = (_single_value(space, name) for name in ("stem_channels", "cells_per_stage"))
    if len(splits.val[1]) == 0:
        raise ConfigError("beta-darts needs a non-empty validation split for its alpha steps")
    # Every edge of an nb201-cell space has the same choices: the spec's operations.
    edge = space.by_name()[nb201_edge_name(*NB201_EDGES[0])]
    operations = tuple(str(op) for op in edge.grid(2))
    in_channels, *spatial = splits.sample_shape
    torch.manual_seed(seed)
    network = _Supernetwork(
        operations, in_channels, Geometry(tuple(spatial)), splits.num_classes, channels, cells
    )
    alpha = ALPHA_INIT_SCALE * torch.randn(len(NB201_EDGES), len(operations))
    return BetaDartsSupernet(
        space, operations, network, alpha, splits, hparams, schedule_epochs, plan, seed
    )


def _single_value(space: SearchSpace, name: str) -> int:
    choices = space.by_name()[name].grid(2)
    if len(choices) != 1:
        raise ConfigError(
            f"beta-darts searches cells only: {name} must have exactly one value, got {choices}"
        )
    return int(choices[0])


class BetaDartsSupernet:
    """A β-DARTS supernet being trained (a :class:`~kubenas_trainer.supernet.Supernet`).

    Its architecture distribution is the product over edges of softmax(alpha_edge).
    """

    def __init__(
        self,
        space: SearchSpace,
        operations: tuple[str, ...],
        network: _Supernetwork,
        alpha: torch.Tensor,
        splits: Splits,
        hparams: Hyperparameters,
        schedule_epochs: int,
        plan: DevicePlan,
        seed: int,
    ) -> None:
        self.space = space
        self.operations = operations
        self.plan = plan
        self.seed = seed
        self.train_x, self.train_y = to_device(splits.train, plan)
        self.val_x, self.val_y = to_device(splits.val, plan)
        self.network = network.to(plan.device)
        if plan.channels_last and self.train_x.ndim == 4:
            self.network = self.network.to(memory_format=torch.channels_last)
        self.alpha = nn.Parameter(alpha.to(plan.device))
        self.batch_size = min(hparams.batch_size, len(self.train_y))
        self.val_batch_size = min(hparams.batch_size, len(self.val_y))
        self.steps_per_epoch = len(self.train_y) // self.batch_size  # drops a ragged last batch
        self.total_steps = schedule_epochs * self.steps_per_epoch
        self.label_smoothing = hparams.label_smoothing
        self.weight_optimizer = _optimizer(self.network, hparams)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.weight_optimizer,
            cosine_with_warmup(
                self.total_steps, round(hparams.warmup_epochs * self.steps_per_epoch)
            ),
        )
        self.alpha_optimizer = torch.optim.Adam(
            [self.alpha],
            lr=alpha_learning_rate(self.total_steps),
            betas=ALPHA_BETAS,
            weight_decay=ALPHA_WEIGHT_DECAY,
        )
        self._epoch = 0

    @property
    def epoch(self) -> int:
        return self._epoch

    def train_epoch(self) -> dict[str, float]:
        """Alternate an alpha step on a validation batch and a weight step on a training batch, in
        an order fixed by (seed, epoch) so a resumed run replays it; val_* are the alpha batches'
        figures before their step."""
        self.network.train()
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self._epoch)
        train_order = torch.randperm(len(self.train_y), generator=generator).to(self.plan.device)
        val_order = self._val_order(generator)
        sums = torch.zeros(4, device=self.plan.device)  # train loss, correct; val loss, correct
        for step in range(self.steps_per_epoch):
            picked = val_order[step * self.val_batch_size : (step + 1) * self.val_batch_size]
            global_step = self._epoch * self.steps_per_epoch + step
            val_loss, val_correct = self._alpha_step(
                self.val_x[picked], self.val_y[picked], global_step
            )
            picked = train_order[step * self.batch_size : (step + 1) * self.batch_size]
            train_loss, train_correct = self._weight_step(
                self.train_x[picked], self.train_y[picked]
            )
            sums += torch.stack([train_loss, train_correct, val_loss, val_correct])
        self._epoch += 1
        train_loss, train_correct, val_loss, val_correct = sums.tolist()
        seen, val_seen = (
            self.steps_per_epoch * size for size in (self.batch_size, self.val_batch_size)
        )
        return {
            "train_loss": train_loss / seen,
            "train_accuracy": train_correct / seen,
            "val_loss": val_loss / val_seen,
            "val_accuracy": val_correct / val_seen,
        }

    def derived(self) -> Assignment:
        return self._assignment(self.alpha.detach().argmax(dim=-1).tolist())

    def entropy(self) -> float:
        log_p = F.log_softmax(self.alpha.detach().double(), dim=-1)
        return float(-(log_p.exp() * log_p).sum(dim=-1).mean())

    def score(self, assignments: Sequence[Assignment]) -> list[float]:
        """Validation accuracy of each path, its batch-norm statistics re-estimated on training
        batches drawn from (seed, architecture); the supernet's own statistics are put back."""
        was_training = self.network.training
        try:
            with statistics_kept(self.network):
                return [self._score(assignment) for assignment in assignments]
        finally:
            self.network.train(was_training)

    def top(self, k: int) -> list[tuple[Assignment, float]]:
        """Score the most probable max(4k, MIN_POOL) architectures (at most the space); return
        the best k by score, ties going to the more probable."""
        space_size = len(self.operations) ** len(NB201_EDGES)
        pool = self.most_probable(min(max(CANDIDATES_PER_PICK * k, MIN_POOL), space_size))
        scores = self.score([assignment for assignment, _ in pool])
        ranked = sorted(zip(pool, scores, strict=True), key=lambda item: (-item[1], -item[0][1]))
        return [(assignment, score) for (assignment, _), score in ranked[:k]]

    def most_probable(self, count: int) -> list[tuple[Assignment, float]]:
        """The ``count`` most probable architectures with their log-probabilities, best first:
        a best-first walk over per-edge choice ranks, never the whole space."""
        log_p = F.log_softmax(self.alpha.detach().double().cpu(), dim=-1)
        ranked_log_p, ranked_ops = (
            t.tolist() for t in log_p.sort(dim=-1, descending=True, stable=True)
        )

        def log_probability(ranks: tuple[int, ...]) -> float:
            return math.fsum(ranked_log_p[e][rank] for e, rank in enumerate(ranks))

        start = (0,) * len(NB201_EDGES)
        frontier = [(-log_probability(start), start)]
        reached = {start}
        found: list[tuple[Assignment, float]] = []
        while frontier and len(found) < count:
            negated, ranks = heapq.heappop(frontier)
            found.append(
                (self._assignment([ranked_ops[e][r] for e, r in enumerate(ranks)]), -negated)
            )
            for e in range(len(ranks)):
                successor = (*ranks[:e], ranks[e] + 1, *ranks[e + 1 :])
                if successor[e] < len(self.operations) and successor not in reached:
                    reached.add(successor)
                    heapq.heappush(frontier, (-log_probability(successor), successor))
        return found

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self._epoch,
            "network": self.network.state_dict(),
            "alpha": self.alpha.detach().clone(),
            "weight_optimizer": self.weight_optimizer.state_dict(),
            "alpha_optimizer": self.alpha_optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.network.load_state_dict(state["network"])
        with torch.no_grad():
            self.alpha.copy_(state["alpha"])
        self.weight_optimizer.load_state_dict(state["weight_optimizer"])
        self.alpha_optimizer.load_state_dict(state["alpha_optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self._epoch = int(state["epoch"])
        restore_rng_state(state["rng"])

    def _autocast(self) -> torch.autocast:
        return torch.autocast(
            self.plan.device.type, dtype=self.plan.autocast_dtype, enabled=self.plan.mixed_precision
        )

    def _val_order(self, generator: torch.Generator) -> torch.Tensor:
        """Enough shuffled passes over the (smaller) validation split for one alpha batch a step."""
        needed = self.steps_per_epoch * self.val_batch_size
        passes = -(-needed // len(self.val_y))
        orders = [torch.randperm(len(self.val_y), generator=generator) for _ in range(passes)]
        return torch.cat(orders).to(self.plan.device)

    def _beta_decay_weight(self, global_step: int) -> float:
        return BETA_DECAY_MAX * min(1.0, global_step / max(1, self.total_steps))

    def _alpha_step(self, x: torch.Tensor, y: torch.Tensor, global_step: int) -> Batch:
        """First-order DARTS alpha step with the Beta-Decay term; the weights are left untouched."""
        with self._autocast():
            logits = self.network.relaxed(x, F.softmax(self.alpha, dim=-1))
            loss = F.cross_entropy(logits.float(), y)
        beta_decay = torch.logsumexp(self.alpha, dim=-1).mean()
        regularised = loss + self._beta_decay_weight(global_step) * beta_decay
        self.alpha_optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(regularised, inputs=[self.alpha])
        self.alpha_optimizer.step()
        return loss.detach() * len(y), (logits.detach().argmax(dim=1) == y).sum()

    def _weight_step(self, x: torch.Tensor, y: torch.Tensor) -> Batch:
        with self._autocast():
            logits = self.network.relaxed(x, F.softmax(self.alpha.detach(), dim=-1))
            loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
        self.weight_optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        nn.utils.clip_grad_norm_(self.network.parameters(), WEIGHT_GRAD_CLIP)
        self.weight_optimizer.step()
        self.scheduler.step()
        return loss.detach() * len(y), (logits.detach().argmax(dim=1) == y).sum()

    @torch.no_grad()
    def _score(self, assignment: Assignment) -> float:
        path = self._path(assignment)
        key = f"{self.seed}:{self.space.key(assignment)}".encode()
        generator = torch.Generator().manual_seed(
            int.from_bytes(hashlib.sha256(key).digest()[:8], "big")
        )

        def forward(x: torch.Tensor) -> torch.Tensor:
            with self._autocast():
                return self.network.path(x, path)

        recalibrate_batch_norm(self.network, forward, self.train_x, self.batch_size, generator)
        self.network.eval()
        correct = torch.zeros((), dtype=torch.int64, device=self.plan.device)
        for start in range(0, len(self.val_y), EVAL_BATCH):
            logits = forward(self.val_x[start : start + EVAL_BATCH])
            correct += (logits.argmax(dim=1) == self.val_y[start : start + EVAL_BATCH]).sum()
        return correct.item() / len(self.val_y)

    def _path(self, assignment: Assignment) -> CellPath:
        problems = self.space.validate(assignment)
        if problems:
            raise ValueError(f"not an architecture of this space: {'; '.join(problems)}")
        return tuple(str(assignment[nb201_edge_name(*edge)]) for edge in NB201_EDGES)

    def _assignment(self, op_indices: Sequence[int]) -> Assignment:
        chosen = {
            nb201_edge_name(*edge): self.operations[index]
            for edge, index in zip(NB201_EDGES, op_indices, strict=True)
        }
        return self.space.complete(chosen, None)
