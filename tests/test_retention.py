"""Retention: ``prune`` deletes old ended runs with what belongs to them, in batches."""

from __future__ import annotations

import dataclasses
import io
import threading
import time
import typing as t
from datetime import timedelta

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_maintenance_tasks import MaintenanceTasks, Pruned
from flask_maintenance_tasks.config import parse_duration
from flask_maintenance_tasks.exceptions import ConfigurationError
from flask_maintenance_tasks.models import (
    csv_chunks_table,
    csv_files_table,
    events_table,
    failures_table,
    runs_table,
    utcnow,
)
from flask_maintenance_tasks.retention import prune
from flask_maintenance_tasks.state import get_state
from tests.support.apps import FAST, make_app
from tests.support.waiting import wait_until
from tests.support.workers import drain

# Both databases: what goes is chosen and deleted by SQL, in transactions of its own.
pytestmark = pytest.mark.both_databases

DAY = timedelta(days=1)


@pytest.fixture
def settings() -> dict[str, t.Any]:
    # Workers of this module recover and prune every half second.
    return {**FAST, "recovery_interval": 0.5, "prune_interval": 0.5}


def _run(
    db: t.Any,
    task: str = "CountItemsTask",
    status: str = "succeeded",
    ended_days_ago: float | None = 100,
    **values: t.Any,
) -> int:
    """A run row as a finished run leaves it, ended ``ended_days_ago`` days ago."""
    ended = None if ended_days_ago is None else utcnow() - ended_days_ago * DAY
    result = db.session.execute(
        runs_table.insert().values(
            task_name=task, status=status, ended_at=ended, created_at=ended or utcnow(), **values
        )
    )
    db.session.commit()
    return int(result.inserted_primary_key[0])


def _belongings(db: t.Any, run_id: int, key: str | None = None) -> None:
    """Two failures, two events and a CSV file of two chunks for run ``run_id``."""
    db.session.execute(
        failures_table.insert(),
        [{"run_id": run_id, "error_class": "ValueError"} for _ in range(2)],
    )
    db.session.execute(
        events_table.insert(),
        [
            {"run_id": run_id, "task_name": "CountItemsTask", "action": a, "origin": "engine"}
            for a in ("started", "succeeded")
        ],
    )
    key = key or f"key-{run_id}"
    db.session.execute(
        csv_files_table.insert().values(
            run_id=run_id, storage_key=key, filename="f.csv", size=4, line_count=1
        )
    )
    db.session.execute(
        csv_chunks_table.insert(),
        [{"storage_key": key, "start_byte": n, "data": b"ab"} for n in (0, 2)],
    )
    db.session.commit()


def _prune_while(
    engine: sa.Engine,
    hold: t.Callable[[sa.Connection, threading.Event, threading.Event], None],
) -> Pruned:
    """Prune once ``hold``, in a connection of another thread, says it holds its write
    (it sets its first event); its second event is set once the prune is done."""
    holding, release = threading.Event(), threading.Event()

    def other() -> None:
        with engine.connect() as connection:
            hold(connection, holding, release)

    thread = threading.Thread(target=other)
    thread.start()
    try:
        assert holding.wait(10)
        return prune(get_state())
    finally:
        release.set()
        thread.join()


def _ids(db: t.Any) -> list[int]:
    db.session.rollback()
    return list(db.session.scalars(sa.select(runs_table.c.id).order_by(runs_table.c.id)))


def _count(db: t.Any, table: sa.Table) -> int:
    db.session.rollback()
    return int(db.session.scalar(sa.select(sa.func.count()).select_from(table)))


def _counts(db: t.Any) -> dict[str, int]:
    tables = (runs_table, failures_table, events_table, csv_files_table, csv_chunks_table)
    return {table.name: _count(db, table) for table in tables}


