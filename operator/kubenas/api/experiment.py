"""Wire models of the ``NASExperiment`` resource (``kubenas.io/v1alpha1``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from kubenas.api._base import WireModel, field_error, field_errors
from kubenas.api.builtin_trainer import (
    BUILTIN_TRAINER_COMMAND,
    BUILTIN_TRAINER_METRICS,
    BUILTIN_TRAINER_MODULE,
    Hyperparameters,
    parse_dataset,
    runs_builtin_trainer,
)
from kubenas.api.space import ChainSpace, Nb201CellSpace, SearchSpaceSpec
from kubenas.api.vocabulary import (
    ONESHOT_METHODS,
    PROXIES,
    TRAINER_FAMILIES,
    OneshotMethod,
    ProxyName,
)

API_VERSION = "kubenas.io/v1alpha1"
KIND = "NASExperiment"

Direction = Literal["maximize", "minimize"]
MetricName = Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


REFERENCE_DESCRIPTION = (
    "the hypervolume's reference value of this metric (unset: its constraint's bound, else the "
    "worst value any trial reached)"
)
MAX_CONSTRAINTS = 16


class AdditionalObjective(WireModel):
    metric: MetricName
    direction: Direction = "minimize"
    reference: float | None = Field(default=None, description=REFERENCE_DESCRIPTION)


class Constraint(WireModel):
    """A bound on a metric a trial reports, e.g. ``latency_ms <= 5``. A trial outside it is
    infeasible: never best nor on the front. Cost metrics are checked before any training."""

    metric: MetricName
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounded(self) -> Constraint:
        if self.min is None and self.max is None:
            raise field_error("max", f"set min, max or both for the constraint on {self.metric}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise field_error("min", f"must be <= max ({self.max:g})")
        return self

    def violation(self, value: float | None) -> float:
        """How far ``value`` lies outside the bounds, relative to the bound (0: inside); a
        metric that was not reported counts as a violation of 1."""
        if value is None:
            return 1.0
        amount = 0.0
        if self.max is not None and value > self.max:
            amount += (value - self.max) / max(abs(self.max), 1e-12)
        if self.min is not None and value < self.min:
            amount += (self.min - value) / max(abs(self.min), 1e-12)
        return amount

    def broken_by(self, value: float) -> str | None:
        """Why ``value`` is outside, in words; None when it is inside."""
        if self.max is not None and value > self.max:
            return f"{self.metric} {value:.4g} > max {self.max:g}"
        if self.min is not None and value < self.min:
            return f"{self.metric} {value:.4g} < min {self.min:g}"
        return None


class Objective(WireModel):
    """What the search optimises; additional objectives make it multi-objective (a Pareto
    front), and constraints bound any reported metric."""

    metric: MetricName = "val_accuracy"
    direction: Direction = "maximize"
    reference: float | None = Field(default=None, description=REFERENCE_DESCRIPTION)
    additional: list[AdditionalObjective] = Field(default_factory=list, max_length=8)
    constraints: list[Constraint] = Field(default_factory=list, max_length=MAX_CONSTRAINTS)

    @model_validator(mode="after")
    def _distinct(self) -> Objective:
        names = [self.metric, *(o.metric for o in self.additional)]
        if len(set(names)) != len(names):
            raise field_error("additional", "must not repeat the objective metric")
        bounded = [c.metric for c in self.constraints]
        if len(set(bounded)) != len(bounded):
            raise field_error("constraints", "must not repeat a metric (set min and max in one)")
        return self

    @property
    def metrics(self) -> tuple[str, ...]:
        """Every metric the search reads: the objectives', then the constrained ones."""
        named = [self.metric, *(o.metric for o in self.additional)]
        return (*named, *(c.metric for c in self.constraints if c.metric not in named))

    def violations(self, metrics: Mapping[str, float]) -> list[str]:
        """Why a trial's reported ``metrics`` break the constraints (those it reported)."""
        return [
            broken
            for c in self.constraints
            if c.metric in metrics and (broken := c.broken_by(metrics[c.metric])) is not None
        ]

    def violation(self, metrics: Mapping[str, float]) -> float:
        """The summed relative violation of every constraint (0: feasible)."""
        return sum(c.violation(metrics.get(c.metric)) for c in self.constraints)


class RandomStrategy(WireModel):
    name: Literal["random"]


