"""The screen stage seen from the control plane: the prior a finished screen gives the
strategies, and what a user reads about it (how many, how long, whether the proxy helped)."""

from __future__ import annotations

import functools
import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from pydantic import TypeAdapter

from kubenas.api.experiment import ExperimentSpec
from kubenas.api.records import ScreenScores, TrialRecord, TrialRole, TrialState
from kubenas.api.space import SearchSpaceSpec
from kubenas.space import Assignment, SearchSpace, build_space, screening_candidates
from kubenas.strategies.prior import Prior, build_prior, rank_scores

_SEARCH_SPACES: TypeAdapter[SearchSpaceSpec] = TypeAdapter(SearchSpaceSpec)
# Priors of recent screens: rebuilding one ranks every screened architecture (0.5 s at 15,625).
_CACHED_PRIORS = 16
_priors: OrderedDict[tuple[str, str, float | None], Prior] = OrderedDict()
_priors_lock = threading.Lock()


def screening_prior(spec: ExperimentSpec, space: SearchSpace, screen: TrialRecord) -> Prior:
    """The prior of a succeeded screen trial (one with no scores ranks nothing)."""
    assert spec.screening is not None
    cache_key = (spec.model_dump_json(), screen.name, screen.finished_at)
    with _priors_lock:
        if (cached := _priors.get(cache_key)) is not None:
            _priors.move_to_end(cache_key)
            return cached
    candidates, keys = screened_candidates(spec, space)
    scores = {
        proxy: values
        for proxy, values in (screen.screen_scores or {}).items()
        if len(values) == len(keys)
    }
    prior = (
        build_prior(candidates, keys, scores, spec.screening.warmup)
        if scores
        else Prior(ranked=(), scores={}, warmup=0)
    )
    with _priors_lock:
        _priors[cache_key] = prior
        while len(_priors) > _CACHED_PRIORS:
            _priors.popitem(last=False)
    return prior


def screened_candidates(
    spec: ExperimentSpec, space: SearchSpace
) -> tuple[list[Assignment], list[str]]:
    """The screen's candidates and their keys, shared by every seed when the whole space is
    screened (the canonical order does not depend on the seed)."""
    assert spec.screening is not None
    count = spec.screening.candidates
    size = space.size()
    seed = None if size is not None and size <= count else spec.seed
    return _candidates(spec.search_space.model_dump_json(), seed, count)


@functools.lru_cache(maxsize=_CACHED_PRIORS)
def _candidates(
    search_space_json: str, seed: int | None, count: int
) -> tuple[list[Assignment], list[str]]:
    space = build_space(_SEARCH_SPACES.validate_json(search_space_json))
    candidates = screening_candidates(space, seed or 0, count)
    return candidates, [space.key(c) for c in candidates]


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rank correlation (ties at their mean rank); None below three pairs or when
    either side is constant."""
    if len(xs) < 3 or len(xs) != len(ys):
        return None
    rx, ry = rank_scores(list(xs)), rank_scores(list(ys))
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    if vx == 0 or vy == 0:
        return None
    return float(cov / (vx * vy) ** 0.5)


def screening_summary(
    spec: ExperimentSpec, space: SearchSpace, records: Sequence[TrialRecord]
) -> dict[str, Any] | None:
    """What the screen did and whether it helped: architectures screened, wall seconds, and
    per proxy (and for the ensemble) the Spearman rank correlation between its score and the
    objective over the candidates trained so far."""
    if spec.screening is None:
        return None
    screens = [r for r in records if r.role is TrialRole.SCREEN]
    if not screens:
        return {"state": TrialState.PENDING.value, "proxies": list(spec.screening.proxies)}
    screen = screens[-1]
    out: dict[str, Any] = {
        "trial": screen.name,
        "state": screen.state.value,
        "proxies": list(spec.screening.proxies),
        "candidates": spec.screening.candidates,
    }
    if screen.started_at is not None and screen.finished_at is not None:
        out["seconds"] = round(screen.finished_at - screen.started_at, 3)
    if screen.state is TrialState.SUCCEEDED and screen.screen_scores is None:
        # In a cluster the scores live in ConfigMaps; someone deleted them.
        out["message"] = "its scores are gone; the search goes on without them"
    if screen.state is not TrialState.SUCCEEDED or not screen.screen_scores:
        return out
    candidates, keys = screened_candidates(spec, space)
    position = {key: i for i, key in enumerate(keys)}
    metric = spec.objective.metric
    sign = 1.0 if spec.objective.direction == "maximize" else -1.0
    trained = [
        (position[r.key], sign * r.metrics[metric])
        for r in records
        if r.role is TrialRole.CANDIDATE and metric in r.metrics and r.key in position
    ]
    prior = screening_prior(spec, space, screen)
    out["screened"] = len(candidates)
    out["trainedScreened"] = len(trained)
    correlations: dict[str, float | None] = {}
    for proxy, values in screen.screen_scores.items():
        pairs = [(values[i], y) for i, y in trained if values[i] is not None]
        correlations[proxy] = _rounded(
            spearman([float(x) for x, _ in pairs if x is not None], [y for _, y in pairs])
        )
    if len(screen.screen_scores) > 1:
        correlations["ensemble"] = _rounded(
            spearman([prior.score(keys[i]) for i, _ in trained], [y for _, y in trained])
        )
    out["spearman"] = correlations
    return out


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def reported_scores(lines: Sequence[str]) -> ScreenScores | None:
    """The scores of the last ``screen`` event in a screen trial's report lines (its report
    file locally, its pod's log in a cluster), per proxy; None if it reported none."""
    for line in reversed(lines):
        if '"screen"' not in line:
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(event, dict) or event.get("event") != "screen":
            continue
        scores = event.get("scores")
        if isinstance(scores, dict) and all(isinstance(v, list) for v in scores.values()):
            return {str(p): [None if x is None else float(x) for x in v] for p, v in scores.items()}
    return None