def test_old_ended_runs_go_with_their_failures_events_csv_files_and_partitions(app, db):
    old = [_run(db, status=s) for s in ("succeeded", "errored", "cancelled")]
    for run_id in old:
        _belongings(db, run_id)
    family = _run(db, partitions=2)
    parts = [_run(db, parent_id=family, partition=n) for n in (0, 1)]
    _belongings(db, parts[0])
    latest = _run(db, ended_days_ago=1)

    pruned = prune(get_state())

    assert _ids(db) == [latest]
    assert (pruned.runs, pruned.partitions) == (4, 2)
    assert (pruned.failures, pruned.events, pruned.csv_files) == (8, 8, 4)
    assert _counts(db) == {
        "maintenance_tasks_runs": 1,
        "maintenance_tasks_failures": 0,
        "maintenance_tasks_events": 0,
        "maintenance_tasks_csv_files": 0,
        "maintenance_tasks_csv_chunks": 0,
    }


def test_runs_ended_within_the_retention_stay(app, db):
    old = _run(db, ended_days_ago=91)
    recent = [_run(db, ended_days_ago=89), _run(db, ended_days_ago=1)]

    pruned = prune(get_state())

    assert pruned.runs == 1
    assert old not in _ids(db)
    assert _ids(db) == recent


def test_the_latest_run_of_each_task_stays_however_old(app, db):
    _run(db, task="CountItemsTask", ended_days_ago=300)
    latest_count = _run(db, task="CountItemsTask", ended_days_ago=200)
    only_import = _run(db, task="ImportItemsTask", status="errored", ended_days_ago=400)
    # A partition is newer than its run, but not a run of the task of its own.
    family = _run(db, task="GoneTask", ended_days_ago=150)
    _run(db, task="GoneTask", parent_id=family, partition=0, ended_days_ago=150)

    prune(get_state())

    assert set(_ids(db)) >= {latest_count, only_import, family}
    assert len(_ids(db)) == 4


def test_active_runs_stay_whatever_they_say_about_their_end(app, db):
    # A run resumed after an error keeps no end; this one says otherwise, and still stays.
    active = [
        _run(db, status=s, ended_days_ago=100)
        for s in ("enqueued", "running", "paused", "interrupted", "pausing", "cancelling")
    ]
    _run(db, ended_days_ago=1)

    assert prune(get_state()).runs == 0
    assert set(active) <= set(_ids(db))


def test_a_run_is_kept_while_one_of_its_partitions_is_active(app, db):
    family = _run(db, partitions=2)
    _run(db, parent_id=family, partition=0)
    _run(db, parent_id=family, partition=1, status="running", ended_days_ago=None)
    _run(db, ended_days_ago=1)

    assert prune(get_state()).runs == 0
    assert family in _ids(db)


@pytest.mark.parametrize("retry", ["running", "paused", "errored"])
def test_a_run_an_active_or_errored_retry_reads_stays(app, db, retry):
    """An errored retry may be resumed: it still walks its run's failures."""
    retried = _run(db)
    _belongings(db, retried)
    _run(db, status=retry, ended_days_ago=None if retry != "errored" else 1, retry_of_id=retried)

    assert prune(get_state()).runs == 0
    assert retried in _ids(db)
    assert _count(db, failures_table) == 2


@pytest.mark.parametrize("retry", ["succeeded", "cancelled"])
def test_a_run_whose_retry_ended_for_good_goes(app, db, retry):
    retried = _run(db)
    kept = _run(db, status=retry, ended_days_ago=1, retry_of_id=retried)

    assert prune(get_state()).runs == 1
    assert _ids(db) == [kept]


def test_a_run_resumed_while_a_prune_chooses_is_never_deleted(app, db):
    """The resume holds its write (SQLite: the database's lock, PostgreSQL: the row's)
    when the prune starts, and commits a moment later."""
    resumed, other = _run(db, status="errored"), _run(db)
    _run(db, ended_days_ago=1)

    def resume(connection: sa.Connection, holding: threading.Event, _: threading.Event) -> None:
        connection.execute(
            runs_table.update()
            .where(runs_table.c.id == resumed)
            .values(status="enqueued", ended_at=None)
        )
        holding.set()
        time.sleep(0.5)
        connection.commit()

    pruned = _prune_while(db.engine, resume)

    assert resumed in _ids(db)
    assert other not in _ids(db)
    assert pruned.runs == 1


