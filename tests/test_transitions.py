"""The status machine of a run: allowed changes, status groups and the stuck rule."""

from __future__ import annotations

import itertools
import typing as t
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from flask_maintenance_tasks import InvalidTransition, RunStatus, audit, lifecycle, transitions
from flask_maintenance_tasks.models import Event, events_table, runs_table
from flask_maintenance_tasks.state import get_state
from flask_maintenance_tasks.store import open_session
from flask_maintenance_tasks.transitions import (
    ACTIVE,
    ALLOWED,
    COMPLETED,
    PAUSE_REQUEST,
    STOP_REQUESTED,
    STOPPED,
    TRANSITIONS,
    Transition,
    can_transition,
    is_stuck,
)
from flask_maintenance_tasks.transitions import (
    NOW as AT_CHANGE,
)
from tests.support.records import fresh_run

S = RunStatus

#: The peer's allowed changes (Shopify maintenance_tasks), written out on their own.
PEER = {
    S.ENQUEUED: {S.RUNNING, S.PAUSING, S.CANCELLING, S.ERRORED},
    S.RUNNING: {S.SUCCEEDED, S.PAUSING, S.CANCELLING, S.INTERRUPTED, S.ERRORED},
    S.PAUSING: {S.PAUSED, S.CANCELLING, S.SUCCEEDED, S.ERRORED},
    S.CANCELLING: {S.CANCELLED, S.SUCCEEDED, S.ERRORED},
    S.PAUSED: {S.ENQUEUED, S.CANCELLED},
    S.INTERRUPTED: {S.RUNNING, S.PAUSING, S.CANCELLING, S.ERRORED},
    S.ERRORED: {S.ENQUEUED},
    S.SUCCEEDED: set(),
    S.CANCELLED: set(),
}
#: Ours on top: an operator forcing a stuck run to stop (our stuck rule covers running too).
FORCED = {(S.RUNNING, S.PAUSED), (S.RUNNING, S.CANCELLED), (S.PAUSING, S.CANCELLED)}
#: Ours on top: a run started at a set time (the peer has none) becomes enqueued when
#: due, is cancelled at once (no job holds it), or errors when it cannot be queued.
SCHEDULED = {(S.SCHEDULED, S.ENQUEUED), (S.SCHEDULED, S.CANCELLED), (S.SCHEDULED, S.ERRORED)}

PEER_PAIRS = {(old, new) for old, targets in PEER.items() for new in targets}
ALL_CHANGES = [(old, new) for old, new in itertools.product(S, S) if old != new]
REFUSED = [pair for pair in ALL_CHANGES if pair not in PEER_PAIRS | FORCED | SCHEDULED]

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=timezone.utc)


def test_the_table_covers_every_status() -> None:
    assert set(ALLOWED) == set(S)


@pytest.mark.parametrize(("old", "new"), sorted(PEER_PAIRS))
def test_every_change_the_peer_allows_is_allowed(old: RunStatus, new: RunStatus) -> None:
    assert can_transition(old, new)


def test_changes_beyond_the_peer_are_only_forced_stops_and_scheduled_starts() -> None:
    ours = {(old, new) for old, targets in ALLOWED.items() for new in targets}

    assert ours - PEER_PAIRS == FORCED | SCHEDULED


@pytest.mark.parametrize(("old", "new"), REFUSED)
def test_any_other_change_is_refused(old: RunStatus, new: RunStatus) -> None:
    assert not can_transition(old, new)
    assert not [tr for tr in TRANSITIONS if old in tr.sources and tr.target == new]


@pytest.mark.parametrize("status", list(S))
def test_keeping_the_same_status_is_not_a_change(status: RunStatus) -> None:
    assert can_transition(status, status)


@pytest.mark.parametrize("status", [S.SUCCEEDED, S.CANCELLED])
def test_succeeded_and_cancelled_runs_never_change(status: RunStatus) -> None:
    assert [new for new in S if new != status and can_transition(status, new)] == []


