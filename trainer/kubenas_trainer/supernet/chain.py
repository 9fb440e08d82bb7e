"""Single-path one-shot (SPOS, Guo et al. ECCV 2020) supernet for the ``chain`` family.

Every training step trains one path drawn uniformly from the space, so all sub-networks share
weights without coupling their choices; afterwards an evolutionary search scores sub-networks
with the inherited weights (validation accuracy, batch-norm statistics recalibrated per
sub-network) and keeps the best. Only depths and block operations are searched: each stage's
width must be fixed, since weights are not shared across widths.
"""

import hashlib
import math
import random
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from torch import nn

from kubenas.api.builtin_trainer import Hyperparameters
from kubenas.api.vocabulary import CHAIN_FAMILY
from kubenas.space import Assignment, Categorical, SearchSpace
from kubenas_trainer.config import ConfigError
from kubenas_trainer.data import Splits
from kubenas_trainer.device import DevicePlan
from kubenas_trainer.models.chain import block
from kubenas_trainer.models.layers import Classifier, Geometry
from kubenas_trainer.supernet.batchnorm import recalibrate_batch_norm, statistics_kept
from kubenas_trainer.train import Batch, Trainer, to_device

# Evolutionary search, scaled down from SPOS's (population 50, 20 generations) to the small
# spaces and budgets of a trial: a space of at most EVALUATIONS architectures is scored whole.
POPULATION = 20
PARENTS = 10
MUTANTS = 10
CROSSOVERS = 10
GENERATIONS = 10
EVALUATIONS = 200
# Attempts to draw a child not yet seen, per child wanted, before a generation stops short.
ATTEMPTS_PER_CHILD = 10
# The per-epoch check behind derived(): this many seeded random paths plus the previous best.
DERIVED_SAMPLES = 8
# Batch size of the batch-norm recalibration: its 4 batches re-estimate the statistics from
# about 500 training samples whatever the training batch size, cheaply enough on a CPU to score
# hundreds of sub-networks.
RECALIBRATION_BATCH_SIZE = 128

Blocks = list[list[str]]


# The block that passes its input through: a stage's identity blocks change nothing.
IDENTITY = "identity"


def stage_blocks(space: SearchSpace, assignment: Assignment) -> Blocks:
    """The block operations of each stage an assignment's network runs, stage by stage."""
    stages = space.to_architecture(space.active(assignment))["stages"]
    return [[str(op) for op in stage["blocks"]] for stage in stages]