def test_kept_runs_and_failures_lose_their_references_to_pruned_runs(app, db):
    retried = _run(db)
    retry = _run(db, ended_days_ago=1, retry_of_id=retried)
    _belongings(db, retry)
    again = _run(db, ended_days_ago=200)
    db.session.execute(failures_table.update().values(retried_by_id=again))
    db.session.commit()
    _run(db, ended_days_ago=1)

    assert prune(get_state()).runs == 2

    db.session.rollback()
    assert (
        db.session.scalar(sa.select(runs_table.c.retry_of_id).where(runs_table.c.id == retry))
        is None
    )
    assert set(db.session.scalars(sa.select(failures_table.c.retried_by_id))) == {None}


def test_a_csv_file_shared_with_a_kept_run_stays(app, db):
    dry = _run(db, dry_run=True)
    _belongings(db, dry, key="shared")
    real = _run(db, ended_days_ago=1)
    db.session.execute(
        csv_files_table.insert().values(
            run_id=real, storage_key="shared", filename="f.csv", size=4, line_count=1
        )
    )
    db.session.commit()

    assert prune(get_state()).csv_files == 1

    assert _count(db, csv_files_table) == 1
    assert _count(db, csv_chunks_table) == 2
    assert get_state().csv_storage.open("shared").read() == b"abab"


def test_a_real_csv_run_goes_with_its_stored_file(app, mtasks, db):
    run = mtasks.run("ImportItemsTask", csv_file=("items.csv", io.BytesIO(b"id,title\n1,a\n")))
    drain(app)
    assert mtasks.get_run(run.id).status == "succeeded"
    _run(db, task="ImportItemsTask", ended_days_ago=0)
    assert _count(db, csv_chunks_table) == 1

    pruned = mtasks.prune(older_than=timedelta(seconds=0.001))

    assert (pruned.runs, pruned.csv_files) == (1, 1)
    assert pruned.events >= 2
    assert _count(db, csv_chunks_table) == 0
    assert mtasks.get_run(run.id) is None