class GridStrategy(WireModel):
    name: Literal["grid"]
    float_points: int = Field(default=5, ge=2, le=100, description="grid points per float range")


class EvolutionStrategy(WireModel):
    """Regularized evolution (Real et al. 2019): tournaments of ``sampleSize`` in an ageing
    population of ``populationSize``."""

    name: Literal["evolution"]
    population_size: int = Field(default=10, ge=2, le=10_000)
    sample_size: int = Field(default=3, ge=1, le=10_000)

    @model_validator(mode="after")
    def _sample_in_population(self) -> EvolutionStrategy:
        if self.sample_size > self.population_size:
            raise field_error("sampleSize", f"must be <= populationSize ({self.population_size})")
        return self


class TpeStrategy(WireModel):
    name: Literal["tpe"]
    startup_trials: int = Field(default=10, ge=1)
    constant_liar: bool = True


class LocalSearchStrategy(WireModel):
    """Hill climbing from the best of `initialSamples` random architectures, restarting from a
    random one at each local optimum (White et al. 2021)."""

    name: Literal["local-search"]
    initial_samples: int = Field(default=10, ge=1)


class BayesianStrategy(WireModel):
    """Predictor-guided search: a Gaussian process over architecture encodings picks candidates,
    by Thompson sampling (BANANAS's acquisition) or by an upper confidence bound of weight
    ``exploration``."""

    name: Literal["bananas"]
    initial_samples: int = Field(default=10, ge=1)
    candidates: int = Field(default=100, ge=1, le=100_000)
    acquisition: Literal["thompson", "ucb"] = "thompson"
    exploration: float | None = Field(default=None, ge=0.0, le=10.0)

    @model_validator(mode="after")
    def _exploration_weights_ucb(self) -> BayesianStrategy:
        if self.exploration is not None and self.acquisition != "ucb":
            raise field_error(
                "exploration", "is the weight of acquisition ucb only; set acquisition: ucb"
            )
        return self

    @property
    def ucb_weight(self) -> float:
        """How many standard deviations the upper confidence bound adds (0.5 unless set)."""
        return 0.5 if self.exploration is None else self.exploration


class ReinforceStrategy(WireModel):
    """REINFORCE policy gradient over the space's discrete choices (NAS-Bench-201's RL baseline:
    Adam at ``learningRate``, rewards against a moving average of ``baselineMomentum``).

    The default step is 0.1, not that paper's 0.01: an Adam step moves a logit by about the
    learning rate, so at 0.01 a 100-trial search can shift the policy by about one nat, and it
    stays close to uniform sampling."""

    name: Literal["reinforce"]
    learning_rate: float = Field(default=0.1, gt=0.0, le=10.0)
    baseline_momentum: float = Field(default=0.9, ge=0.0, lt=1.0)


class Nsga2Strategy(WireModel):
    """Steady-state NSGA-II (Deb et al. 2002) through Optuna's sampler: a random first
    population of ``populationSize``, then one child per finished trial from the elite by
    non-dominated rank and crowding, feasible before infeasible (Deb's rule)."""

    name: Literal["nsga2"]
    population_size: int = Field(
        default=10, ge=2, le=10_000, description="about a tenth of maxTrials serves well"
    )
    crossover_prob: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="the other children are mutations of one parent: local moves, which suit "
        "cell spaces",
    )


MAX_ONESHOT_TOP_K = 32


class OneshotStrategy(WireModel):
    """Weight sharing: one supernet trial of ``supernetEpochs`` trains a network holding every
    architecture of the space; the ``topK`` architectures derived from it are then trained as
    ordinary candidates. ``method`` (default: the family's own) is beta-darts for nb201-cell
    and spos for chain (docs/oneshot.md)."""

    name: Literal["oneshot"]
    method: OneshotMethod | None = None
    supernet_epochs: int = Field(default=20, ge=1, le=10_000)
    top_k: int = Field(
        default=5,
        ge=1,
        le=MAX_ONESHOT_TOP_K,
        description="derived architectures trained as candidates (at most maxTrials)",
    )


StrategySpec = Annotated[
    RandomStrategy
    | GridStrategy
    | EvolutionStrategy
    | TpeStrategy
    | LocalSearchStrategy
    | BayesianStrategy
    | ReinforceStrategy
    | Nsga2Strategy
    | OneshotStrategy,
    Field(discriminator="name"),
]


