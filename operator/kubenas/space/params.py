"""Search-space parameters as plain values: categorical, integer and float (optionally log)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

Value = str | int | float | bool


@dataclass(frozen=True)
class Condition:
    """The owning parameter is active only when ``parent`` takes one of ``values``."""

    parent: str
    values: tuple[Value, ...]


@dataclass(frozen=True)
class Categorical:
    name: str
    choices: tuple[Value, ...]
    condition: Condition | None = None

    def sample(self, rng: random.Random) -> Value:
        return self.choices[rng.randrange(len(self.choices))]

    def neighbours(self, value: Value) -> list[Value]:
        return [c for c in self.choices if c != value]

    def grid(self, float_points: int) -> list[Value]:
        return list(self.choices)

    def cardinality(self) -> int | None:
        return len(self.choices)

    def contains(self, value: Any) -> bool:
        return value in self.choices


@dataclass(frozen=True)
class Integer:
    name: str
    low: int
    high: int
    step: int = 1
    log: bool = False
    condition: Condition | None = None

    def _values(self) -> range:
        return range(self.low, self.high + 1, self.step)

    def sample(self, rng: random.Random) -> int:
        if self.log:
            raw = math.exp(rng.uniform(math.log(self.low), math.log(self.high + 1)))
            value = min(self.high, int(raw))
            return self.low + (value - self.low) // self.step * self.step
        values = self._values()
        return values[rng.randrange(len(values))]

    def neighbours(self, value: Value) -> list[Value]:
        v = int(value)
        return [n for n in (v - self.step, v + self.step) if self.low <= n <= self.high]

    def grid(self, float_points: int) -> list[Value]:
        return list(self._values())

    def cardinality(self) -> int | None:
        return len(self._values())

    def contains(self, value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value in self._values()


@dataclass(frozen=True)
class Float:
    name: str
    low: float
    high: float
    log: bool = False
    condition: Condition | None = None

    def _to_unit(self, value: float) -> float:
        if self.log:
            return (math.log(value) - math.log(self.low)) / (
                math.log(self.high) - math.log(self.low)
            )
        return (value - self.low) / (self.high - self.low)

    def _from_unit(self, u: float) -> float:
        u = min(1.0, max(0.0, u))
        if self.log:
            return math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        return self.low + u * (self.high - self.low)

    def sample(self, rng: random.Random) -> float:
        return self._from_unit(rng.random())

    def neighbours(self, value: Value) -> list[Value]:
        u = self._to_unit(float(value))
        return [self._from_unit(u + d) for d in (-0.1, 0.1) if 0.0 <= u + d <= 1.0]

    def grid(self, float_points: int) -> list[Value]:
        return [self._from_unit(i / (float_points - 1)) for i in range(float_points)]

    def cardinality(self) -> int | None:
        return None

    def contains(self, value: Any) -> bool:
        return (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and self.low <= float(value) <= self.high
        )


Param = Categorical | Integer | Float
