"""Predictor-guided search in the spirit of BANANAS (White et al., AAAI 2021).

A Gaussian process over one-hot architecture encodings (its RBF kernel is an exponentiated
Hamming distance between architectures) predicts each candidate's objective; candidates are
mutations of the best architectures seen, plus random ones. The model is fitted from the records
on every call.

The proposal is chosen by independent Thompson sampling, as BANANAS does: one draw from each
candidate's posterior, and the highest draw wins. An upper confidence bound (``ucb``, the mean
plus ``exploration`` standard deviations) was the only choice before; on the NAS-Bench-201
CIFAR-10 table it let a third of the searches spend 200 queries inside one basin, where every
mutation of the best architectures stays and a far-away candidate's bound never wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from kubenas.space import Assignment, Categorical, SearchSpace
from kubenas.strategies._base import Observation, Strategy, fitness, trial_rng
from kubenas.strategies.prior import Prior

# The GP is fitted on at most this many observations (the best half and the latest half),
# which keeps a call within milliseconds however long the experiment has run.
_MAX_TRAINING_POINTS = 600
_LENGTHSCALES = (0.5, 1.0, 1.5, 2.0, 3.0)
_NOISE = (1e-3, 1e-2, 1e-1)


class _Encoder:
    """One-hot for categorical parameters, the unit interval for numeric ones; inactive = 0."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.slots: list[tuple[str, object | None]] = []
        for p in space.params:
            if isinstance(p, Categorical):
                self.slots.extend((p.name, c) for c in p.choices)
            else:
                self.slots.append((p.name, None))
        self.numeric = {p.name: p for p in space.params if not isinstance(p, Categorical)}

    def __call__(self, assignment: Assignment) -> np.ndarray:
        active = self.space.active(assignment)
        row = np.zeros(len(self.slots))
        for i, (name, choice) in enumerate(self.slots):
            if name not in active:
                continue
            if choice is None:
                p = self.numeric[name]
                low, high = float(p.low), float(p.high)
                row[i] = (float(active[name]) - low) / (high - low) if high > low else 0.0
            else:
                row[i] = 1.0 if active[name] == choice else 0.0
        return row


def _kernel(a: np.ndarray, b: np.ndarray, lengthscale: float) -> np.ndarray:
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    out: np.ndarray = np.exp(-np.maximum(sq, 0.0) / (2.0 * lengthscale**2))
    return out


class _GaussianProcess:
    """Exact GP regression; lengthscale and noise picked by marginal likelihood on a small grid.

    One eigendecomposition per lengthscale serves every noise level, which keeps a fit to a
    few milliseconds.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x = x
        self.mean, self.scale = float(y.mean()), float(y.std()) or 1.0
        z = (y - self.mean) / self.scale
        best: tuple[float, float, float, np.ndarray, np.ndarray] | None = None
        for ls in _LENGTHSCALES:
            eigenvalues, eigenvectors = np.linalg.eigh(_kernel(x, x, ls))
            eigenvalues = np.maximum(eigenvalues, 0.0)
            projected = eigenvectors.T @ z
            for noise in _NOISE:
                shifted = eigenvalues + noise
                nll = 0.5 * float((projected**2 / shifted).sum() + np.log(shifted).sum())
                if best is None or nll < best[0]:
                    best = (nll, ls, noise, eigenvalues, eigenvectors)
        assert best is not None
        _, self.lengthscale, noise, eigenvalues, self.eigenvectors = best
        self.inverse_shifted = 1.0 / (eigenvalues + noise)
        self.alpha = self.eigenvectors @ (self.inverse_shifted * (self.eigenvectors.T @ z))

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = _kernel(x, self.x, self.lengthscale)
        mu = k @ self.alpha
        v = k @ self.eigenvectors
        var = np.maximum(1.0 - (v * v * self.inverse_shifted).sum(1), 1e-12)
        return self.mean + self.scale * mu, self.scale * np.sqrt(var)


class PredictorGuidedSearch(Strategy):
    def __init__(
        self,
        space: SearchSpace,
        seed: int,
        initial_samples: int,
        candidates: int,
        acquisition: Literal["thompson", "ucb"],
        exploration: float,
    ) -> None:
        super().__init__(space, seed)
        self.initial_samples = initial_samples
        self.candidates = candidates
        self.acquisition = acquisition
        self.exploration = exploration
        self.encode = _Encoder(space)

    def _training_set(self, scored: list[Observation]) -> list[Observation]:
        if len(scored) <= _MAX_TRAINING_POINTS:
            return scored
        half = _MAX_TRAINING_POINTS // 2
        best = sorted(scored, key=lambda o: (-(o.value or 0.0), o.index))[:half]
        chosen = {o.index for o in best}
        latest = [o for o in sorted(scored, key=lambda o: -o.index) if o.index not in chosen][:half]
        return best + latest

    def suggest(
        self,
        index: int,
        finished: Sequence[Observation],
        running: Sequence[Observation],
        taken: frozenset[str],
        prior: Prior | None = None,
    ) -> Assignment | None:
        warm = self.warm_start(prior, finished, running, taken)
        if warm is not None:
            return warm
        finished = fitness(finished, trial_rng(self.seed, index, "weights"))
        rng = trial_rng(self.seed, index)
        scored = [o for o in finished if o.value is not None]
        if len(finished) + len(running) < self.initial_samples or len(scored) < 2:
            return self.first_untaken(self.space.sample, rng, taken, prior)

        ranked = sorted(scored, key=lambda o: (-(o.value or 0.0), o.index))
        pool: dict[str, Assignment] = {}

        def offer(candidate: Assignment) -> None:
            key = self.space.key(candidate)
            if key not in taken:
                pool.setdefault(key, candidate)

        for n in self.space.neighbours(ranked[0].params):
            offer(n)
        parents = ranked[: max(1, min(10, len(ranked)))]
        for i in range(self.candidates):
            parent = parents[i % len(parents)].params
            child = self.space.mutate(parent, rng)
            if i % 2:
                child = self.space.mutate(child, rng)
            offer(child)
        for _ in range(self.candidates // 4):
            offer(self.space.sample(rng))
        if pool and prior is not None:  # the predictor chooses among the better-screened half
            by_prior = sorted(pool, key=lambda k: -prior.score(k))
            pool = {k: pool[k] for k in by_prior[: max(1, len(by_prior) // 2)]}
        if not pool:
            return self.first_untaken(self.space.sample, rng, taken, prior)

        training = self._training_set(scored)
        gp = _GaussianProcess(
            np.stack([self.encode(o.params) for o in training]),
            np.array([o.value for o in training], dtype=float),
        )
        keys = list(pool)
        mu, sigma = gp.predict(np.stack([self.encode(pool[k]) for k in keys]))
        if self.acquisition == "thompson":
            draws = np.random.default_rng(rng.getrandbits(32)).standard_normal(len(keys))
            score = mu + sigma * draws
        else:
            score = mu + self.exploration * sigma
        return pool[keys[int(np.argmax(score))]]
