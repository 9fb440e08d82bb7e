"""Record transitions and the one apply path every runtime uses."""

from __future__ import annotations

from kubenas import transitions
from kubenas.api.records import TrialRecord, TrialState
from kubenas.engine import Decisions, StartTrial
from kubenas.schedulers import Promotion, Stop


def _record(**changes: object) -> TrialRecord:
    base = TrialRecord(name="e-0000", index=0, params={"a": 1}, key="k0", fidelity=1)
    return base.with_changes(**changes)


def _start(index: int) -> StartTrial:
    return StartTrial(
        index=index, params={"a": index}, key=f"k{index}", architecture={}, fidelity=1
    )


class RecordingEffects:
    """Remembers what the apply path asked for, in order; runs start at once, like local."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, TrialState]] = []

    def halt(self, record: TrialRecord) -> str:
        self.calls.append(("halt", record.name, record.state))
        return "stderr tail"

    def save(self, before: TrialRecord | None, after: TrialRecord) -> None:
        self.calls.append(("save", after.name, after.state))

    def launch(self, record: TrialRecord) -> TrialRecord:
        self.calls.append(("launch", record.name, record.state))
        return transitions.started(record, 100.0)


def test_promotion_clears_the_last_runs_end() -> None:
    finished = _record(
        state=TrialState.SUCCEEDED,
        reason="Stale",
        message="old",
        started_at=1.0,
        finished_at=9.0,
        intermediate=[(1, 0.5)],
    )
    promoted = transitions.promoted(finished, Promotion("e-0000", 3, "ckpt.pt"), now=10.0)
    assert promoted.state is TrialState.PENDING
    assert (promoted.fidelity, promoted.resumed_from) == (3, "ckpt.pt")
    assert promoted.reason is None and promoted.finished_at is None
    assert promoted.started_at is None and promoted.intermediate == []
    assert promoted.queued_at == 10.0


def test_queue_time_adds_up_over_runs_and_the_clock_starts_at_the_run() -> None:
    queued = transitions.created("e-0000", _start(0), now=10.0)
    assert queued.state is TrialState.PENDING and queued.started_at is None
    first = transitions.started(queued, at=50.0)
    assert first.state is TrialState.RUNNING and first.started_at == 50.0
    assert first.queue_seconds == 40.0 and first.queued_at is None
    again = transitions.promoted(first, Promotion("e-0000", 3, None), now=60.0)
    second = transitions.started(again, at=65.0)
    assert second.queue_seconds == 45.0


def test_started_keeps_a_running_record() -> None:
    running = transitions.started(transitions.created("e-0000", _start(0), 0.0), at=5.0)
    assert transitions.started(running, at=99.0) is running


def test_success_folds_metrics_into_the_fidelity_and_says_where_they_came_from() -> None:
    running = _record(state=TrialState.RUNNING, fidelity=3, results={1: {"acc": 0.5}})
    done = transitions.succeeded(
        running, {"acc": 0.7}, checkpoint="c.pt", source="prometheus", now=5.0
    )
    assert done.state is TrialState.SUCCEEDED
    assert done.results == {1: {"acc": 0.5}, 3: {"acc": 0.7}}
    assert done.metrics_source == "prometheus" and done.checkpoint == "c.pt"


def test_progress_ignores_epochs_already_recorded() -> None:
    running = _record(state=TrialState.RUNNING, intermediate=[(1, 0.1), (2, 0.2)])
    assert transitions.progressed(running, [(2, 0.2)]) is running
    assert transitions.progressed(running, [(4, 0.4), (3, 0.3)]).intermediate == [
        (1, 0.1),
        (2, 0.2),
        (3, 0.3),
        (4, 0.4),
    ]


def test_a_failing_stop_keeps_what_the_run_left_behind() -> None:
    running = _record(state=TrialState.RUNNING)
    out = transitions.stopped(running, Stop("e-0000", "Timeout", "too long", failed=True), 3.0, "x")
    assert (out.state, out.reason, out.message) == (TrialState.FAILED, "Timeout", "too long\nx")
    calm = transitions.stopped(running, Stop("e-0000", "EarlyStopped", "worse"), 3.0, "x")
    assert (calm.state, calm.message) == (TrialState.STOPPED, "worse")


def test_apply_order_stops_then_promotions_then_starts_each_saved_before_launch() -> None:
    records = {
        "e-0000": _record(state=TrialState.RUNNING, started_at=1.0),
        "e-0001": _record(name="e-0001", index=1, key="k1", state=TrialState.SUCCEEDED),
    }
    decisions = Decisions(
        start=(_start(2),),
        promote=(Promotion("e-0001", 3, "c.pt"),),
        stop=(Stop("e-0000", "Timeout", "too long", failed=True),),
    )
    effects = RecordingEffects()
    applied = transitions.apply_decisions(
        decisions, records, effects, name_of=lambda i: f"e-{i:04d}", now=50.0
    )
    assert effects.calls == [
        ("halt", "e-0000", TrialState.RUNNING),
        ("save", "e-0000", TrialState.FAILED),
        ("save", "e-0001", TrialState.PENDING),
        ("launch", "e-0001", TrialState.PENDING),
        ("save", "e-0002", TrialState.PENDING),
        ("launch", "e-0002", TrialState.PENDING),
    ]
    assert applied.changed == ("e-0000", "e-0001", "e-0002")
    assert applied.records["e-0000"].message == "too long\nstderr tail"
    assert applied.records["e-0002"].state is TrialState.RUNNING
    assert applied.records["e-0002"].queue_seconds == 50.0


def test_a_stop_of_a_trial_that_already_ended_changes_nothing() -> None:
    records = {"e-0000": _record(state=TrialState.SUCCEEDED)}
    effects = RecordingEffects()
    applied = transitions.apply_decisions(
        Decisions(stop=(Stop("e-0000", "ExperimentFinished", "done"),)),
        records,
        effects,
        name_of=str,
        now=1.0,
    )
    assert effects.calls == [] and applied.records == records
