"""``self.status`` and ``Task.queue`` with real ``flask mtasks worker`` processes.

The published status is read back while the run goes on (dashboard fragment, API, command
line), survives a SIGKILL of the work horse with only the lost tick's updates lost, and a
count kept in it is exact across a pause, a SIGTERM hand-off, time slices and a throttle's
backoff. A task with a queue of its own is run only by workers listening on that queue.
"""

from __future__ import annotations

import json
import os
import signal
import time
import typing as t

import pytest
import sqlalchemy as sa

from flask_maintenance_tasks import Event, store
from tests.support.apps import FAST
from tests.support.dashboard import Dashboard, text
from tests.support.records import counters, fresh_run, seed_items
from tests.support.waiting import wait_until
from tests.testapp.maintenance.publishing import SECRET

pytestmark = [pytest.mark.slow, pytest.mark.both_databases]

TOKEN = "api-token-for-the-status-tests-0123456789"


@pytest.fixture
def settings() -> dict[str, t.Any]:
    # Recovery looks twice a second for runs silent for two seconds; short slices.
    return {
        **FAST,
        "stuck_after": 2.0,
        "recovery_interval": 0.5,
        "api_token": TOKEN,
        "max_job_runtime": 0.6,
    }


def _published(run_id: int) -> dict[str, t.Any]:
    return fresh_run(run_id).published or {}


def test_published_values_are_shown_everywhere_while_the_run_goes_on(app, mtasks, db, workers, cli):
    seed_items(120)
    workers.start()
    run = mtasks.run("PublishingTask", arguments={"sleep": 0.02})
    wait_until(lambda: _published(run.id).get("count", 0) >= 10, 30, "a published count")

    fragment = text(Dashboard(app).get("/tasks/PublishingTask", htmx=True))
    api = app.test_client().get(
        f"/maintenance_tasks/api/runs/{run.id}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    shown = cli("status", str(run.id))
    shown_json = cli("status", "--json")

    # Still going: running, or between two of its 0.6 s slices.
    assert fresh_run(run.id).status in {"running", "interrupted"}
    assert "Step 1 of 2: counting" in fragment
    assert "Published by the task" in fragment
    assert api.status_code == 200
    data = api.get_json()
    assert data["step"] == "Step 1 of 2: counting"
    assert data["published"]["count"] >= 10
    assert data["published"]["api_token"] == "[FILTERED]"
    assert "Step 1 of 2: counting" in shown.output
    assert "count:" in shown.output
    [active] = json.loads(shown_json.output)["active"]
    assert active["published"]["count"] >= 10
    for output in (fragment, api.get_data(as_text=True), shown.output, shown_json.output):
        assert SECRET not in output

    wait_until(lambda: fresh_run(run.id).status == "succeeded", 30, "the run to succeed")
    ended = fresh_run(run.id)
    assert ended.published["result"] == "counted 120"
    assert ended.published["step"] == "reporting"
    with store.open_session(db) as session:
        events = session.scalars(sa.select(Event).where(Event.run_id == run.id).order_by(Event.id))
        steps = [e.detail for e in events if e.action == "step_changed"]
    assert steps == ["Step 1 of 2: counting", "Step 2 of 2: reporting"]


def test_a_sigkill_of_the_work_horse_loses_only_the_uncommitted_updates(app, mtasks, workers):
    items = 150
    seed_items(items)
    worker = workers.start()
    run = mtasks.run("PublishingTask", arguments={"sleep": 0.01})
    wait_until(lambda: _published(run.id).get("count", 0) >= 20, 30, "a published count")
    horse = workers.horse_pid(worker)
    os.kill(horse, signal.SIGKILL)
    at_kill = fresh_run(run.id)
    # What the database holds is what the last committed tick wrote, no more.
    assert at_kill.published["count"] == at_kill.tick_count

    wait_until(lambda: fresh_run(run.id).status == "succeeded", 40, "recovery and success")
    ended = fresh_run(run.id)
    # The resumed run counted on from the committed mapping: exact, nothing counted twice.
    assert ended.published["count"] == ended.tick_count == items
    assert counters() == [1] * items


def test_a_task_with_its_own_queue_runs_only_on_workers_of_that_queue(app, mtasks, workers):
    items = 120
    seed_items(items)
    default = workers.start()
    run = mtasks.run("SlowQueueTask", arguments={"sleep": 0.01, "throttle_at": 30})
    time.sleep(0.6)
    assert fresh_run(run.id).status == "enqueued"  # nobody listens on "slow" yet

    slow = workers.start("--queue", "slow")
    wait_until(lambda: _published(run.id).get("count", 0) >= 40, 30, "the throttle and progress")
    mtasks.pause(run.id)
    wait_until(lambda: fresh_run(run.id).status == "paused", 30, "the pause")
    paused_at = fresh_run(run.id).tick_count
    mtasks.resume(run.id)

    def moved_on() -> bool:
        now = fresh_run(run.id)
        return now.status == "running" and now.tick_count >= paused_at + 10

    wait_until(moved_on, 30, "progress after the resume")
    slow.send_signal(signal.SIGTERM)
    assert slow.wait(30) == 0, workers.log(slow)
    assert fresh_run(run.id).status == "interrupted"
    time.sleep(0.6)  # the default worker (and its recovery) leave the slow job alone
    assert fresh_run(run.id).status == "interrupted"

    again = workers.start("--queue", "slow")
    wait_until(lambda: fresh_run(run.id).tick_count >= 95, 30, "progress on the new worker")
    os.kill(workers.horse_pid(again), signal.SIGKILL)  # recovery re-enqueues, on "slow"
    wait_until(lambda: fresh_run(run.id).status == "succeeded", 40, "the run to succeed")
    ended = fresh_run(run.id)
    assert ended.published["count"] == ended.tick_count == items
    assert ended.published["throttled"] is True
    assert counters() == [1] * items
    assert f"run #{run.id}" in workers.log(again)
    assert f"run #{run.id}" not in workers.log(default)
    assert default.poll() is None
