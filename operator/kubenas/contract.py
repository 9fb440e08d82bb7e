"""The trainer contract seen from the control plane: the environment a trial process gets.

Both runtimes (local processes and Kubernetes Jobs) hand a trial these variables; the trainer
(``kubenas_trainer``) or a user's own image reads them. docs/trainer-contract.md documents them.
"""

from __future__ import annotations

import json

from kubenas.api.builtin_trainer import DEFAULT_EPOCHS
from kubenas.api.experiment import NASExperiment, OneshotStrategy
from kubenas.api.records import TrialRecord, TrialRole
from kubenas.api.vocabulary import TIMED_COST_METRICS
from kubenas.space import build_space

SEED_MODULUS = 2**31 - 1


def trial_seed(experiment_seed: int, index: int) -> int:
    """Each trial's training seed, fixed by the experiment seed and the trial index."""
    return (experiment_seed * 1_000_003 + index) % SEED_MODULUS


# Final and baseline trials on seed number r all get the seed of this index plus r, so every
# network of the final stage is trained on the same seeds, apart from any candidate's.
REPLICA_SEED_INDEX = 10_000_000


def record_seed(experiment_seed: int, record: TrialRecord) -> int:
    """A candidate's seed follows its index; a final or baseline trial's its seed number."""
    if record.replica is not None:
        return trial_seed(experiment_seed, REPLICA_SEED_INDEX + record.replica)
    return trial_seed(experiment_seed, record.index)


def record_architecture(experiment: NASExperiment, record: TrialRecord) -> dict[str, object]:
    """What a trial trains: a baseline's named architecture, or the space's architecture of
    the record's parameters (a screen trial scores many, a supernet trial holds them all)."""
    spec = experiment.spec
    if record.role in (TrialRole.SCREEN, TrialRole.SUPERNET):
        return {}
    if record.role is TrialRole.BASELINE:
        return next(dict(b.architecture) for b in spec.baselines if b.name == record.baseline)
    space = build_space(spec.search_space)
    return space.to_architecture(space.active(record.params))


def trial_name(experiment: str, index: int) -> str:
    """Deterministic, so a controller that restarts between deciding and creating cannot
    create the same trial twice under two names."""
    return f"{experiment}-{index:04d}"


def trial_environment(
    experiment: NASExperiment,
    record: TrialRecord,
    architecture: dict[str, object],
    *,
    dataset: str | None = None,
) -> dict[str, str]:
    """Variables that tell a trainer what to train, for how long, and from where to resume.

    ``KUBENAS_EPOCHS`` is always set: the trial's fidelity, or DEFAULT_EPOCHS for an experiment
    without a ``fidelity`` block, so no trainer is left to guess how long to train.
    ``KUBENAS_COSTS`` names the timed cost metrics to measure and ``KUBENAS_CONSTRAINTS`` holds
    the objective's constraints, so a trainer can end an infeasible trial before training it.
    """
    spec = experiment.spec
    env = {
        "KUBENAS_EXPERIMENT": experiment.name,
        "KUBENAS_TRIAL": record.name,
        "KUBENAS_FAMILY": spec.search_space.family,
        "KUBENAS_ARCHITECTURE": json.dumps(architecture, sort_keys=True, separators=(",", ":")),
        "KUBENAS_DATASET": dataset or spec.trial.dataset,
        "KUBENAS_HPARAMS": json.dumps(spec.trial.hyperparameters, sort_keys=True),
        "KUBENAS_SEED": str(record_seed(spec.seed, record)),
        "KUBENAS_OBJECTIVE": spec.objective.metric,
    }
    if experiment.metadata.namespace:
        env["KUBENAS_NAMESPACE"] = experiment.metadata.namespace
    env["KUBENAS_EPOCHS"] = str(record.fidelity if record.fidelity is not None else DEFAULT_EPOCHS)
    if record.role is TrialRole.SUPERNET:
        env["KUBENAS_SUPERNET"] = json.dumps(supernet_settings(experiment), sort_keys=True)
    elif spec.fidelity is not None:
        env["KUBENAS_SCHEDULE_EPOCHS"] = str(spec.fidelity.max)
    if record.resumed_from:
        env["KUBENAS_RESUME_FROM"] = record.resumed_from
    costs = timed_costs(experiment)
    if costs:
        env["KUBENAS_COSTS"] = ",".join(costs)
    if spec.objective.constraints:
        env["KUBENAS_CONSTRAINTS"] = json.dumps(
            [c.model_dump(exclude_none=True) for c in spec.objective.constraints],
            separators=(",", ":"),
        )
    if record.role in (TrialRole.FINAL, TrialRole.BASELINE) and spec.final is not None:
        env["KUBENAS_TRAIN_ON"] = spec.final.train_on
        if record.role is TrialRole.FINAL:
            env["KUBENAS_EXPORT"] = "1"
    if record.role is TrialRole.SCREEN and spec.screening is not None:
        env["KUBENAS_SCREENING"] = json.dumps(screening_settings(experiment), sort_keys=True)
    for var in spec.trial.env:
        env[var.name] = var.value
    return env


def timed_costs(experiment: NASExperiment) -> list[str]:
    """The timed cost metrics (latency, throughput, memory) the search reads, which the trainer
    measures before training; params and FLOPs it always reports."""
    named = set(experiment.spec.objective.metrics)
    return [m for m in TIMED_COST_METRICS if m in named]


SUPERNET_FOLDER = "supernet"


def checkpoint_folder(record: TrialRecord) -> str:
    """A trial's checkpoint folder under its experiment's: its own name, but the stage's for a
    supernet, so a supernet trial started again after a failure continues the last one's
    epochs instead of starting over."""
    return SUPERNET_FOLDER if record.role is TrialRole.SUPERNET else record.name


def supernet_settings(experiment: NASExperiment) -> dict[str, object]:
    """What a supernet trial needs: the method, how many architectures to derive, and the
    space it holds (its epochs are the trial's ``KUBENAS_EPOCHS``)."""
    spec = experiment.spec
    assert isinstance(spec.strategy, OneshotStrategy)
    return {
        "method": spec.oneshot_method(),
        "topK": spec.strategy.top_k,
        "seed": spec.seed,
        "searchSpace": spec.search_space.model_dump(mode="json", by_alias=True),
    }


def screening_settings(experiment: NASExperiment) -> dict[str, object]:
    """What a screen trial needs to draw and score the same candidates the engine reads its
    scores against (see kubenas.space.screening_candidates)."""
    spec = experiment.spec
    assert spec.screening is not None
    return {
        "proxies": list(spec.screening.proxies),
        "candidates": spec.screening.candidates,
        "seed": spec.seed,
        "searchSpace": spec.search_space.model_dump(mode="json", by_alias=True),
    }


def gpus_requested(experiment: NASExperiment) -> float:
    """GPUs one trial asks for (limits, else requests), for GPU-seconds accounting."""
    resources = experiment.spec.trial.resources or {}
    for section in ("limits", "requests"):
        value = (resources.get(section) or {}).get("nvidia.com/gpu")
        if value is not None:
            return float(value)
    return 0.0
