"""REINFORCE (Williams 1992) over the space's discrete choices, as NAS-Bench-201's RL baseline.

The policy is one softmax per categorical or integer parameter. Each finished trial is one
policy-gradient step with Adam, its advantage measured against an exponential moving average of
the rewards (momentum 0.9 as in NAS-Bench-201; the learning rate defaults to 0.1 rather than its
0.01, see ``ReinforceStrategy``). The policy is not kept
between calls: it is replayed from the finished trials in creation order, so a restarted
controller holds exactly the policy a long-lived one would.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from kubenas.space import Assignment, SearchSpace
from kubenas.space.params import Float, Param, Value
from kubenas.strategies._base import Observation, Strategy, fitness, trial_rng
from kubenas.strategies.prior import Prior

ADAM_BETAS = (0.9, 0.999)
ADAM_EPSILON = 1e-8


class _Choice:
    """One parameter's softmax (all logits zero: uniform) and its Adam moments."""

    def __init__(self, values: list[Value]) -> None:
        self.values = values
        self.position = {v: i for i, v in enumerate(values)}
        self.logits = [0.0] * len(values)
        self.first = [0.0] * len(values)
        self.second = [0.0] * len(values)

    def probabilities(self) -> list[float]:
        top = max(self.logits)
        weights = [math.exp(x - top) for x in self.logits]
        total = sum(weights)
        return [w / total for w in weights]

    def sample(self, rng: random.Random) -> Value:
        return rng.choices(self.values, weights=self.probabilities())[0]

    def ascend(self, value: Value, advantage: float, step: int, learning_rate: float) -> None:
        """One Adam step up the gradient of ``advantage * log p(value)``."""
        chosen = self.position.get(value)
        if chosen is None:
            return
        b1, b2 = ADAM_BETAS
        for i, p in enumerate(self.probabilities()):
            grad = advantage * ((1.0 if i == chosen else 0.0) - p)
            self.first[i] = b1 * self.first[i] + (1 - b1) * grad
            self.second[i] = b2 * self.second[i] + (1 - b2) * grad * grad
            m = self.first[i] / (1 - b1**step)
            v = self.second[i] / (1 - b2**step)
            self.logits[i] += learning_rate * m / (math.sqrt(v) + ADAM_EPSILON)


class _MovingAverage:
    """An exponential moving average, corrected for its start at zero."""

    def __init__(self, momentum: float) -> None:
        self.momentum = momentum
        self.numerator = 0.0
        self.denominator = 0.0

    def update(self, value: float) -> float:
        self.numerator = self.momentum * self.numerator + (1 - self.momentum) * value
        self.denominator = self.momentum * self.denominator + (1 - self.momentum)
        return self.numerator / self.denominator


class Reinforce(Strategy):
    def __init__(
        self, space: SearchSpace, seed: int, learning_rate: float, baseline_momentum: float
    ) -> None:
        super().__init__(space, seed)
        self.learning_rate = learning_rate
        self.baseline_momentum = baseline_momentum

    def _policy(self, finished: Sequence[Observation]) -> dict[str, _Choice]:
        """The policy after one step per finished trial with a value, oldest first."""
        policy = {
            p.name: _Choice(list(p.grid(2))) for p in self.space.params if not isinstance(p, Float)
        }
        baseline = _MovingAverage(self.baseline_momentum)
        steps = 0
        for obs in sorted(finished, key=lambda o: o.index):
            if obs.value is None:
                continue
            advantage = obs.value - baseline.update(obs.value)
            steps += 1
            for name, value in self.space.active(obs.params).items():
                if (choice := policy.get(name)) is not None:
                    choice.ascend(value, advantage, steps, self.learning_rate)
        return policy

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
        policy = self._policy(finished)
        params: dict[str, Param] = self.space.by_name()

        def propose(rng: random.Random) -> Assignment:
            draft: Assignment = {}
            for name, param in params.items():
                choice = policy.get(name)
                draft[name] = choice.sample(rng) if choice is not None else param.sample(rng)
            return self.space.complete(draft, rng)

        rng = trial_rng(self.seed, index, "reinforce")
        return self.first_untaken(propose, rng, taken, prior)
