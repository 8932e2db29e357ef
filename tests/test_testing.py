"""The testing kit for task authors, and its pytest fixtures."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from flask_maintenance_tasks.testing import resume_task, run_task, run_task_interrupted
from tests.support.records import counters, seed_items
from tests.testapp import Item
from tests.testapp.maintenance.kinds import EVENTS


def test_run_task_performs_the_run_to_its_end_without_a_worker(app):
    seed_items(250)
    run = run_task("CountItemsTask")
    assert run.status == "succeeded"
    assert run.tick_count == 250
    assert counters() == [1] * 250
    # Nothing went through Redis.
    assert app.extensions["maintenance_tasks"].executor.queue().count == 0


def test_run_task_interrupted_resumes_after_every_item(app):
    seed_items(30)
    run = run_task_interrupted("CountItemsTask")
    assert run.status == "succeeded"
    assert run.tick_count == 30
    assert counters() == [1] * 30


def test_random_interruptions_are_repeatable_from_a_seed(app):
    run = run_task_interrupted("SquaresTask", {"upto": 20}, seed=7, probability=0.5)
    assert run.status == "succeeded"
    assert EVENTS == [n * n for n in range(1, 21)]


def test_a_task_that_starts_over_when_resumed_is_caught(app):
    assert run_task("ForgetfulEnumeratorTask").status == "succeeded"
    with pytest.raises(RuntimeError, match="start again from the beginning"):
        run_task_interrupted("ForgetfulEnumeratorTask", max_slices=20)


def test_an_errored_run_can_be_fixed_and_resumed(app, db):
    seed_items(10)
    db.session.execute(sa.update(Item).where(Item.id == 4).values(title="bad"))
    db.session.commit()
    run = run_task("CountItemsTask", {"fail_on": "bad"})
    assert run.status == "errored"
    db.session.execute(sa.update(Item).where(Item.id == 4).values(title="good"))
    db.session.commit()
    assert resume_task(run.id).status == "succeeded"
    assert counters() == [1] * 10


def test_the_pytest_fixtures_run_tasks_in_the_app(app, mtasks_run, mtasks_run_interrupted):
    seed_items(5)
    assert mtasks_run("CountItemsTask").status == "succeeded"
    assert mtasks_run_interrupted("CountItemsInBatchesTask", {"of": 2}).tick_count == 3
    assert counters() == [2] * 5