def test_a_run_locked_by_another_transaction_is_skipped_not_waited_for(app, db, database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("row locks that a prune could skip: PostgreSQL only")
    locked, free = _run(db), _run(db)
    _run(db, ended_days_ago=1)

    def hold_the_lock(
        connection: sa.Connection, holding: threading.Event, release: threading.Event
    ) -> None:
        # An operator's resume, say, between its read of the run and its commit.
        query = sa.select(runs_table.c.id).where(runs_table.c.id == locked)
        connection.execute(query.with_for_update())
        holding.set()
        release.wait(5)
        connection.rollback()

    pruned = _prune_while(db.engine, hold_the_lock)

    assert pruned.runs == 1
    assert locked in _ids(db)
    assert free not in _ids(db)


def test_a_csv_file_kept_in_a_directory_is_deleted_with_its_run(app_env, tmp_path):
    folder = tmp_path / "csv"
    with make_app(csv_storage=str(folder)) as app:
        from tests.testapp import db, mtasks

        run = mtasks.run("ImportItemsTask", csv_file=("items.csv", io.BytesIO(b"id,title\n1,a\n")))
        drain(app)
        assert mtasks.get_run(run.id).status == "succeeded"
        assert len(list(folder.iterdir())) == 1
        _run(db, task="ImportItemsTask", ended_days_ago=0)

        pruned = mtasks.prune(older_than=0.001)

        assert (pruned.runs, pruned.csv_files) == (1, 1)
        assert list(folder.iterdir()) == []


def test_a_dry_run_deletes_nothing_and_counts_what_a_prune_deletes(app, db):
    for _ in range(3):
        _belongings(db, _run(db))
    family = _run(db)
    _run(db, parent_id=family, partition=0)
    _run(db, ended_days_ago=1)
    before = _counts(db)

    dry = prune(get_state(), dry_run=True, batch_size=2)

    assert _counts(db) == before
    assert (dry.runs, dry.partitions, dry.failures, dry.events, dry.csv_files) == (4, 1, 6, 6, 3)
    done = prune(get_state(), batch_size=2)
    assert dataclasses.replace(done, dry_run=True, ended_before=dry.ended_before) == dry


def test_retention_none_keeps_everything(app, db):
    old = _run(db, ended_days_ago=10_000)
    _run(db, ended_days_ago=1)
    state = get_state()
    state.settings = dataclasses.replace(state.settings, retention=None)

    pruned = prune(state)

    assert pruned.runs == 0
    assert pruned.ended_before is None
    assert old in _ids(db)
    assert "Retention is off" in str(pruned)


def test_older_than_overrides_the_retention(app, mtasks, db):
    ten_days = _run(db, ended_days_ago=10)
    _run(db, ended_days_ago=1)

    assert mtasks.prune().runs == 0
    assert mtasks.prune(older_than="5d").runs == 1
    assert ten_days not in _ids(db)


def test_each_batch_is_a_transaction_of_its_own(app, db):
    for _ in range(7):
        _run(db)
    _run(db, ended_days_ago=1)
    engine = db.engine
    commits: list[int] = []

    def committed(connection: sa.Connection) -> None:
        commits.append(1)

    sa.event.listen(engine, "commit", committed)
    try:
        pruned = prune(get_state(), batch_size=3)
    finally:
        sa.event.remove(engine, "commit", committed)

    assert (pruned.runs, pruned.batches) == (7, 3)
    # One transaction would commit once.
    assert len(commits) == 3


def test_a_prune_stopped_after_max_batches_says_more_are_due(app, db):
    for _ in range(5):
        _run(db)
    _run(db, ended_days_ago=1)

    first = prune(get_state(), batch_size=2, max_batches=1)

    assert (first.runs, first.more) == (2, True)
    assert "More runs may be due" in str(first)
    assert prune(get_state(), batch_size=2).runs == 3


def test_prune_command_deletes_and_says_what(app, cli, db):
    _belongings(db, _run(db))
    latest = _run(db, ended_days_ago=1)

    result = cli("prune")

    assert result.exit_code == 0, result.output
    assert result.output.startswith("Deleted 1 run, 2 failures, 2 events, 1 CSV file of runs")
    assert _ids(db) == [latest]


def test_prune_command_dry_run_deletes_nothing(app, cli, db):
    _belongings(db, _run(db, ended_days_ago=3))
    _run(db, ended_days_ago=1)
    before = _counts(db)

    result = cli("prune", "--older-than", "48h", "--dry-run")

    assert result.exit_code == 0, result.output
    assert result.output.startswith(
        "Would delete 1 run, 2 failures, 2 events, 1 CSV file of runs ended before"
    )
    assert _counts(db) == before


@pytest.mark.parametrize(
    "given", ["soon", "-5d", "0", "0s", "5 weeks", "1e400", "", "\u0663d", "1\u0662h", "1" * 400]
)
def test_prune_command_refuses_a_bad_duration_and_deletes_nothing(app, cli, db, given):
    _run(db, ended_days_ago=1000)
    _run(db, ended_days_ago=1)

    result = cli("prune", "--older-than", given)

    assert result.exit_code == 2
    assert "Invalid value for '--older-than'" in result.output
    assert len(_ids(db)) == 2


@pytest.mark.parametrize(
    "given",
    [
        "soon",
        -1,
        0,
        "0d",
        timedelta(0),
        True,
        pytest.param(10**400, id="10**400"),
        pytest.param(10**5000, id="10**5000"),
        1e400,
        "\u0663d",
    ],
)
def test_a_bad_retention_setting_fails_init_app(database_url, given):
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI=database_url, MAINTENANCE_TASKS_RETENTION=given)
    db = SQLAlchemy(app)

    with pytest.raises(ConfigurationError, match="MAINTENANCE_TASKS_RETENTION: .* None to keep"):
        MaintenanceTasks(app, db=db)