class Budget(WireModel):
    max_trials: int = Field(ge=1, le=100_000)
    parallel_trials: int = Field(default=1, ge=1, le=1_000)
    max_failed_trials: int = Field(default=3, ge=0)
    goal: float | None = Field(default=None, description="objective value that ends the search")

    @model_validator(mode="after")
    def _parallel_within_budget(self) -> Budget:
        if self.parallel_trials > self.max_trials:
            raise field_error("parallelTrials", f"must be <= maxTrials ({self.max_trials})")
        return self


class Fidelity(WireModel):
    """How much training a trial gets; a scheduler stops or promotes trials between rungs."""

    resource: Literal["epochs"] = "epochs"
    min: int = Field(default=1, ge=1)
    max: int = Field(ge=1, le=100_000)
    scheduler: Literal["none", "asha", "hyperband", "median"] = "none"
    reduction_factor: int = Field(default=3, ge=2, le=100)
    grace_trials: int = Field(
        default=3, ge=1, description="median stopping: completed trials needed before stopping any"
    )

    @model_validator(mode="after")
    def _ordered(self) -> Fidelity:
        if self.min > self.max:
            raise field_error("min", f"must be <= max ({self.max})")
        if self.scheduler in ("asha", "hyperband") and self.min == self.max:
            raise field_error("min", f"must be < max for scheduler {self.scheduler}")
        return self


class EnvVar(WireModel):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    value: str


MAX_TRIALS_PER_POD = 1000


class TrialReuse(WireModel):
    """Several candidates per trial pod (in a cluster): a worker pod asks the operator for its
    next trial, up to ``maxTrialsPerPod``, instead of one Job per trial run, so short trials do
    not each pay for a pod's start, imports and data load (docs/design-pod-reuse.md)."""

    max_trials_per_pod: int = Field(ge=1, le=MAX_TRIALS_PER_POD)


class TrialTemplate(WireModel):
    """How one trial runs: data, training settings, and (in a cluster) its pod."""

    dataset: str = Field(min_length=1)
    hyperparameters: dict[str, str | int | float | bool] = Field(default_factory=dict)
    timeout_seconds: int = Field(default=3600, ge=1)
    command: list[Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=lambda: list(BUILTIN_TRAINER_COMMAND), min_length=1, max_length=64
    )
    env: list[EnvVar] = Field(default_factory=list)
    image: str | None = None
    resources: dict[str, Any] | None = None
    node_selector: dict[str, str] | None = None
    tolerations: list[dict[str, Any]] | None = None
    priority_class_name: str | None = None
    queue_name: str | None = Field(
        default=None,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="Kueue LocalQueue the trial Jobs are submitted to (a label value)",
    )
    backoff_limit: int = Field(default=0, ge=0, le=10)
    reuse: TrialReuse | None = None
    pod_template: dict[str, Any] | None = None
    checkpoint_dir: str = Field(
        default="/kubenas/checkpoints",
        min_length=1,
        description="in a cluster: a folder on a volume the pod template mounts; each trial "
        "keeps its checkpoints under <checkpointDir>/<experiment>/<trial>",
    )

    @model_validator(mode="after")
    def _builtin_trainer_accepts(self) -> TrialTemplate:
        """The built-in trainer's own rules, so a trial cannot fail on what validation passed.

        A user's own trainer (any other command) gets the dataset and hyper-parameters as given.
        """
        if not runs_builtin_trainer(self.command):
            return self
        problems = [
            (f"hyperparameters.{name}", reason)
            for name, reason in Hyperparameters.problems(self.hyperparameters)
        ]
        try:
            parse_dataset(self.dataset)
        except ValueError as error:
            problems.insert(0, ("dataset", str(error)))
        if problems:
            raise field_errors(type(self).__name__, problems)
        return self


MAX_SCREENED = 20_000


