"""The audit trail: one event per operator action and per change of a run's status."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from flask_maintenance_tasks import InvalidArguments, InvalidTransition, TaskNotFound, audit
from flask_maintenance_tasks.models import Event, Run, runs_table
from tests.support.records import assert_trail_agrees, fresh_run, seed_items, trail
from tests.support.workers import drain
from tests.testapp.maintenance import kinds

pytestmark = pytest.mark.both_databases

USER = audit.os_user()


def _events(db, **where) -> list[Event]:
    db.session.remove()
    query = sa.select(Event).order_by(Event.id)
    for name, value in where.items():
        query = query.where(getattr(Event, name) == value)
    return list(db.session.scalars(query))


def test_a_run_started_from_python_records_who_and_every_status_change(app, mtasks, db):
    seed_items(3)
    run = mtasks.run("CountItemsTask", actor="alice")
    drain(app)

    assert trail(run.id) == [
        ("started", "done", "alice"),
        ("began", "done", "worker"),
        ("succeeded", "done", "worker"),
    ]
    started, began, _ = _events(db, run_id=run.id)
    assert (started.origin, started.address) == ("python", audit.host())
    assert (began.origin, began.task_name) == ("engine", "CountItemsTask")
    assert fresh_run(run.id).started_by == "alice"
    assert_trail_agrees(run.id)


def test_without_an_actor_the_python_api_records_the_os_user(app, mtasks, db):
    run = mtasks.run("OnceTask")
    assert trail(run.id) == [("started", "done", USER)]
    assert fresh_run(run.id).started_by == USER


def test_pause_resume_and_cancel_are_recorded_with_their_actor(app, mtasks, db):
    seed_items(3)
    run = mtasks.run("CountItemsTask", actor="alice")
    mtasks.pause(run.id, actor="bob")
    drain(app)  # the job finds the pause request and settles it
    mtasks.resume(run.id, actor="carol")
    mtasks.cancel(run.id, actor="dave")
    drain(app)

    assert trail(run.id) == [
        ("started", "done", "alice"),
        ("pause_requested", "done", "bob"),
        ("paused", "done", "worker"),
        ("resumed", "done", "carol"),
        ("cancel_requested", "done", "dave"),
        ("cancelled", "done", "worker"),
    ]
    assert_trail_agrees(run.id)


def test_a_refused_action_is_recorded_with_its_reason_and_changes_no_run(app, mtasks, db):
    run = mtasks.run("OnceTask", actor="alice")
    drain(app)
    before = fresh_run(run.id)

    with pytest.raises(InvalidTransition):
        mtasks.pause(run.id, actor="mallory")
    with pytest.raises(InvalidTransition):
        mtasks.resume(run.id, actor="mallory")

    after = fresh_run(run.id)
    assert (after.status, after.lock_version) == (before.status, before.lock_version)
    refused = [e for e in _events(db, run_id=run.id) if e.outcome == "refused"]
    assert [(e.action, e.actor, e.detail) for e in refused] == [
        ("pause_requested", "mallory", "Cannot pause a succeeded run."),
        ("resumed", "mallory", "Cannot resume a succeeded run."),
    ]
    assert_trail_agrees(run.id)


def test_a_refused_start_names_the_invalid_fields_never_their_values(app, mtasks, db):
    secret = "hunter2-very-secret"
    with pytest.raises(InvalidArguments):
        mtasks.run("ParamsTask", {"content": "", "password": secret, "limit": secret}, actor="eve")

    (event,) = _events(db)
    assert (event.run_id, event.task_name, event.action, event.outcome) == (
        None,
        "ParamsTask",
        "started",
        "refused",
    )
    assert event.detail == "Invalid arguments: content, limit"
    assert secret not in repr([(e.detail, e.actor) for e in _events(db)])


def test_an_unknown_task_leaves_no_event(app, mtasks, db):
    with pytest.raises(TaskNotFound):
        mtasks.run("NoSuchTask", actor="eve")
    assert _events(db) == []


def test_an_errored_run_records_the_error_class_only(app, mtasks, db):
    run = mtasks.run("UnitFailingStartTask")
    drain(app)
    assert fresh_run(run.id).status == "errored"
    last = _events(db, run_id=run.id)[-1]
    assert (last.action, last.actor, last.origin) == ("errored", "worker", "engine")
    assert last.detail == fresh_run(run.id).error_class
    assert_trail_agrees(run.id)


def test_a_run_and_its_started_event_are_one_transaction(app, mtasks, db):
    """If the event cannot be written, neither is the run."""
    db.session.execute(sa.text("DROP TABLE maintenance_tasks_events"))
    db.session.commit()
    try:
        with pytest.raises(sa.exc.DBAPIError):
            mtasks.run("OnceTask")
        db.session.remove()
        assert db.session.scalar(sa.select(sa.func.count()).select_from(runs_table)) == 0
    finally:
        Event.__table__.create(db.engine)


def test_a_status_change_and_its_event_are_one_transaction(app, mtasks, db):
    run = mtasks.run("OnceTask")
    db.session.execute(sa.text("DROP TABLE maintenance_tasks_events"))
    db.session.commit()
    try:
        with pytest.raises(sa.exc.DBAPIError):
            mtasks.pause(run.id)
        assert fresh_run(run.id).status == "enqueued"
    finally:
        Event.__table__.create(db.engine)


def test_failed_writes_of_a_run_do_not_show_its_arguments(app, mtasks, db, caplog):
    """SQLAlchemy errors quote their parameters unless told not to; ours never do."""
    secret = "pw9f3k"  # short: a long value would be cut from the message anyway
    if db.engine.dialect.name == "sqlite":
        db.session.execute(
            sa.text(
                "CREATE TRIGGER refuse_runs BEFORE INSERT ON maintenance_tasks_runs "
                "BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END"
            )
        )
    else:
        db.session.execute(
            sa.text(
                "CREATE FUNCTION refuse_runs() RETURNS trigger AS $$ BEGIN "
                "RAISE EXCEPTION 'refused by a trigger'; END $$ LANGUAGE plpgsql"
            )
        )
        db.session.execute(
            sa.text(
                "CREATE TRIGGER refuse_runs BEFORE INSERT ON maintenance_tasks_runs "
                "FOR EACH ROW EXECUTE FUNCTION refuse_runs()"
            )
        )
    db.session.commit()
    caplog.set_level(logging.DEBUG)
    try:
        with pytest.raises(sa.exc.DBAPIError) as caught:
            mtasks.run("ParamsTask", {"content": secret, "password": secret})
    finally:
        db.session.rollback()
        db.session.execute(sa.text("DROP TRIGGER refuse_runs" + _ON_RUNS[db.engine.dialect.name]))
        db.session.commit()
    assert "refused by a trigger" in str(caught.value)
    assert secret not in str(caught.value)
    assert secret not in caplog.text


_ON_RUNS = {"sqlite": "", "postgresql": " ON maintenance_tasks_runs"}


def test_a_stop_asked_before_the_first_slice_calls_its_callback(app, mtasks, db):
    paused = mtasks.run("CallbacksTask")
    mtasks.pause(paused.id)
    drain(app)
    assert fresh_run(paused.id).status == "paused"
    assert kinds.EVENTS == ["pause"]

    mtasks.cancel(paused.id)  # a paused run is cancelled at once, by the runner
    assert kinds.EVENTS == ["pause", "cancel"]

    cancelled = mtasks.run("CallbacksTask")
    mtasks.cancel(cancelled.id)
    drain(app)
    assert fresh_run(cancelled.id).status == "cancelled"
    assert kinds.EVENTS == ["pause", "cancel", "cancel"]


def test_runs_of_many_actors_have_their_trails_read_in_one_query(app, mtasks, db):
    runs = [mtasks.run("ConcurrentCountTask", {"group": n}, actor=f"u{n}") for n in range(5)]
    drain(app)
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        statements.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", count)
    try:
        with Session(bind=db.engine) as session:
            found = audit.timelines(session, [r.id for r in runs], limit=2)
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", count)
    assert len(statements) == 1
    for run in runs:
        timeline = found[run.id]
        assert [e.action for e in timeline.events] == ["began", "succeeded"]
        assert timeline.omitted == 1
    assert {r.id for r in db.session.scalars(sa.select(Run))} == set(found)


def test_an_error_message_quoting_a_secret_argument_is_scrubbed(app, mtasks, db, caplog):
    arguments = {"api_key": "key-5150", "password": "pw-8088", "options": {"token": "tk-6502"}}
    run = mtasks.run("LeakyErrorTask", arguments)
    with caplog.at_level(logging.INFO):
        drain(app)

    stored = fresh_run(run.id)
    assert stored.status == "errored"
    assert stored.error_message == ("login refused for [FILTERED] with [FILTERED] and [FILTERED]")
    for secret in arguments["api_key"], arguments["password"], "tk-6502":
        assert secret not in caplog.text


def test_who_is_kept_as_the_columns_can_hold_it(app, mtasks, db):
    run = mtasks.run("OnceTask", actor="ni\x00ck" + "x" * 300)
    assert fresh_run(run.id).started_by == ("nick" + "x" * 300)[:255]
    assert audit.who_of({1: "a", "b": {"token": "t0k3n"}}, ["token"]) == (
        '{"1":"a","b":{"token":"[FILTERED]"}}'
    )