@pytest.mark.parametrize(
    ("given", "seconds"),
    [
        (None, None),
        (3600, 3600.0),
        (timedelta(days=2), 172800.0),
        ("90d", 7776000.0),
        ("12h", 43200.0),
        ("30m", 1800.0),
        ("45", 45.0),
    ],
)
def test_the_retention_setting_takes_durations(database_url, given, seconds):
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI=database_url, MAINTENANCE_TASKS_RETENTION=given)
    MaintenanceTasks(app, db=SQLAlchemy(app))

    assert get_state(app).settings.retention == seconds


def test_the_python_api_refuses_a_bad_duration(app, mtasks, db):
    _run(db, ended_days_ago=1000)
    _run(db, ended_days_ago=1)

    with pytest.raises(ValueError, match="'soon' is not a duration"):
        mtasks.prune(older_than="soon")
    with pytest.raises(ValueError, match="longer than 1,000 years"):
        mtasks.prune(older_than=10**400)
    with pytest.raises(ValueError, match="not a duration"):
        mtasks.prune(older_than="\u0663d")
    assert len(_ids(db)) == 2


@pytest.mark.parametrize(
    ("given", "meant"), [(90, '"90d"'), (" 90 ", '"90d"'), (0.5, '"0.5d"'), ("30m", None)]
)
def test_a_retention_under_an_hour_is_taken_with_a_warning(database_url, caplog, given, meant):
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI=database_url, MAINTENANCE_TASKS_RETENTION=given)

    with caplog.at_level("WARNING", logger="flask_maintenance_tasks"):
        MaintenanceTasks(app, db=SQLAlchemy(app))

    warned = [r.getMessage() for r in caplog.records if "RETENTION" in r.getMessage()]
    assert len(warned) == 1
    assert "every ended run except each task's latest" in warned[0]
    assert "1800 seconds" in warned[0] if meant is None else meant in warned[0]
    assert ("days" in warned[0]) is (meant is not None)
    assert get_state(app).settings.retention == parse_duration(given)


@pytest.mark.parametrize("given", [None, 3600, "90d"])
def test_a_retention_of_an_hour_or_more_is_taken_without_a_word(database_url, caplog, given):
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI=database_url, MAINTENANCE_TASKS_RETENTION=given)

    with caplog.at_level("WARNING", logger="flask_maintenance_tasks"):
        MaintenanceTasks(app, db=SQLAlchemy(app))

    assert not [r for r in caplog.records if "RETENTION" in r.getMessage()]


def test_a_worker_prunes_on_its_maintenance_hook(app, db, workers):
    old = [_run(db) for _ in range(3)]
    latest = _run(db, ended_days_ago=1)

    workers.start()

    wait_until(lambda: _ids(db) == [latest], timeout=30, what="the worker to prune")
    assert not set(old) & set(_ids(db))


def test_a_prune_that_fails_is_logged_leaves_its_batch_whole_and_spares_the_worker(app, db, caplog):
    from flask_maintenance_tasks.worker import MaintenanceSimpleWorker, recovering_worker

    executor = get_state().executor
    worker = recovering_worker(
        MaintenanceSimpleWorker, [executor.queue()], app, 60.0, connection=executor.connection
    )
    old = _run(db)
    _belongings(db, old)
    _run(db, ended_days_ago=1)
    before = _counts(db)
    # The failures table missing: the batch fails after its first statements.
    db.session.execute(sa.text("ALTER TABLE maintenance_tasks_failures RENAME TO hidden_failures"))
    db.session.commit()
    try:
        more = worker.prune()
    finally:
        db.session.rollback()
        db.session.execute(
            sa.text("ALTER TABLE hidden_failures RENAME TO maintenance_tasks_failures")
        )
        db.session.commit()

    assert more is False
    assert "Pruning old runs failed; trying again later" in caplog.text
    assert _counts(db) == before
