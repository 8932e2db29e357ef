"""Previews: what a run would walk, counted under a timeout, with nothing written."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from flask_maintenance_tasks import MaintenanceTasksError, TaskNotFound
from flask_maintenance_tasks import preview as previews
from flask_maintenance_tasks.preview import AT_LEAST, COUNT_BOUND, ESTIMATE, EXACT
from flask_maintenance_tasks.state import get_state
from tests.support.records import fresh_run, seed_items
from tests.support.workers import drain
from tests.testapp import Item, db

pytestmark = pytest.mark.both_databases


def runs_count() -> int:
    from flask_maintenance_tasks.models import Run

    db.session.remove()
    return int(db.session.scalar(sa.select(sa.func.count()).select_from(Run)) or 0)


def test_a_preview_counts_shows_the_first_items_and_the_sql(app, mtasks):
    seed_items(40)
    preview = mtasks.preview("PreviewItemsTask", prefix="item-", limit_group=2, token="hunter22x")
    assert preview.valid
    assert (preview.count, preview.count_kind) == (27, EXACT)  # groups 0 and 1 of 40
    assert preview.count_text() == "27 items"
    assert preview.items[:3] == [  # group is the id modulo 3
        {"class": "Item", "id": 1},
        {"class": "Item", "id": 3},
        {"class": "Item", "id": 4},
    ]
    assert len(preview.items) == 10
    assert "FROM items" in preview.sql and "ORDER BY items.id" in preview.sql
    assert "LIMIT 100" in preview.sql
    assert preview.arguments["token"] == "[FILTERED]"
    assert "hunter22x" not in repr(preview.as_dict())
    assert preview.statements <= previews.MAX_STATEMENTS
    assert runs_count() == 0


def test_invalid_arguments_come_back_as_field_messages(app, mtasks):
    preview = mtasks.preview("PreviewItemsTask", {"limit_group": -1, "nope": 1})
    assert not preview.valid
    assert set(preview.errors) == {"nope"}
    preview = mtasks.preview("PreviewItemsTask", limit_group=-1)
    assert "limit_group" in preview.errors
    assert preview.count is None and preview.items == []
    with pytest.raises(TaskNotFound):
        mtasks.preview("NoSuchTask")


def test_other_collections(app, mtasks):
    seed_items(60)
    batches = mtasks.preview("PreviewBatchesTask")
    assert (batches.count, batches.count_kind) == (3, EXACT)
    assert "LIMIT 25" in batches.sql
    listed = mtasks.preview("ListTask")
    assert (listed.count, listed.items) == (5, ["a", "b", "c", "d", "e"])
    once = mtasks.preview("OnceTask")
    assert once.count == 1
    csv = mtasks.preview("ImportItemsTask")
    assert csv.needs_file and csv.count is None


def test_a_count_past_the_timeout_falls_back_to_a_bound_or_an_estimate(app, mtasks):
    db.session.execute(
        sa.insert(Item), [{"title": f"item-{n}", "group": 0, "counter": 0} for n in range(60_000)]
    )
    db.session.commit()
    preview = previews.preview(get_state(), "PreviewItemsTask", {"prefix": "item"}, timeout=0.001)
    assert preview.count_kind in (AT_LEAST, ESTIMATE, "unknown")
    if preview.count_kind == AT_LEAST:
        assert preview.count == COUNT_BOUND
        assert preview.count_text() == f"more than {COUNT_BOUND:,} items"
    if preview.count_kind == ESTIMATE:
        assert preview.count > 0 and "estimate" in preview.count_text()
    assert preview.notes
    assert preview.statements <= previews.MAX_STATEMENTS
    assert runs_count() == 0


def test_run_for_real_starts_a_normal_run_of_a_succeeded_dry_run(app, mtasks):
    seed_items(5)
    dry = mtasks.run("CountItemsTask", {"sleep": 0}, dry_run=True, error_policy="skip")
    with pytest.raises(MaintenanceTasksError, match="an enqueued dry run"):
        mtasks.run_for_real(dry.id)
    drain(app)
    real = mtasks.run_for_real(dry.id)
    assert (real.dry_run, real.arguments, real.error_policy) == (
        False,
        {"sleep": 0.0, "fail_on": None},
        "skip",
    )
    drain(app)
    assert fresh_run(real.id).status == "succeeded"
    with pytest.raises(MaintenanceTasksError, match="is not a dry run"):
        mtasks.run_for_real(real.id)


def define_slow_function() -> None:
    """``mtasks_slow(x)`` returns ``x`` after about 0.2 ms, on the session's connection."""
    connection = db.session.connection()
    if connection.dialect.name == "sqlite":

        def slow(value: int) -> int:
            time.sleep(0.0002)
            return value

        connection.connection.dbapi_connection.create_function("mtasks_slow", 1, slow)
    else:
        connection.exec_driver_sql(
            "CREATE OR REPLACE FUNCTION mtasks_slow(x bigint) RETURNS bigint LANGUAGE sql "
            "AS 'SELECT x FROM (SELECT pg_sleep(0.0002)) AS pause'"
        )
        db.session.commit()


def test_past_the_timeout_a_bounded_count_says_more_than(app, monkeypatch):
    """Counting 10,000 slow rows takes two seconds or more, past the timeout; counting up to
    21 takes a few milliseconds, however loaded the machine."""
    seed_items(10_000)
    define_slow_function()
    monkeypatch.setattr(previews, "COUNT_BOUND", 20)
    preview = previews.preview(get_state(), "PreviewSlowTask", {}, timeout=1.0)
    if preview.count_kind == ESTIMATE:
        # PostgreSQL: the planner's estimate, taken when it says more than the bound.
        assert db.engine.dialect.name == "postgresql" and preview.count > 20
        assert preview.count_text().endswith("(the database's estimate)")
    else:
        assert (preview.count_kind, preview.count) == (AT_LEAST, 20)
        assert preview.count_text() == "more than 20 items"
    assert preview.statements <= previews.MAX_STATEMENTS


def test_a_preview_keeps_the_callers_own_work(app, mtasks):
    from tests.testapp import Flag

    seed_items(3)
    db.session.add(Flag(name="callers", value="x"))
    db.session.flush()
    assert mtasks.preview("PreviewItemsTask").count == 3
    db.session.commit()
    db.session.remove()
    assert list(db.session.scalars(sa.select(Flag.name))) == ["callers"]


def test_a_collection_that_commits_writes_nothing_in_a_preview(app, mtasks):
    from tests.testapp import Flag

    seed_items(3)
    preview = mtasks.preview("WritingCollectionTask")
    assert any("could not be built" in note for note in preview.notes), preview.notes
    db.session.remove()
    assert list(db.session.scalars(sa.select(Flag.name))) == []


def test_values_the_database_refuses_become_a_note(app, mtasks):
    seed_items(3)
    preview = mtasks.preview("PreviewItemsTask", prefix="a\x00b")
    assert preview.valid
    if db.engine.dialect.name == "postgresql":
        assert preview.notes == ["The database refused a statement of the preview: DataError."]
    huge = mtasks.preview("PreviewItemsTask", prefix="x" * 200_000)
    assert huge.valid
