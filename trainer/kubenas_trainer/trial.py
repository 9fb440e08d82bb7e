"""One trial from start to final report: data, model, optional resume, epochs, test, summary."""

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kubenas.api.builtin_trainer import EXPORT_DIR
from kubenas_trainer.checkpoint import (
    fingerprint,
    load_checkpoint,
    resume_state,
    save_checkpoint,
)
from kubenas_trainer.config import TrialConfig
from kubenas_trainer.costs import measure_costs
from kubenas_trainer.data import Arrays, Splits, load_dataset
from kubenas_trainer.device import plan_device
from kubenas_trainer.models import build_model
from kubenas_trainer.report import Reporter
from kubenas_trainer.train import Trainer, to_device


def run_trial(config: TrialConfig, reporter: Reporter) -> dict[str, Any]:
    """Train to ``config.epochs`` epochs in total, reporting every epoch; returns the summary.

    The test split is evaluated once, after training, and reported but never used to choose.
    Cost metrics are measured first; a network outside the constraints on them is reported with
    its figures and never trained. A final trial may train on the validation split too, and
    exports the model it trained.
    """
    plan = plan_device(config.device)
    splits = load_dataset(config.dataset, config.data_dir)
    torch.manual_seed(config.seed)
    model = build_model(config.family, config.architecture, splits.sample_shape, splits.num_classes)
    costs = measure_costs(
        model,
        torch.from_numpy(splits.train[0][:1]),
        plan.device,
        config.costs,
        channels_last=plan.channels_last,
        autocast_dtype=plan.autocast_dtype if plan.mixed_precision else None,
    )
    broken = [
        why
        for c in config.constraints
        if c.metric in costs.values and (why := c.broken_by(costs.values[c.metric])) is not None
    ]
    if broken:  # infeasible: measured, reported, never trained
        reporter.start(family=config.family, dataset=config.dataset, device=costs.device_name)
        return reporter.final(costs.values, device=costs.device_name, infeasible=broken)
    trainer = Trainer(
        model,
        to_device(_training_arrays(splits, config), plan),
        config.hparams,
        config.schedule_epochs,
        plan,
        config.seed,
        config.compile,
    )
    expected = trial_fingerprint(config)
    if config.resume_from is not None:
        trainer.load_state_dict(load_checkpoint(config.resume_from))
    elif (own := resume_state(None, config.checkpoint_dir, expected, "network")) is not None:
        trainer.load_state_dict(own)  # a preempted or killed pod of this run: continue it
    start_epoch = trainer.epoch
    val, test = to_device(splits.val, plan), to_device(splits.test, plan)
    reporter.start(
        family=config.family,
        dataset=config.dataset,
        **costs.values,
        device=plan.device.type,
        threads=plan.threads,
        start_epoch=start_epoch,
        epochs=config.epochs,
        hparams=vars(config.hparams),
    )

    checkpoint: Path | None = None
    train_seconds = 0.0
    if trainer.epoch >= config.epochs:  # the checkpoint already has the epochs asked for
        val_loss, val_accuracy = trainer.evaluate(val)
    while trainer.epoch < config.epochs:
        started = time.perf_counter()
        metrics = trainer.train_epoch()
        val_loss, val_accuracy = trainer.evaluate(val)
        seconds = time.perf_counter() - started
        train_seconds += seconds
        if config.checkpoint_dir is not None:
            checkpoint = save_checkpoint(
                config.checkpoint_dir, _checkpoint_state(trainer, config, splits, expected)
            )
        reporter.epoch(
            trainer.epoch,
            {
                **metrics,
                "val_loss": val_loss,
                "val_accuracy": val_accuracy,
                "epoch_seconds": seconds,
            },
        )
    if config.checkpoint_dir is not None and checkpoint is None:
        checkpoint = save_checkpoint(
            config.checkpoint_dir, _checkpoint_state(trainer, config, splits, expected)
        )
    test_loss, test_accuracy = trainer.evaluate(test)
    exported = None
    if config.export and config.checkpoint_dir is not None:
        from kubenas_trainer.export import export_model  # onnx loads only for an export

        exported = config.checkpoint_dir / EXPORT_DIR
        export_model(
            trainer.model,
            family=config.family,
            architecture=config.architecture,
            sample_shape=splits.sample_shape,
            num_classes=splits.num_classes,
            out_dir=exported,
            seed=config.seed,
        )
    return reporter.final(
        {
            "val_accuracy": val_accuracy,
            "val_loss": val_loss,
            "test_accuracy": test_accuracy,
            "test_loss": test_loss,
            **costs.values,
            "epochs": trainer.epoch,
            "start_epoch": start_epoch,  # > 0: this run continued a checkpoint
            "train_seconds": round(train_seconds, 3),
        },
        checkpoint=checkpoint,
        device=costs.device_name,
        export=exported,
    )


def _training_arrays(splits: Splits, config: TrialConfig) -> Arrays:
    """The training split, or, for ``train+val``, the training and validation splits joined."""
    if config.train_on == "train":
        return splits.train
    return (
        np.concatenate([splits.train[0], splits.val[0]]),
        np.concatenate([splits.train[1], splits.val[1]]),
    )


def trial_fingerprint(config: TrialConfig) -> str:
    """What a run's weights depend on; its epochs are left out, so a run asked for more epochs
    (a promotion) continues the checkpoint."""
    return fingerprint(
        {
            "family": config.family,
            "architecture": config.architecture,
            "dataset": config.dataset,
            "hparams": vars(config.hparams),
            "seed": config.seed,
            "schedule_epochs": config.schedule_epochs,
            "train_on": config.train_on,
        }
    )


def _checkpoint_state(
    trainer: Trainer, config: TrialConfig, splits: Splits, expected: str
) -> dict[str, Any]:
    """The trainer's state, its fingerprint and what rebuilds its network without the data."""
    return {
        "fingerprint": expected,
        "family": config.family,
        "architecture": config.architecture,
        "sample_shape": list(splits.sample_shape),
        "num_classes": splits.num_classes,
        "schedule_epochs": config.schedule_epochs,
        **trainer.state_dict(),
    }
