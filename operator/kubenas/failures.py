"""Why trials failed, in one line a person can act on.

A failed record's ``message`` is the runtime's own first line (``exit code 2``, ``exceeded
timeoutSeconds (300)``) followed by the trainer's stderr tail, or in a cluster the pod's
termination message. The telling part is the trainer's error, not a traceback frame, so that is
what :func:`explain_failures` picks, for the final line of ``kubenas run`` and the status.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence

from kubenas.api.records import TrialRecord, TrialState

# How ``python -m kubenas_trainer`` (and argparse-style tools) print the error they exit with.
_ERROR_LINE = re.compile(r"^\S+: error: (?P<error>.+)$")
LONGEST_REASON = 300


def _reported_error(line: str) -> str | None:
    """The ``error`` of a JSON error event (a trainer's termination message) within ``line``."""
    start = line.find("{")
    if start < 0:
        return None
    try:
        event = json.loads(line[start:])
    except json.JSONDecodeError:
        return None
    error = event.get("error") if isinstance(event, dict) else None
    return str(error) if error else None


def failure_reason(record: TrialRecord) -> str:
    """The most telling line of one failed trial's message."""
    lines = [line for line in (record.message or "").splitlines() if line.strip()]
    for line in reversed(lines):
        match = _ERROR_LINE.match(line.strip())
        if match:
            return match["error"]
        reported = _reported_error(line)
        if reported:
            return reported
    if record.reason == "Timeout" or len(lines) < 2:
        return lines[0].strip() if lines else record.reason or "failed"
    # The stderr tail: its last line at column 0 that is not a traceback's header or frame
    # (an exception line such as ``RuntimeError: CUDA out of memory``).
    tail = [
        line.strip()
        for line in lines[1:]
        if not line[0].isspace() and not line.startswith("Traceback (most recent call last)")
    ]
    return tail[-1] if tail else lines[0].strip()


def _shorten(text: str) -> str:
    return text if len(text) <= LONGEST_REASON else text[: LONGEST_REASON - 3] + "..."


def explain_failures(records: Sequence[TrialRecord]) -> str:
    """How many trials failed out of how many, and the most common reason, e.g.
    ``3 of 3 trials failed: hparam batch_size must be a number, got 'big'``."""
    failed = [r for r in records if r.state == TrialState.FAILED]
    if not failed:
        return f"none of {len(records)} trials failed"
    reasons = Counter(failure_reason(r) for r in failed)
    reason, count = reasons.most_common(1)[0]
    head = f"{len(failed)} of {len(records)} trials failed"
    if count == len(failed):
        return f"{head}: {_shorten(reason)}"
    return f"{head}, {count} of them: {_shorten(reason)}"
