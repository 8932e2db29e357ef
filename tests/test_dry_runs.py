"""Dry runs: every item processed, every tick rolled back, and what would change counted.

Both databases: savepoints, row counts and rollbacks are the database's.
"""

from __future__ import annotations

import hashlib

import pytest
import sqlalchemy as sa

from flask_maintenance_tasks import Failure
from flask_maintenance_tasks.testing import run_task, run_task_interrupted
from tests.support.records import fresh_run, seed_items
from tests.support.workers import drain
from tests.testapp import Flag, Item, db
from tests.testapp.maintenance.kinds import EVENTS

pytestmark = pytest.mark.both_databases


def checksum() -> str:
    """A digest of every row of the app's own tables."""
    db.session.remove()
    digest = hashlib.sha256()
    for model in (Item, Flag):
        for row in db.session.execute(
            sa.select(model.__table__).order_by(*model.__table__.primary_key)
        ):
            digest.update(repr(tuple(row)).encode())
    return digest.hexdigest()


def seed_mixed(count: int) -> None:
    seed_items(count)
    db.session.add_all(Flag(name=f"seed-{n}", value="s") for n in range(5, count + 1, 5))
    db.session.commit()


def expected_changes(count: int) -> dict:
    return {
        "flags": {
            "inserted": count // 10,
            "updated": 0,
            "deleted": count // 5,
            "columns": [],
        },
        "items": {
            "inserted": 0,
            "updated": count + count // 7,
            "deleted": 0,
            "columns": ["counter", "group", "title"],
        },
    }


def test_a_dry_run_changes_nothing_and_counts_what_it_would_change(app, mtasks):
    seed_mixed(230)
    before = checksum()
    run = mtasks.run("DryRunMixedTask", dry_run=True)
    assert run.dry_run and run.exclusive_key is None
    drain(app)
    run = fresh_run(run.id)
    assert run.status == "succeeded", run.error_message
    assert (run.tick_count, run.tick_total, run.cursor) == (230, 230, 230)
    assert checksum() == before
    assert run.changes["tables"] == expected_changes(230)
    first = run.changes["sample"][0]
    assert first["table"] == "items" and first["key"] == 1
    assert {(s["column"], s["before"], s["after"]) for s in run.changes["sample"][:2]} == {
        ("counter", 0, 1),
        ("title", "item-1", "new-1"),
    }
    assert len(run.changes["sample"]) == 10
    assert ("dry", 1) in EVENTS


def test_an_interrupted_dry_run_counts_the_same_as_an_uninterrupted_one(app):
    seed_mixed(120)
    before = checksum()
    whole = run_task("DryRunMixedTask", dry_run=True)
    sliced = run_task_interrupted("DryRunMixedTask", every=7, dry_run=True)
    assert (whole.status, sliced.status) == ("succeeded", "succeeded")
    assert sliced.changes == whole.changes
    assert whole.changes["tables"] == expected_changes(120)
    assert checksum() == before


def test_a_dry_run_pauses_and_resumes_with_the_same_counts(app, mtasks):
    seed_mixed(100)
    before = checksum()
    run = mtasks.run("DryRunMixedTask", dry_run=True)
    mtasks.pause(run.id)
    drain(app)
    assert fresh_run(run.id).status == "paused"
    mtasks.resume(run.id)
    drain(app)
    run = fresh_run(run.id)
    assert run.status == "succeeded"
    assert run.changes["tables"] == expected_changes(100)
    assert checksum() == before


def test_a_dry_run_does_not_hold_the_task(app, mtasks):
    seed_items(5)
    real = mtasks.run("CountItemsTask")
    dry = mtasks.run("CountItemsTask", dry_run=True)
    another = mtasks.run("CountItemsTask", dry_run=True)
    assert real.exclusive_key == "CountItemsTask"
    assert dry.exclusive_key is None and another.exclusive_key is None
    drain(app)
    assert [fresh_run(r.id).status for r in (real, dry, another)] == ["succeeded"] * 3
    db.session.remove()
    assert list(db.session.scalars(sa.select(Item.counter))) == [1] * 5