class Screening(WireModel):
    """The ``screen`` stage: before any training, one trial scores ``candidates`` architectures
    of the space with zero-cost proxies at initialisation, and the search starts from the best.

    Either one ``proxy``, or an ``ensemble`` of proxies whose ranks are averaged (two fields
    rather than a name-or-list one, so the CRD can type and check both). The first ``warmup``
    candidates trained are the best-screened; after that each strategy uses the scores as a
    filter or prior (docs/screening.md says how)."""

    proxy: ProxyName | None = None
    ensemble: list[ProxyName] | None = Field(default=None, min_length=1, max_length=len(PROXIES))
    candidates: int = Field(default=1000, ge=2, le=MAX_SCREENED)
    warmup: int = Field(default=10, ge=0, le=MAX_SCREENED)

    @property
    def proxies(self) -> tuple[str, ...]:
        return (self.proxy,) if self.proxy is not None else tuple(self.ensemble or ())

    @model_validator(mode="after")
    def _one_choice(self) -> Screening:
        if (self.proxy is None) == (self.ensemble is None):
            raise field_error("proxy", "set exactly one of proxy (one name) and ensemble (a list)")
        if self.ensemble is not None and len(set(self.ensemble)) != len(self.ensemble):
            raise field_error("ensemble", "must not repeat a proxy")
        if self.warmup > self.candidates:
            raise field_error("warmup", f"must be <= candidates ({self.candidates})")
        return self


MAX_BASELINES = 16
ArchitectureName = Annotated[
    str, Field(min_length=1, max_length=40, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
]


class FinalStage(WireModel):
    """The ``final`` stage: after the search, retrain the best ``topK`` candidates (the Pareto
    front's, spread along it, when the search is multi-objective) at ``fidelity`` on each of
    ``seeds`` seeds, test each once, and export the model. ``approval: manual`` waits for a
    person to release it (``kubenas approve``)."""

    top_k: int = Field(default=3, ge=1, le=100)
    fidelity: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="epochs of each final trial (unset: fidelity.max, else the default epochs)",
    )
    train_on: Literal["train", "train+val"] = Field(
        default="train+val",
        description="train+val: the validation split, used to choose, is trained on too",
    )
    seeds: int = Field(default=3, ge=1, le=20)
    approval: Literal["auto", "manual"] = "auto"


class Baseline(WireModel):
    """A hand-designed architecture, as the trainer takes it (``KUBENAS_ARCHITECTURE``),
    trained exactly like the final trials so the result compares like with like."""

    name: ArchitectureName
    architecture: dict[str, Any]


