"""Real ``flask mtasks worker`` processes: the guarantees a deploy relies on.

The operator's commands run through the CLI in this process (its runner), so
that they act at once; the workers are real subprocesses.
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
import typing as t

import pytest
import sqlalchemy as sa
from click.testing import Result
from flask import Flask

from tests.support import ROOT
from tests.support.apps import FAST
from tests.support.records import counters, fresh_run, seed_items
from tests.support.waiting import wait_until
from tests.testapp import Item

# Both databases: workers in other processes share the database.
pytestmark = [pytest.mark.slow, pytest.mark.both_databases]

ITEMS = 300


def operator(app: Flask, *args: str) -> Result:
    """``flask mtasks ARGS`` as an operator types it, run by Flask's CLI runner."""
    return app.test_cli_runner().invoke(args=["mtasks", *args])


def _start(app: Flask, *args: str) -> int:
    result = operator(app, "run", "CountItemsTask", *args)
    assert result.exit_code == 0, result.output
    return int(result.stdout.strip())


def _moved(run_id: int, at_least: int = 20) -> bool:
    run = fresh_run(run_id)
    return run.status == "running" and run.tick_count >= at_least


def test_run_wait_with_a_worker_processes_every_row_once(app, workers):
    seed_items(ITEMS)
    workers.start()
    result = workers.cli("run", "CountItemsTask", "--wait")
    assert result.returncode == 0, result.stderr
    run = fresh_run(int(result.stdout.strip()))
    assert run.status == "succeeded"
    assert run.tick_count == run.tick_total == ITEMS
    assert counters() == [1] * ITEMS


def test_pause_mid_run_then_resume_processes_every_row_once(app, workers):
    seed_items(ITEMS)
    workers.start()
    run_id = _start(app, "--arg", "sleep=0.005")
    wait_until(lambda: _moved(run_id), 30, "the run to make progress")

    paused = operator(app, "pause", str(run_id))
    assert paused.exit_code == 0, paused.output
    wait_until(lambda: fresh_run(run_id).status == "paused", 30, "the run to pause")
    run = fresh_run(run_id)
    assert 0 < run.tick_count < ITEMS
    assert sum(counters()) == run.tick_count

    resumed = operator(app, "resume", str(run_id))
    assert resumed.exit_code == 0, resumed.output
    wait_until(lambda: fresh_run(run_id).status == "succeeded", 60, "the run to finish")
    assert counters() == [1] * ITEMS


def test_cancel_mid_run_touches_no_row_after_the_cursor(app, workers):
    seed_items(ITEMS)
    workers.start()
    run_id = _start(app, "--arg", "sleep=0.005")
    wait_until(lambda: _moved(run_id), 30, "the run to make progress")

    cancelled = operator(app, "cancel", str(run_id))
    assert cancelled.exit_code == 0, cancelled.output
    wait_until(lambda: fresh_run(run_id).status == "cancelled", 30, "the run to cancel")
    run = fresh_run(run_id)
    assert run.ended_at is not None
    done = counters()
    assert done[: run.cursor] == [1] * run.cursor
    assert done[run.cursor :] == [0] * (ITEMS - run.cursor)


def test_an_error_on_one_row_is_shown_and_resume_after_fixing_it_finishes(app, db, workers):
    seed_items(ITEMS)
    db.session.execute(sa.update(Item).where(Item.id == 150).values(title="broken"))
    db.session.commit()
    workers.start()
    run_id = _start(app, "--arg", "fail_on=broken", "--arg", "sleep=0.005")
    wait_until(lambda: fresh_run(run_id).status == "errored", 60, "the run to error")

    status = operator(app, "status", str(run_id))
    assert status.exit_code == 0, status.output
    assert "errored" in status.stdout
    assert "ValueError: cannot process item 150: its title is 'broken'" in status.stdout
    assert '"id": 150' in status.stdout
    as_json = json.loads(operator(app, "status", str(run_id), "--json").stdout)
    assert as_json["error"]["element"] == {"class": "Item", "id": 150}
    # The cursor is the last committed item: the failing tick was rolled back.
    assert 0 < as_json["cursor"] < 150
    assert as_json["tick_count"] == as_json["cursor"]
    assert counters() == [1] * as_json["cursor"] + [0] * (ITEMS - as_json["cursor"])

    db.session.execute(sa.update(Item).where(Item.id == 150).values(title="fixed"))
    db.session.commit()
    resumed = operator(app, "resume", str(run_id))
    assert resumed.exit_code == 0, resumed.output
    wait_until(lambda: fresh_run(run_id).status == "succeeded", 60, "the resumed run")
    assert counters() == [1] * ITEMS


