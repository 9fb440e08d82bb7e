"""A supernet trial: the ``oneshot`` strategy's search stage, run by the trial command itself.

Given ``KUBENAS_SUPERNET`` (the method, how many architectures to derive, the search space and
the seed), it trains one weight-sharing network holding every architecture of the space for
``KUBENAS_EPOCHS`` epochs, reporting the architecture it currently prefers after each, and ends
with the top-K architectures it derives, best first, as choice indices
(:meth:`kubenas.space.SearchSpace.to_choices`) in the final summary's ``derived``.

A Kubernetes Job's next pod gets the same checkpoint dir, so a killed supernet trial continues
from its last epoch when it runs again.
"""

import json
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from kubenas.api.builtin_trainer import Hyperparameters
from kubenas.api.space import SearchSpaceSpec
from kubenas.api.vocabulary import ONESHOT_METHODS
from kubenas.space import SearchSpace, build_space
from kubenas_trainer.checkpoint import fingerprint, resume_state, save_checkpoint
from kubenas_trainer.config import ConfigError, TrialConfig
from kubenas_trainer.data import Splits, load_dataset
from kubenas_trainer.device import DevicePlan, plan_device
from kubenas_trainer.report import Reporter
from kubenas_trainer.supernet import Supernet


def parse_supernet(text: str, family: str) -> dict[str, Any]:
    """The supernet's settings, checked as the trainer needs them for a trial of ``family``."""
    try:
        supernet = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"supernet is not JSON: {error}") from error
    if not isinstance(supernet, dict):
        raise ConfigError("supernet must be a JSON object")
    methods = ONESHOT_METHODS.get(family, ())
    if supernet.get("method") not in methods:
        raise ConfigError(
            f"supernet.method: a {family} supernet trains with {', '.join(methods) or 'nothing'}, "
            f"got {supernet.get('method')!r}"
        )
    top_k = supernet.get("topK")
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise ConfigError("supernet.topK must be a positive integer")
    seed = supernet.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError("supernet.seed must be a non-negative integer")
    try:
        spec = TypeAdapter(SearchSpaceSpec).validate_python(supernet.get("searchSpace"))
    except ValidationError as error:
        raise ConfigError(f"supernet.searchSpace: {error}") from error
    if spec.family != family:
        raise ConfigError(f"supernet.searchSpace: family {spec.family}, the trial's is {family}")
    return supernet


def build_supernet(
    method: str,
    space: SearchSpace,
    splits: Splits,
    hparams: Hyperparameters,
    schedule_epochs: int,
    plan: DevicePlan,
    seed: int,
) -> Supernet:
    """The method's supernet; only the module of the method asked for is imported."""
    if method == "beta-darts":
        from kubenas_trainer.supernet.nb201 import build_beta_darts

        return build_beta_darts(space, splits, hparams, schedule_epochs, plan, seed)
    from kubenas_trainer.supernet.chain import build_spos

    return build_spos(space, splits, hparams, schedule_epochs, plan, seed)


def supernet_fingerprint(config: TrialConfig, supernet: dict[str, Any]) -> str:
    """What a checkpoint's weights depend on (the settings hold the seed). The epochs are left
    out: a trial asked for more epochs continues its checkpoint."""
    return fingerprint(
        {
            "supernet": supernet,
            "family": config.family,
            "dataset": config.dataset,
            "hparams": vars(config.hparams),
        }
    )


def run_supernet_trial(
    config: TrialConfig, supernet_settings: dict[str, Any], reporter: Reporter
) -> dict[str, Any]:
    """Train the supernet to ``config.epochs`` epochs in total, reporting every epoch, then
    report its top-K architectures; returns the final summary.

    The supernet is seeded by its settings' seed (the experiment's), not the trial's
    ``KUBENAS_SEED``: a later attempt of the stage is another trial with another seed, and must
    still continue the checkpoint the last one left.
    """
    method: str = supernet_settings["method"]
    top_k: int = supernet_settings["topK"]
    seed: int = supernet_settings["seed"]
    plan = plan_device(config.device)
    splits = load_dataset(config.dataset, config.data_dir)
    space = build_space(
        TypeAdapter(SearchSpaceSpec).validate_python(supernet_settings["searchSpace"])
    )
    supernet = build_supernet(
        method, space, splits, config.hparams, config.schedule_epochs, plan, seed
    )
    expected = supernet_fingerprint(config, supernet_settings)
    resumed = resume_state(config.resume_from, config.checkpoint_dir, expected, "supernet")
    if resumed is not None:
        supernet.load_state_dict(resumed["supernet"])
    start_epoch = supernet.epoch
    reporter.start(
        family=config.family,
        dataset=config.dataset,
        device=plan.device.type,
        threads=plan.threads,
        supernet=method,
        start_epoch=start_epoch,
        epochs=config.epochs,
        hparams=vars(config.hparams),
    )

    checkpoint: Path | None = None
    train_seconds = 0.0
    while supernet.epoch < config.epochs:
        started = time.perf_counter()
        metrics = supernet.train_epoch()
        seconds = time.perf_counter() - started
        train_seconds += seconds
        if config.checkpoint_dir is not None:
            checkpoint = save_checkpoint(config.checkpoint_dir, _state(supernet, expected, method))
        entropy = supernet.entropy()
        reporter.epoch(
            supernet.epoch,
            {**metrics, "entropy": entropy, "epoch_seconds": seconds},
            architecture=supernet.derived(),
        )
        val = f", val accuracy {metrics['val_accuracy']:.3f}" if "val_accuracy" in metrics else ""
        print(
            f"supernet {method}: epoch {supernet.epoch}/{config.epochs}, train accuracy "
            f"{metrics['train_accuracy']:.3f}{val}, entropy {entropy:.3f}, {seconds:.1f} s",
            file=sys.stderr,
            flush=True,
        )
    if config.checkpoint_dir is not None and checkpoint is None:
        checkpoint = save_checkpoint(config.checkpoint_dir, _state(supernet, expected, method))
    started = time.perf_counter()
    top = supernet.top(top_k)
    derive_seconds = time.perf_counter() - started
    return reporter.final(
        {
            "val_accuracy": top[0][1],
            "supernet_epochs": supernet.epoch,
            "start_epoch": start_epoch,
            "train_seconds": round(train_seconds, 3),
            "derive_seconds": round(derive_seconds, 3),
            "entropy": supernet.entropy(),
        },
        checkpoint=checkpoint,
        derived=[
            {"choices": space.to_choices(assignment), "score": round(score, 6)}
            for assignment, score in top
        ],
    )


def _state(supernet: Supernet, expected: str, method: str) -> dict[str, Any]:
    return {"fingerprint": expected, "method": method, "supernet": supernet.state_dict()}