class ExperimentSpec(WireModel):
    objective: Objective = Field(default_factory=Objective)
    search_space: SearchSpaceSpec
    strategy: StrategySpec = Field(default_factory=lambda: RandomStrategy(name="random"))
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    budget: Budget
    fidelity: Fidelity | None = None
    screening: Screening | None = None
    final: FinalStage | None = None
    baselines: list[Baseline] = Field(default_factory=list, max_length=MAX_BASELINES)
    trial: TrialTemplate

    def final_fidelity(self) -> int | None:
        """Epochs of a final or baseline trial (None: the contract's default)."""
        if self.final is not None and self.final.fidelity is not None:
            return self.final.fidelity
        return self.fidelity.max if self.fidelity is not None else None

    @model_validator(mode="after")
    def _builtin_trainer_reports(self) -> ExperimentSpec:
        """With the built-in trainer, every metric the search reads must be one it reports;
        otherwise each trial would end without it."""
        if not runs_builtin_trainer(self.trial.command):
            return self
        known = ", ".join(BUILTIN_TRAINER_METRICS)
        named = [("objective.metric", self.objective.metric)]
        named += [
            (f"objective.additional[{i}].metric", o.metric)
            for i, o in enumerate(self.objective.additional)
        ]
        named += [
            (f"objective.constraints[{i}].metric", c.metric)
            for i, c in enumerate(self.objective.constraints)
        ]
        problems = [
            (where, f"{BUILTIN_TRAINER_MODULE} does not report {metric!r} (it reports {known})")
            for where, metric in named
            if metric not in BUILTIN_TRAINER_METRICS
        ]
        if problems:
            raise field_errors(type(self).__name__, problems)
        return self

    @model_validator(mode="after")
    def _screening_can_run(self) -> ExperimentSpec:
        """The screen trial is the built-in trainer building the space's networks, so it needs
        both; and it cannot score more distinct architectures than the space holds."""
        if self.screening is None:
            return self
        from kubenas.space import build_space  # kubenas.space imports this package

        if self.search_space.family not in TRAINER_FAMILIES:
            raise field_error(
                "screening",
                f"needs a family the built-in trainer builds ({', '.join(TRAINER_FAMILIES)}), "
                f"not {self.search_space.family}",
            )
        if not runs_builtin_trainer(self.trial.command):
            raise field_error("screening", "needs the built-in trainer as trial.command")
        size = build_space(self.search_space).size()
        if size is not None and self.screening.candidates > size:
            raise field_error(
                "screening.candidates", f"must be <= the {size} architectures of the space"
            )
        return self

    def oneshot_method(self) -> str | None:
        """The supernet method of a oneshot search (its own, else the family's), else None."""
        if not isinstance(self.strategy, OneshotStrategy):
            return None
        family = self.search_space.family
        return self.strategy.method or ONESHOT_METHODS.get(family, (None,))[0]

    @model_validator(mode="after")
    def _oneshot_can_build_a_supernet(self) -> ExperimentSpec:
        """A supernet is the built-in trainer's, for a family it can share weights in: one
        stem and cell count (nb201-cell), one width per stage (chain)."""
        strategy = self.strategy
        if not isinstance(strategy, OneshotStrategy):
            return self
        from kubenas.space import build_space  # kubenas.space imports this package

        space = self.search_space
        methods = ONESHOT_METHODS.get(space.family)
        if methods is None:
            raise field_error(
                "strategy.name",
                f"oneshot builds a supernet of family {' or '.join(ONESHOT_METHODS)}; "
                f"a {space.family} space has no supernet",
            )
        problems: list[tuple[str, str]] = []
        if strategy.method is not None and strategy.method not in methods:
            problems.append(
                ("strategy.method", f"{space.family} supernets train with {', '.join(methods)}")
            )
        if not runs_builtin_trainer(self.trial.command):
            problems.append(("trial.command", "oneshot needs the built-in trainer"))
        if self.screening is not None:
            problems.append(("screening", "oneshot derives its candidates from the supernet"))
        if isinstance(space, Nb201CellSpace):
            for field, values in (
                ("stemChannels", space.stem_channels),
                ("cellsPerStage", space.cells_per_stage),
            ):
                if len(values) > 1:
                    problems.append(
                        (f"searchSpace.{field}", "a supernet shares weights at one value")
                    )
        elif isinstance(space, ChainSpace):
            problems += [
                (f"searchSpace.widths[{s}]", "a supernet shares weights at one width per stage")
                for s, widths in enumerate(space.widths)
                if len(widths) > 1
            ]
        size = build_space(space).size()
        if size is not None and strategy.top_k > size:
            problems.append(("strategy.topK", f"must be <= the {size} architectures of the space"))
        if strategy.top_k > self.budget.max_trials:
            problems.append(
                ("strategy.topK", f"must be <= budget.maxTrials ({self.budget.max_trials})")
            )
        if problems:
            raise field_errors(type(self).__name__, problems)
        return self

    @model_validator(mode="after")
    def _baselines_are_networks(self) -> ExperimentSpec:
        """Baselines are trained like the final trials, and each must be a network of the
        space's family, or it would fail only after the whole search."""
        if not self.baselines:
            return self
        if self.final is None:
            raise field_error("baselines", "need spec.final: they are trained like final trials")
        from kubenas.space.architectures import architecture_problems

        names = [b.name for b in self.baselines]
        problems = [
            (f"baselines[{i}].name", f"repeats the name {name!r}")
            for i, name in enumerate(names)
            if name in names[:i]
        ]
        family = self.search_space.family
        for i, baseline in enumerate(self.baselines):
            where = f"baselines[{i}].architecture"
            problems += [
                (f"{where}.{field}" if field else where, f"{problem} (family {family})")
                for field, problem in architecture_problems(
                    self.search_space, baseline.architecture
                )
            ]
        if problems:
            raise field_errors(type(self).__name__, problems)
        return self


class ObjectMeta(WireModel):
    """The part of Kubernetes metadata kubenas reads; other keys are kept but ignored."""

    model_config = WireModel.model_config | {"extra": "allow"}

    name: str = Field(min_length=1, max_length=40, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    namespace: str | None = None


class NASExperiment(WireModel):
    api_version: Literal["kubenas.io/v1alpha1"]
    kind: Literal["NASExperiment"]
    metadata: ObjectMeta
    spec: ExperimentSpec
    status: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.metadata.name