def stable_seed(*parts: object) -> int:
    """A 64-bit seed from any values, stable across processes (unlike ``hash``)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big")


class ChainSupernet(nn.Module):
    """The chain skeleton at fixed widths with every candidate operation in every block slot.

    ``blocks`` (set before each forward) picks the path: a stage of depth d runs its first d
    slots, and a path holds exactly the layers of the standalone network
    (:func:`kubenas_trainer.models.chain.build_chain`).
    """

    def __init__(
        self,
        stem_channels: int,
        stages: Sequence[tuple[int, int, Sequence[str]]],
        in_channels: int,
        geometry: Geometry,
        num_classes: int,
    ) -> None:
        """``stages`` are (width, block slots, candidate operations) per stage."""
        super().__init__()
        self.stem = nn.Sequential(*geometry.conv_bn(in_channels, stem_channels, 3), nn.ReLU())
        entries: list[nn.Module] = []
        self.slots = nn.ModuleDict()
        channels = stem_channels
        for s, (width, slots, operations) in enumerate(stages):
            if s > 0:
                stride = geometry.reduction_stride()
                conv_bn = geometry.conv_bn(channels, width, 3, stride=stride)
                entries.append(nn.Sequential(*conv_bn, nn.ReLU()))
                geometry = geometry.reduced()
            elif width != channels:
                entries.append(nn.Sequential(*geometry.conv_bn(channels, width, 1), nn.ReLU()))
            else:
                entries.append(nn.Identity())
            for b in range(slots):
                for op in operations:
                    self.slots[self.slot_name(s, b, op)] = block(op, width, geometry)
            channels = width
        self.entries = nn.ModuleList(entries)
        self.head = nn.Sequential(nn.ReLU(), Classifier(channels, num_classes))
        self.blocks: Blocks = [[] for _ in stages]

    @staticmethod
    def slot_name(stage: int, slot: int, op: str) -> str:
        return f"stage{stage}_block{slot}_{op}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for s, (entry, ops) in enumerate(zip(self.entries, self.blocks, strict=True)):
            x = entry(x)
            for b, op in enumerate(ops):
                x = self.slots[self.slot_name(s, b, op)](x)
        logits: torch.Tensor = self.head(x)
        return logits


class PathSamplingTrainer(Trainer):
    """The built-in training loop, but each step trains one path drawn uniformly per choice,
    seeded by (seed, global step) so a resumed run replays the same paths."""

    def __init__(
        self,
        network: ChainSupernet,
        space: SearchSpace,
        train: Batch,
        hparams: Hyperparameters,
        schedule_epochs: int,
        plan: DevicePlan,
        seed: int,
    ) -> None:
        super().__init__(network, train, hparams, schedule_epochs, plan, seed)
        self.network = network
        self.space = space

    def step(self, x: torch.Tensor, y: torch.Tensor) -> Batch:
        # The scheduler steps once per optimisation step and is checkpointed: its count is the
        # global step.
        global_step = self.scheduler.last_epoch
        path = self.space.sample(random.Random(stable_seed(self.seed, "path", global_step)))
        self.network.blocks = stage_blocks(self.space, path)
        return super().step(x, y)


class SposSupernet:
    """A chain supernet trained by SPOS; implements :class:`kubenas_trainer.supernet.Supernet`."""

    def __init__(
        self, space: SearchSpace, network: ChainSupernet, trainer: PathSamplingTrainer, val: Batch
    ) -> None:
        self.space = space
        self.network = network
        self.trainer = trainer
        self.val = val
        self.seed = trainer.seed
        # Scores under the current weights, by key; emptied whenever the weights change.
        self._scores: dict[str, float] = {}
        self._best: Assignment | None = None
        self._best_epoch = -1

    @property
    def epoch(self) -> int:
        return self.trainer.epoch

    def train_epoch(self) -> dict[str, float]:
        """One epoch of single-path steps; the accuracy is that of the paths sampled."""
        metrics = self.trainer.train_epoch()
        self._scores.clear()
        return metrics

    def derived(self) -> Assignment:
        """A cheap estimate, checked once per epoch: the best of ``DERIVED_SAMPLES`` random
        paths seeded by (seed, epoch) and the previous epoch's pick, all scored afresh; the
        thorough search is :meth:`top`."""
        if self._best is None or self._best_epoch != self.epoch:
            rng = random.Random(stable_seed(self.seed, "derived", self.epoch))
            candidates = [self.space.sample(rng) for _ in range(DERIVED_SAMPLES)]
            if self._best is not None:
                candidates.append(self._best)
            scores = self.score(candidates)
            self._best = candidates[max(range(len(candidates)), key=scores.__getitem__)]
            self._best_epoch = self.epoch
        return dict(self._best)

    def entropy(self) -> float:
        """SPOS never learns a distribution; it samples every block operation uniformly, so
        this is ln(number of operations) averaged over the multi-valued categorical
        parameters, the same every epoch."""
        counts = [
            len(p.choices)
            for p in self.space.params
            if isinstance(p, Categorical) and len(p.choices) > 1
        ]
        return sum(math.log(count) for count in counts) / len(counts) if counts else 0.0

    def score(self, assignments: Sequence[Assignment]) -> list[float]:
        """Validation accuracy per sub-network, after recalibrating batch norm on training data
        with a generator seeded by (seed, key); the supernet's own statistics are put back."""
        keys = [self.space.key(a) for a in assignments]
        pairs = zip(keys, assignments, strict=True)
        unscored = {key: a for key, a in pairs if key not in self._scores}
        if unscored:
            with statistics_kept(self.network):
                for key, assignment in unscored.items():
                    self._scores[key] = self._score_one(key, assignment)
        return [self._scores[key] for key in keys]

    def _score_one(self, key: str, assignment: Assignment) -> float:
        self.network.blocks = stage_blocks(self.space, assignment)
        generator = torch.Generator().manual_seed(stable_seed(self.seed, "recalibrate", key))

        def forward(x: torch.Tensor) -> torch.Tensor:
            with self.trainer.autocast():
                logits: torch.Tensor = self.network(x)
            return logits

        recalibrate_batch_norm(
            self.network, forward, self.trainer.train_x, RECALIBRATION_BATCH_SIZE, generator
        )
        return self.trainer.evaluate(self.val)[1]

    def top(self, k: int) -> list[tuple[Assignment, float]]:
        """Every architecture when the space has at most ``max(EVALUATIONS, k)``, else an
        evolutionary search of that many; the ``k`` best distinct ones, best first."""
        budget = max(EVALUATIONS, k)
        size = self.space.size()
        if size is not None and size <= budget:
            candidates = list(self.space.grid(2))
            ranked = sorted(
                zip(candidates, self.score(candidates), strict=True), key=lambda c: -c[1]
            )
        else:
            ranked = self._evolve(budget)
        return self._distinct_networks(ranked)[:k]

    def _distinct_networks(
        self, ranked: Sequence[tuple[Assignment, float]]
    ) -> list[tuple[Assignment, float]]:
        """The first of each set of assignments that build the same network: identity blocks
        add nothing, so ``[conv3x3]`` and ``[conv3x3, identity]`` would waste a candidate."""
        seen: set[str] = set()
        kept = []
        for assignment, score in ranked:
            network = repr(
                [
                    [op for op in ops if op != IDENTITY]
                    for ops in stage_blocks(self.space, assignment)
                ]
            )
            if network not in seen:
                seen.add(network)
                kept.append((assignment, score))
        return kept

    def _evolve(self, budget: int) -> list[tuple[Assignment, float]]:
        """SPOS's search: a random population, then generations of mutants and uniform
        crossovers of the best so far, each architecture scored once; all found, best first."""
        rng = random.Random(stable_seed(self.seed, "evolve", self.epoch))
        found: dict[str, tuple[Assignment, float]] = {}

        def add(draw: Callable[[], Assignment], wanted: int) -> None:
            fresh: dict[str, Assignment] = {}
            for _ in range(wanted * ATTEMPTS_PER_CHILD):
                if len(fresh) >= min(wanted, budget - len(found)):
                    break
                candidate = self.space.active(draw())
                key = self.space.key(candidate)
                if key not in found:
                    fresh.setdefault(key, candidate)
            scores = self.score(list(fresh.values()))
            for (key, candidate), score in zip(fresh.items(), scores, strict=True):
                found[key] = (candidate, score)

        def ranked() -> list[tuple[Assignment, float]]:
            return sorted(found.values(), key=lambda c: -c[1])

        add(partial(self.space.sample, rng), POPULATION)
        for _ in range(GENERATIONS):
            parents = [a for a, _ in ranked()[:PARENTS]]
            add(partial(self._mutant, parents, rng), MUTANTS)
            if len(parents) > 1:
                add(partial(self._crossover, parents, rng), CROSSOVERS)
        return ranked()

    def _mutant(self, parents: list[Assignment], rng: random.Random) -> Assignment:
        return self.space.mutate(rng.choice(parents), rng)

    def _crossover(self, parents: list[Assignment], rng: random.Random) -> Assignment:
        """Two parents' parameters, each from either with equal chance (from the other when the
        chosen one lacks it), completed so the conditional parameters fit the child's depths."""
        a, b = rng.sample(parents, 2)
        child: Assignment = {}
        for param in self.space.params:
            chosen, other = (a, b) if rng.random() < 0.5 else (b, a)
            source = chosen if param.name in chosen else other
            if param.name in source:
                child[param.name] = source[param.name]
        return self.space.complete(child, rng)

    def state_dict(self) -> dict[str, Any]:
        return {
            "trainer": self.trainer.state_dict(),
            "best": self._best,
            "best_epoch": self._best_epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.trainer.load_state_dict(state["trainer"])
        self._best = state["best"]
        self._best_epoch = int(state["best_epoch"])
        self._scores.clear()


def build_spos(
    space: SearchSpace,
    splits: Splits,
    hparams: Hyperparameters,
    schedule_epochs: int,
    plan: DevicePlan,
    seed: int,
) -> SposSupernet:
    """A freshly initialised (seeded) SPOS supernet over a chain ``space``; raises ConfigError
    for another family or a stage with more than one width."""
    if space.family != CHAIN_FAMILY:
        raise ConfigError(f"a spos supernet needs a {CHAIN_FAMILY} space, got {space.family}")
    params = space.by_name()
    skeleton = space.to_architecture(space.complete({}, None))
    stages: list[tuple[int, int, list[str]]] = []
    for s in range(len(skeleton["stages"])):
        widths = params[f"stage{s}_width"].grid(2)
        if len(widths) != 1:
            raise ConfigError(
                f"stage{s}_width: a spos supernet shares weights at one width per stage, "
                f"got {len(widths)} widths {widths}"
            )
        slots = max(int(depth) for depth in params[f"stage{s}_depth"].grid(2))
        operations = [str(op) for op in params[f"stage{s}_block0_op"].grid(2)]
        stages.append((int(widths[0]), slots, operations))
    in_channels, *spatial = splits.sample_shape
    torch.manual_seed(seed)
    network = ChainSupernet(
        int(skeleton["stem_channels"]),
        stages,
        in_channels,
        Geometry(tuple(spatial)),
        splits.num_classes,
    )
    train, val = to_device(splits.train, plan), to_device(splits.val, plan)
    trainer = PathSamplingTrainer(network, space, train, hparams, schedule_epochs, plan, seed)
    return SposSupernet(space, network, trainer, val)