def test_statuses_may_be_given_as_their_stored_strings() -> None:
    assert can_transition("paused", "enqueued")
    assert not can_transition("paused", "running")
    with pytest.raises(ValueError):
        can_transition("paused", "resting")


def test_refused_change_says_what_cannot_be_done_to_which_run() -> None:
    with pytest.raises(InvalidTransition) as caught:
        PAUSE_REQUEST.check("succeeded", run_id=7)

    assert str(caught.value) == "Cannot pause a succeeded run."
    assert (caught.value.action, caught.value.status, caught.value.run_id) == (
        "pause",
        "succeeded",
        7,
    )


@pytest.mark.parametrize(
    ("status", "article"),
    [("enqueued", "an"), ("errored", "an"), ("interrupted", "an"), ("paused", "a")],
)
def test_refused_change_message_uses_the_right_article(status: str, article: str) -> None:
    assert str(InvalidTransition("resume", status)) == f"Cannot resume {article} {status} run."


# -- groups --------------------------------------------------------------------------


def test_active_and_completed_split_the_statuses() -> None:
    assert ACTIVE | COMPLETED == set(S)
    assert ACTIVE & COMPLETED == set()
    assert COMPLETED == {S.SUCCEEDED, S.ERRORED, S.CANCELLED}


def test_stop_requested_and_stopped_groups() -> None:
    assert STOP_REQUESTED == {S.PAUSING, S.CANCELLING}
    assert STOPPED == {S.PAUSED, S.SUCCEEDED, S.ERRORED, S.CANCELLED}


def test_completed_runs_can_only_be_resumed_if_errored() -> None:
    assert [old for old in COMPLETED if can_transition(old, S.ENQUEUED)] == [S.ERRORED]


# -- the stuck rule --------------------------------------------------------------------


@pytest.mark.parametrize("status", [S.PAUSING, S.CANCELLING, S.RUNNING])
def test_run_not_updated_for_exactly_stuck_after_is_stuck(status: RunStatus) -> None:
    assert is_stuck(status, NOW - timedelta(seconds=300), NOW, 300)
    assert is_stuck(status.value, NOW - timedelta(days=2), NOW, 300)


@pytest.mark.parametrize("status", [S.PAUSING, S.CANCELLING, S.RUNNING])
def test_run_updated_within_stuck_after_is_not_stuck(status: RunStatus) -> None:
    assert not is_stuck(status, NOW - timedelta(seconds=300) + timedelta(microseconds=1), NOW, 300)
    assert not is_stuck(status, NOW, NOW, 300)


@pytest.mark.parametrize("status", sorted(set(S) - {S.PAUSING, S.CANCELLING, S.RUNNING}))
def test_runs_no_job_should_hold_are_never_stuck(status: RunStatus) -> None:
    assert not is_stuck(status, NOW - timedelta(days=30), NOW, 300)


def test_run_never_updated_is_not_stuck() -> None:
    assert not is_stuck(S.PAUSING, None, NOW, 300)


# -- the stuck rule as operators meet it -----------------------------------------------


def _make(mtasks: t.Any, db: t.Any, status: str, age: float) -> int:
    """A run of ListTask in ``status``, last updated ``age`` seconds ago."""
    run = mtasks.run("ListTask")
    updated = datetime.now(timezone.utc) - timedelta(seconds=age)
    db.session.execute(
        runs_table.update()
        .where(runs_table.c.id == run.id)
        .values(status=status, updated_at=updated)
    )
    db.session.commit()
    return int(run.id)


def test_pause_of_stuck_pausing_run_forces_paused(app: t.Any, mtasks: t.Any, db: t.Any) -> None:
    run_id = _make(mtasks, db, "pausing", age=301)

    mtasks.pause(run_id)

    run = fresh_run(run_id)
    assert (run.status, run.ended_at, run.job_id) == ("paused", None, None)


