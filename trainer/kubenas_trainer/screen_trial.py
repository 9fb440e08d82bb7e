"""A screen trial: the experiment's ``screen`` stage, run by the trial command itself.

Given ``KUBENAS_SCREENING`` (the proxies, how many candidates, the search space and the seed),
it draws the same candidates the control plane will read its scores against
(:func:`kubenas.space.screening_candidates`), scores each at initialisation on one mini-batch of
the experiment's training data, and reports every score in one ``screen`` event.
"""

import json
import math
import sys
import time
from typing import Any

from pydantic import TypeAdapter, ValidationError

from kubenas.api.space import SearchSpaceSpec
from kubenas.space import build_space, screening_candidates
from kubenas_trainer.config import ConfigError, TrialConfig
from kubenas_trainer.data import load_dataset
from kubenas_trainer.device import plan_device
from kubenas_trainer.proxies import PROXIES, Probe, score_architecture, training_probe
from kubenas_trainer.report import Reporter

PROBE_BATCH = 64
PROGRESS_EVERY = 100


def parse_screening(text: str) -> dict[str, Any]:
    """The screen stage's settings, checked as the trainer needs them."""
    try:
        screening = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"screening is not JSON: {error}") from error
    if not isinstance(screening, dict):
        raise ConfigError("screening must be a JSON object")
    unknown = [p for p in screening.get("proxies", []) if p not in PROXIES]
    if unknown or not screening.get("proxies"):
        raise ConfigError(f"screening.proxies: unknown {unknown}; known: {sorted(PROXIES)}")
    if not isinstance(screening.get("candidates"), int) or screening["candidates"] < 1:
        raise ConfigError("screening.candidates must be a positive integer")
    try:
        TypeAdapter(SearchSpaceSpec).validate_python(screening.get("searchSpace"))
    except ValidationError as error:
        raise ConfigError(f"screening.searchSpace: {error}") from error
    return screening


def run_screen_trial(config: TrialConfig, screening: dict[str, Any], reporter: Reporter) -> None:
    plan = plan_device(config.device)
    started = time.perf_counter()
    space = build_space(TypeAdapter(SearchSpaceSpec).validate_python(screening["searchSpace"]))
    candidates = screening_candidates(space, int(screening.get("seed", 0)), screening["candidates"])
    splits = load_dataset(config.dataset, config.data_dir)
    proxies: list[str] = list(screening["proxies"])
    needs_data = any(PROXIES[p].needs_data for p in proxies)
    probe = (
        training_probe(splits, PROBE_BATCH, config.seed, plan.device)
        if needs_data
        else Probe(splits.sample_shape)
    )
    reporter.start(
        family=config.family,
        dataset=config.dataset,
        device=plan.device.type,
        screening=len(candidates),
        proxies=proxies,
    )
    scores: dict[str, list[float | None]] = {p: [] for p in proxies}
    for count, candidate in enumerate(candidates, start=1):
        values = score_architecture(
            config.family,
            space.to_architecture(candidate),
            proxies,
            probe,
            splits.num_classes,
            config.seed,
            plan.device,
        )
        for proxy, value in values.items():
            scores[proxy].append(value if math.isfinite(value) else None)
        if count % PROGRESS_EVERY == 0 or count == len(candidates):
            rate = count / (time.perf_counter() - started)
            print(f"screened {count}/{len(candidates)} ({rate:.1f}/s)", file=sys.stderr)
    seconds = time.perf_counter() - started
    reporter.screen(proxies, scores)
    reporter.final({"screened": float(len(candidates)), "screen_seconds": round(seconds, 3)})
