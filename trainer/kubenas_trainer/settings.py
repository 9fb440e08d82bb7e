"""The trainer contract's settings: one environment variable each, overridden by a CLI flag.

Kept free of torch so that :class:`kubenas_trainer.report.Reporter` can resolve its settings from
the environment inside any user's trainer.
"""

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Setting:
    """One contract setting: its attribute name, environment variable, flag and default."""

    name: str
    help: str
    default: str | None = None

    @property
    def env(self) -> str:
        return "KUBENAS_" + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


SETTINGS: tuple[Setting, ...] = (
    Setting("family", "model family: nb201-cell or chain"),
    Setting("architecture", "architecture JSON, or @path to a JSON file"),
    Setting("dataset", "digits, mnist1d, npz:PATH, idx:DIR or synthetic:SHAPE:CLASSES[:N]"),
    Setting(
        "epochs",
        "train until this many epochs in total (the fidelity; unset: the "
        "contract's default, kubenas.api.builtin_trainer.DEFAULT_EPOCHS)",
    ),
    Setting("schedule_epochs", "horizon of the cosine learning-rate schedule (default: epochs)"),
    Setting("resume_from", "checkpoint file to continue training from"),
    Setting("checkpoint_dir", "folder for checkpoint.pt, written after every epoch"),
    Setting("hparams", "JSON object of training hyper-parameters", "{}"),
    Setting("seed", "seeds weight init and data order (not the splits)", "0"),
    Setting("device", "auto, cpu or cuda", "auto"),
    Setting("compile", "1 to run the model through torch.compile", "0"),
    Setting("report", "comma list of report sinks: stdout, jsonl:PATH", "stdout"),
    Setting("pushgateway_url", "also push metrics to this Prometheus Pushgateway"),
    Setting("namespace", "trial identity: Kubernetes namespace", ""),
    Setting("experiment", "trial identity: experiment name", ""),
    Setting("trial", "trial identity: trial name", ""),
    Setting("termination_message_path", "file for the final JSON summary"),
    Setting("data_dir", "base folder for relative dataset paths and generated-data cache"),
    Setting("screening", "JSON of the screen stage: score candidates instead of training one"),
    Setting(
        "supernet",
        "JSON of the search stage's supernet: train one weight-sharing network and derive "
        "architectures from it",
    ),
    Setting("costs", "comma list of timed cost metrics to measure before training"),
    Setting("constraints", "JSON list of {metric, min, max}: end before training outside them"),
    Setting("train_on", "train, or train+val to train on the validation split too", "train"),
    Setting("export", "1 to export the trained model to CHECKPOINT_DIR/export", "0"),
)


def resolve_settings(argv: Sequence[str], environ: Mapping[str, str]) -> dict[str, str | None]:
    """Return every setting's value: the flag if given, else the environment, else the default.

    An empty environment variable counts as unset, as Kubernetes manifests often template
    optional values to "".
    """
    parser = argparse.ArgumentParser(
        prog="python -m kubenas_trainer",
        description="Train one kubenas NAS trial. Every flag has a KUBENAS_* environment twin.",
    )
    for setting in SETTINGS:
        parser.add_argument(setting.flag, dest=setting.name, help=f"{setting.help} [{setting.env}]")
    flags = vars(parser.parse_args(list(argv)))
    values: dict[str, str | None] = {}
    for setting in SETTINGS:
        value = flags[setting.name]
        if value is None:
            value = environ.get(setting.env) or setting.default
        values[setting.name] = value
    return values
