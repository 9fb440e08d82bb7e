"""The one-line explanation of failed trials: the trainer's error, not a traceback frame."""

from __future__ import annotations

from kubenas.api.records import TrialRecord, TrialState
from kubenas.failures import explain_failures, failure_reason

CONFIG_ERROR = "exit code 2\nkubenas_trainer: error: hparam batch_size must be a number, got 'big'"
CRASH_WITH_TRACEBACK = (
    "exit code 1\n"
    "Traceback (most recent call last):\n"
    '  File "/app/kubenas_trainer/__main__.py", line 27, in main\n'
    "    run_trial(config, reporter)\n"
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n"
    "kubenas_trainer: error: OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
)
CLUSTER_TERMINATION = (
    "BackoffLimitExceeded: exit code 2; "
    '{"event": "error", "trial": "e-0001", "error": "invalid configuration: dataset must be '
    "digits, mnist1d, npz:PATH, idx:DIR or synthetic:CxHxW:CLASSES[:N], got 'x'\"}"
)


def _record(
    index: int, state: TrialState, message: str | None = None, reason: str | None = None
) -> TrialRecord:
    return TrialRecord(
        name=f"e-{index:04d}",
        index=index,
        params={},
        key=str(index),
        state=state,
        reason=reason,
        message=message,
    )


def test_the_trainers_error_line_is_the_reason() -> None:
    failed = _record(0, TrialState.FAILED, CONFIG_ERROR, "Crashed")
    assert failure_reason(failed) == "hparam batch_size must be a number, got 'big'"


def test_a_traceback_yields_its_error_not_a_frame() -> None:
    failed = _record(0, TrialState.FAILED, CRASH_WITH_TRACEBACK, "Crashed")
    assert failure_reason(failed) == (
        "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    )
    bare = CRASH_WITH_TRACEBACK.rsplit("\n", 1)[0]  # a trainer of your own, no error line
    assert failure_reason(_record(1, TrialState.FAILED, bare, "Crashed")).startswith(
        "torch.OutOfMemoryError: CUDA out of memory"
    )


def test_a_cluster_termination_message_yields_the_reported_error() -> None:
    failed = _record(0, TrialState.FAILED, CLUSTER_TERMINATION, "Crashed")
    assert failure_reason(failed).startswith("invalid configuration: dataset must be digits")


def test_a_timeout_says_so_rather_than_quote_the_training_output() -> None:
    message = "exceeded timeoutSeconds (3)\nepoch 1 done\nwarning: slow data loader"
    assert failure_reason(_record(0, TrialState.FAILED, message, "Timeout")) == (
        "exceeded timeoutSeconds (3)"
    )


def test_all_failures_alike_are_counted_against_every_trial() -> None:
    records = [_record(i, TrialState.FAILED, CONFIG_ERROR, "Crashed") for i in range(3)]
    assert explain_failures(records) == (
        "3 of 3 trials failed: hparam batch_size must be a number, got 'big'"
    )


def test_mixed_failures_name_the_most_common_reason_and_its_count() -> None:
    records = [
        _record(0, TrialState.SUCCEEDED),
        _record(1, TrialState.FAILED, CONFIG_ERROR, "Crashed"),
        _record(2, TrialState.FAILED, "exceeded timeoutSeconds (3)", "Timeout"),
        _record(3, TrialState.FAILED, CONFIG_ERROR, "Crashed"),
    ]
    assert explain_failures(records) == (
        "3 of 4 trials failed, 2 of them: hparam batch_size must be a number, got 'big'"
    )


def test_no_failure_is_said_plainly_and_long_reasons_are_cut() -> None:
    assert explain_failures([_record(0, TrialState.SUCCEEDED)]) == "none of 1 trials failed"
    long = _record(0, TrialState.FAILED, "exit code 1\nkubenas_trainer: error: " + "x" * 1000)
    assert len(explain_failures([long])) < 400
