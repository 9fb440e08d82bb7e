"""How a Job ended, read from its status: shared by the trial and worker Job paths."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

Json = dict[str, Any]


class JobOutcome(StrEnum):
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


def job_outcome(job: Mapping[str, Any]) -> JobOutcome | None:
    """How the Job ended, or None while it has not."""
    status = job.get("status") or {}
    if (status.get("succeeded") or 0) >= 1:
        return JobOutcome.SUCCEEDED
    if failed_condition(job) is not None:
        return JobOutcome.FAILED
    return None


def failed_condition(job: Mapping[str, Any]) -> Json | None:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            return dict(condition)
    return None
