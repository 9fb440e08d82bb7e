"""The NASExperiment model (spec, trial records) and its loader."""

from kubenas.api.experiment import API_VERSION, KIND, ExperimentSpec, NASExperiment
from kubenas.api.loader import ExperimentError, load_experiment, parse_experiment
from kubenas.api.records import TrialRecord, TrialState

__all__ = [
    "API_VERSION",
    "KIND",
    "ExperimentError",
    "ExperimentSpec",
    "NASExperiment",
    "TrialRecord",
    "TrialState",
    "load_experiment",
    "parse_experiment",
]