def test_pause_of_pausing_run_not_yet_stuck_changes_nothing(
    app: t.Any, mtasks: t.Any, db: t.Any
) -> None:
    run_id = _make(mtasks, db, "pausing", age=200)
    before = fresh_run(run_id)

    mtasks.pause(run_id)

    run = fresh_run(run_id)
    assert (run.status, run.updated_at, run.job_id) == ("pausing", before.updated_at, before.job_id)


def test_cancel_of_stuck_cancelling_run_forces_cancelled(
    app: t.Any, mtasks: t.Any, db: t.Any
) -> None:
    run_id = _make(mtasks, db, "cancelling", age=301)

    mtasks.cancel(run_id)

    run = fresh_run(run_id)
    assert (run.status, run.job_id) == ("cancelled", None)
    assert run.ended_at is not None


def test_pause_of_stuck_cancelling_run_is_refused(app: t.Any, mtasks: t.Any, db: t.Any) -> None:
    run_id = _make(mtasks, db, "cancelling", age=301)

    with pytest.raises(InvalidTransition, match="Cannot pause a cancelling run"):
        mtasks.pause(run_id)

    assert fresh_run(run_id).status == "cancelling"


def test_pause_of_succeeded_run_is_refused(app: t.Any, mtasks: t.Any, db: t.Any) -> None:
    run_id = _make(mtasks, db, "succeeded", age=0)

    with pytest.raises(InvalidTransition, match="Cannot pause a succeeded run"):
        mtasks.pause(run_id)

    assert db.session.scalar(sa.select(runs_table.c.status)) == "succeeded"


# -- every transition, applied to a real run in every status ---------------------------

#: What a caller gives each transition that takes values (a fixed, recognisable value).
GIVEN = {
    "job_id": "given-job",
    "tick_total": 42,
    "interruption_reason": "time_slice",
    "exclusive_key": None,
    "error_class": "ValueError",
    "error_message": "boom",
    "backtrace": ["x.py:1 in f"],
    "errored_element": {"id": 1},
}


#: Who the test's changes are made by, as the audit trail records it.
ACTOR = audit.Actor("tester", "python")

#: Each transition by its name in the state-machine module.
BY_NAME = {name: value for name, value in vars(transitions).items() if value in TRANSITIONS}


def test_every_transition_has_a_name_of_its_own() -> None:
    assert sorted(BY_NAME.values(), key=TRANSITIONS.index) == list(TRANSITIONS)


@pytest.mark.parametrize(
    "transition", TRANSITIONS, ids=lambda tr: next(n for n, v in BY_NAME.items() if v is tr)
)
def test_transition_applies_from_its_sources_only_and_writes_what_it_says(
    app: t.Any, mtasks: t.Any, db: t.Any, transition: Transition
) -> None:
    for status in S:
        run_id = _make(mtasks, db, status.value, age=0)
        before = fresh_run(run_id)
        # Only the change's own events count, not the run's creation.
        db.session.execute(events_table.delete())
        db.session.commit()

        with open_session(get_state().db) as session:
            changed = lifecycle.change(session, run_id, transition, actor=ACTOR, given=GIVEN)

        after = fresh_run(run_id)
        events = db.session.execute(
            sa.select(Event.action, Event.actor, Event.origin, Event.detail).where(
                Event.run_id == run_id
            )
        ).all()
        db.session.execute(events_table.delete())
        db.session.execute(runs_table.delete())
        db.session.commit()
        if status not in transition.sources:
            assert not changed.applied, status
            assert (after.status, after.lock_version) == (before.status, before.lock_version)
            assert events == [], status
            continue
        assert changed.transition is transition, status
        # The change's event was written with it, saying who made it.
        if transition.event is None:
            assert events == [], status
        else:
            assert [(e.action, e.actor, e.origin) for e in events] == [
                (transition.event, "tester", "python")
            ], status
        assert after.status == (transition.target or status)
        assert after.lock_version == before.lock_version + 1
        for name, value in transition.writes.items():
            if value is AT_CHANGE:
                assert getattr(after, name) >= before.updated_at, name
            elif not callable(value):
                assert getattr(after, name) == value, name
        for name in transition.given:
            assert getattr(after, name) == GIVEN[name], name