# RQ's own CLI runs our job: the database plays no part in what is tested.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_plain_rq_worker_runs_the_jobs_too(app, workers, app_env):
    seed_items(50)
    run_id = _start(app)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rq.cli",
            "worker",
            "--burst",
            "--url",
            app_env["MTASKS_TEST_REDIS_URL"],
            "maintenance_tasks",
        ],
        cwd=ROOT,
        env={**workers.env, "FLASK_APP": "tests.testapp:create_app"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert fresh_run(run_id).status == "succeeded", result.stderr[-3000:]
    assert counters() == [1] * 50


# An idle worker touches no database.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sigterm_to_an_idle_worker_exits_cleanly(app, workers):
    from redis import Redis
    from rq import Worker

    worker = workers.start()
    connection = Redis.from_url(workers.env["MTASKS_TEST_REDIS_URL"])
    # Idle means RQ has installed its signal handlers and waits for a job.
    wait_until(
        lambda: any(w.get_state() == "idle" for w in Worker.all(connection=connection)),
        30,
        "the worker to wait for jobs",
    )
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0


def _recovery_passes(workers, worker) -> list[float]:
    """When the worker's recovery passes began (Unix times, from its debug lines)."""
    try:
        log = workers.log(worker)
    except FileNotFoundError:
        return []  # not started yet
    return [float(line.split()[0]) for line in log.splitlines() if line.endswith(" Recovery pass")]


def _watch_recovery(workers, interval: float, seconds: float) -> tuple[list[float], t.Any]:
    """Start an idle worker recovering every ``interval`` s; its passes over ``seconds`` s."""
    workers.env["MTASKS_TEST_SETTINGS"] = json.dumps({**FAST, "recovery_interval": interval})
    workers.env["MTASKS_TEST_DEBUG_LOG"] = "1"
    worker = workers.start()
    first = wait_until(lambda: _recovery_passes(workers, worker), 30, "a first recovery pass")
    since = first[0]
    time.sleep(seconds)
    assert worker.poll() is None, workers.log(worker)
    passes = [at for at in _recovery_passes(workers, worker) if since <= at <= since + seconds]
    return passes, worker


# An idle worker's pace: the database plays no part in what is tested.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_idle_worker_recovers_every_recovery_interval_below_a_second(app, workers):
    from redis import Redis
    from rq import Worker

    passes, worker = _watch_recovery(workers, 0.3, 3.0)
    gaps = [b - a for a, b in itertools.pairwise(passes)]
    # RQ's own wait for a job is a whole second at least: 3 passes at most, a second apart.
    assert len(passes) >= 5, (passes, workers.log(worker)[-2000:])
    assert max(gaps) <= 0.8, gaps
    # Not a spin on Redis: each pass waits its interval for a job.
    assert min(gaps) >= 0.25, gaps
    # RQ's heartbeats keep the worker registered, for longer than its passes last.
    connection = Redis.from_url(workers.env["MTASKS_TEST_REDIS_URL"])
    (registered,) = Worker.all(connection=connection)
    assert registered.get_state() == "idle"
    assert connection.ttl(registered.key) >= 60


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_idle_worker_recovers_no_more_often_than_its_recovery_interval(app, workers):
    passes, worker = _watch_recovery(workers, 2.0, 4.5)
    gaps = [b - a for a, b in itertools.pairwise(passes)]
    assert 2 <= len(passes) <= 3, passes
    assert min(gaps) >= 1.9, gaps