def test_a_commit_inside_a_dry_run_is_stopped_and_errors_the_run(app, mtasks):
    seed_items(6)
    before = checksum()
    run = mtasks.run("CommittingTask", dry_run=True)
    drain(app)
    run = fresh_run(run.id)
    assert run.status == "errored"
    assert run.error_class == "DryRunCommit"
    assert run.error_message.startswith('Item {"class": "Item", "id": 3}: process() committed')
    assert run.errored_element == {"class": "Item", "id": 3}
    assert checksum() == before


def test_a_commit_is_stopped_under_the_skip_policy_too(app, mtasks):
    seed_items(6)
    before = checksum()
    run = mtasks.run("CommittingTask", dry_run=True, error_policy="skip")
    drain(app)
    run = fresh_run(run.id)
    assert (run.status, run.error_class) == ("errored", "DryRunCommit")
    assert checksum() == before


def test_a_dry_run_under_skip_records_failures_and_leaves_their_writes_out(app, mtasks):
    seed_items(40)
    db.session.execute(sa.update(Item).where(Item.id.in_([4, 9])).values(title="bad"))
    db.session.commit()
    before = checksum()
    run = mtasks.run("SkipBadItemsTask", dry_run=True)
    drain(app)
    run = fresh_run(run.id)
    assert (run.status, run.failure_count) == ("succeeded", 2)
    assert run.changes["tables"]["items"]["updated"] == 38
    assert checksum() == before
    db.session.remove()
    keys = db.session.scalars(sa.select(Failure.item_key).where(Failure.run_id == run.id))
    assert sorted(keys) == [4, 9]


def test_a_real_run_is_unchanged(app, mtasks):
    seed_mixed(20)
    run = mtasks.run("DryRunMixedTask")
    drain(app)
    run = fresh_run(run.id)
    assert (run.status, run.dry_run, run.changes) == ("succeeded", False, None)
    db.session.remove()
    assert db.session.scalar(sa.select(sa.func.count()).where(Item.title.like("new-%"))) == 20


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_changes_left_pending_in_the_session_are_counted(app, policy):
    seed_items(50)
    before = checksum()
    run = run_task_interrupted("CountItemsTask", every=6, dry_run=True, error_policy=policy)
    assert run.status == "succeeded"
    assert run.changes["tables"] == {
        "items": {"inserted": 0, "updated": 50, "deleted": 0, "columns": ["counter"]}
    }
    assert checksum() == before


def test_a_rollback_inside_a_dry_run_errors_it_before_anything_is_written(app, mtasks):
    seed_items(6)
    before = checksum()
    run = mtasks.run("RollingBackTask", dry_run=True)
    drain(app)
    run = fresh_run(run.id)
    assert (run.status, run.error_class) == ("errored", "DryRunCommit")
    assert "rolled the session back" in run.error_message
    assert checksum() == before


def test_a_savepoint_inside_a_dry_run_is_no_commit(app):
    seed_items(8)
    before = checksum()
    run = run_task("DryRunEdgesTask", {"how": "nested"}, dry_run=True)
    assert run.status == "succeeded", run.error_message
    assert run.changes["tables"]["items"]["updated"] == 8
    assert checksum() == before


# SQLAlchemy warns that the refused commit left its savepoint behind: the test config would
# turn that warning into the run's error.
@pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")
@pytest.mark.parametrize("how", ["connection_commit", "text_commit", "commit_in_after_start"])
def test_every_way_of_committing_is_refused_in_a_dry_run(app, how):
    seed_items(5)
    before = checksum()
    run = run_task("DryRunEdgesTask", {"how": how}, dry_run=True)
    assert (run.status, run.error_class) == ("errored", "DryRunCommit")
    assert checksum() == before


def test_sql_text_after_a_comment_or_a_cte_is_counted(app):
    seed_items(4)
    run = run_task("DryRunEdgesTask", {"how": "text_dml"}, dry_run=True)
    assert run.status == "succeeded", run.error_message
    assert run.changes["tables"] == {
        "items": {"inserted": 0, "updated": 8, "deleted": 0, "columns": []}
    }
