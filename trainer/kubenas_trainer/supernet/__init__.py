"""Weight-sharing supernets: one network that holds every architecture of a search space.

Each method (``kubenas.api.vocabulary.ONESHOT_METHODS``) implements :class:`Supernet`; the
supernet trial (:mod:`kubenas_trainer.supernet_trial`) trains one, checkpoints it after every
epoch and reads the top-K architectures off it.
"""

from collections.abc import Sequence
from typing import Any, Protocol

from kubenas.space import Assignment


class Supernet(Protocol):
    """A supernet being trained, and what it says about the space's architectures."""

    def train_epoch(self) -> dict[str, float]:
        """One epoch over the training split (architecture updates, where the method has them,
        on the validation split); returns at least ``train_loss`` and ``train_accuracy``."""
        ...

    def derived(self) -> Assignment:
        """The architecture the supernet currently prefers (an assignment of the space)."""
        ...

    def entropy(self) -> float:
        """Mean entropy (nats) of the architecture distribution over the space's choices."""
        ...

    def score(self, assignments: Sequence[Assignment]) -> list[float]:
        """Validation accuracy of each architecture with the supernet's inherited weights
        (batch-norm statistics recalibrated per architecture)."""
        ...

    def top(self, k: int) -> list[tuple[Assignment, float]]:
        """The ``k`` best distinct architectures the method finds, best first, with scores."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed supernet needs to continue exactly (weights, optimizers,
        architecture parameters, epoch, RNG states)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    @property
    def epoch(self) -> int: ...
