"""Which of a node's GPU indices each pod holds, as the NVIDIA device plugin would track it."""

from __future__ import annotations

import threading
from collections.abc import Sequence


class GpuAllocator:
    """Hands out free indices from a fixed set; thread-safe, one instance per node."""

    def __init__(self, indices: Sequence[int]) -> None:
        self._free = list(indices)
        self._held: dict[str, list[int]] = {}
        self._lock = threading.Lock()

    def allocate(self, owner: str, count: int) -> list[int] | None:
        """``count`` free indices for ``owner`` (idempotent), or None while too few are free.

        The scheduler only binds a pod when the node's capacity allows it, but a finished pod's
        GPUs come back here a moment before the API server hears of it, so a caller may retry.
        """
        with self._lock:
            if owner in self._held:
                return list(self._held[owner])
            if count > len(self._free):
                return None
            self._free.sort()
            taken, self._free = self._free[:count], self._free[count:]
            self._held[owner] = taken
            return list(taken)

    def release(self, owner: str) -> None:
        """Give back what ``owner`` holds; a no-op when it holds nothing."""
        with self._lock:
            self._free.extend(self._held.pop(owner, []))
