"""A search space: ordered parameters (parents before the parameters they condition) and the
family-specific mapping from a parameter assignment to the architecture handed to the trainer."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubenas.space.params import Param, Value

Assignment = dict[str, Value]
Architecture = dict[str, Any]


@dataclass(frozen=True)
class SearchSpace:
    family: str
    params: tuple[Param, ...]
    to_architecture: Callable[[Assignment], Architecture] = field(compare=False)

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for p in self.params:
            if p.condition is not None and p.condition.parent not in seen:
                raise ValueError(f"{p.name}: condition on {p.condition.parent!r} declared later")
            seen.add(p.name)

    def by_name(self) -> dict[str, Param]:
        return {p.name: p for p in self.params}

    def _is_active(self, param: Param, assignment: Mapping[str, Value]) -> bool:
        cond = param.condition
        return cond is None or (
            cond.parent in assignment and assignment[cond.parent] in cond.values
        )

    def active(self, assignment: Mapping[str, Value]) -> Assignment:
        """Only the parameters that matter under this assignment's conditions."""
        out: Assignment = {}
        for p in self.params:
            if self._is_active(p, out) and p.name in assignment:
                out[p.name] = assignment[p.name]
        return out

    def complete(self, assignment: Mapping[str, Value], rng: random.Random | None) -> Assignment:
        """Drop inactive parameters and fill newly active ones (sampled, or the first value)."""
        out: Assignment = {}
        for p in self.params:
            if not self._is_active(p, out):
                continue
            if p.name in assignment and p.contains(assignment[p.name]):
                out[p.name] = assignment[p.name]
            else:
                out[p.name] = p.sample(rng) if rng is not None else p.grid(2)[0]
        return out

    def sample(self, rng: random.Random) -> Assignment:
        return self.complete({}, rng)

    def validate(self, assignment: Mapping[str, Value]) -> list[str]:
        """Problems with a user-supplied assignment (unknown, missing or out-of-range values)."""
        known = self.by_name()
        problems = [
            f"{name}: not a parameter of this space" for name in assignment if name not in known
        ]
        active = self.complete(assignment, None)
        for name in active:
            if name not in assignment:
                problems.append(f"{name}: missing")
            elif not known[name].contains(assignment[name]):
                problems.append(f"{name}: {assignment[name]!r} is outside the space")
        return problems

    def key(self, assignment: Mapping[str, Value]) -> str:
        """Canonical encoding: the architecture as sorted compact JSON; equal iff same network."""
        return json.dumps(
            self.to_architecture(self.active(assignment)), sort_keys=True, separators=(",", ":")
        )

    def to_choices(self, assignment: Mapping[str, Value]) -> list[int]:
        """The assignment as the index of each active parameter's value in its grid, in the
        space's order: a compact encoding (a few bytes per parameter) for termination messages.
        Raises ValueError for a float parameter, which has no finite grid."""
        by_name = self.by_name()
        indices: list[int] = []
        for name, value in self.active(assignment).items():
            param = by_name[name]
            if param.cardinality() is None:
                raise ValueError(f"{name}: a float parameter has no choice index")
            indices.append(param.grid(2).index(value))
        return indices

    def from_choices(self, indices: Sequence[int]) -> Assignment:
        """Inverse of :meth:`to_choices`; ValueError when ``indices`` do not fit the space."""
        out: Assignment = {}
        remaining = list(indices)
        for p in self.params:
            if not self._is_active(p, out):
                continue
            if not remaining:
                raise ValueError(f"{p.name}: missing from the choice indices")
            index = remaining.pop(0)
            grid = p.grid(2)
            if p.cardinality() is None or not 0 <= index < len(grid):
                raise ValueError(f"{p.name}: choice index {index} is outside the space")
            out[p.name] = grid[index]
        if remaining:
            raise ValueError(f"{len(remaining)} choice indices more than the space has parameters")
        return out

    def arch_hash(self, assignment: Mapping[str, Value]) -> str:
        """A short stable hash of the canonical encoding (labels, file names)."""
        return hashlib.sha256(self.key(assignment).encode()).hexdigest()[:12]

    def neighbours(self, assignment: Mapping[str, Value]) -> list[Assignment]:
        """Every assignment one parameter step away, in a deterministic order."""
        base = self.active(assignment)
        by_name = self.by_name()
        out: list[Assignment] = []
        for name, value in base.items():
            for other in by_name[name].neighbours(value):
                out.append(self.complete({**base, name: other}, None))
        return out

    def mutate(self, assignment: Mapping[str, Value], rng: random.Random) -> Assignment:
        """Change one randomly chosen parameter to a different value (a random neighbour move)."""
        base = self.active(assignment)
        by_name = self.by_name()
        movable = [n for n, v in base.items() if by_name[n].neighbours(v)]
        if not movable:
            return base
        name = movable[rng.randrange(len(movable))]
        param = by_name[name]
        current = base[name]
        while True:
            value = param.sample(rng)
            if value != current:
                return self.complete({**base, name: value}, rng)

    def size(self) -> int | None:
        """Number of distinct architectures, or None when a float parameter makes it infinite."""
        parents = {p.condition.parent for p in self.params if p.condition is not None}

        def count(i: int, partial: Assignment) -> int | None:
            if i == len(self.params):
                return 1
            p = self.params[i]
            if not self._is_active(p, partial):
                return count(i + 1, partial)
            if p.cardinality() is None:
                return None
            if p.name in parents:
                total = 0
                for v in p.grid(2):
                    sub = count(i + 1, {**partial, p.name: v})
                    if sub is None:
                        return None
                    total += sub
                return total
            rest = count(i + 1, partial)
            return None if rest is None else int(p.cardinality() or 0) * rest

        return count(0, {})

    def grid(self, float_points: int) -> Iterator[Assignment]:
        """All assignments in canonical order (floats at ``float_points`` evenly spaced values)."""

        def walk(i: int, partial: Assignment) -> Iterator[Assignment]:
            if i == len(self.params):
                yield dict(partial)
                return
            p = self.params[i]
            if not self._is_active(p, partial):
                yield from walk(i + 1, partial)
                return
            for v in p.grid(float_points):
                partial[p.name] = v
                yield from walk(i + 1, partial)
                del partial[p.name]

        return walk(0, {})
