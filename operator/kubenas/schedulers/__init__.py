"""Multi-fidelity schedulers behind one interface; :func:`make_scheduler` builds one."""

from kubenas.api.experiment import Fidelity
from kubenas.schedulers._base import FullFidelity, Objective, Promotion, Scheduler, Stop
from kubenas.schedulers.asha import SuccessiveHalving, rungs
from kubenas.schedulers.median import MedianStopping


def make_scheduler(fidelity: Fidelity | None) -> Scheduler:
    if fidelity is None:
        return FullFidelity(None)
    if fidelity.scheduler in ("asha", "hyperband"):
        return SuccessiveHalving(
            fidelity.min, fidelity.max, fidelity.reduction_factor, fidelity.scheduler == "hyperband"
        )
    if fidelity.scheduler == "median":
        return MedianStopping(fidelity.min, fidelity.max, fidelity.grace_trials)
    return FullFidelity(fidelity.max)


__all__ = ["Objective", "Promotion", "Scheduler", "Stop", "make_scheduler", "rungs"]
