"""Dry runs under faults: a killed or stopped worker, and a dry run still rolls back all.

A dry run of a task that updates, inserts and deletes is struck half-way;
after recovery it must end with every table as it was and with the same
counts of what it would change as an uninterrupted dry run.
"""

from __future__ import annotations

import os
import signal
import typing as t

import pytest

from tests.support.apps import FAST
from tests.support.records import assert_trail_agrees, fresh_run
from tests.support.waiting import wait_until
from tests.test_dry_runs import checksum, expected_changes, seed_mixed

pytestmark = [pytest.mark.slow, pytest.mark.both_databases]

ITEMS = 300


@pytest.fixture
def settings() -> dict[str, t.Any]:
    return {**FAST, "stuck_after": 2.0, "recovery_interval": 0.5}


def _start(workers: t.Any) -> tuple[int, str, t.Any]:
    from tests.testapp import mtasks

    seed_mixed(ITEMS)
    before = checksum()
    worker = workers.start()
    run = mtasks.run("DryRunMixedTask", {"sleep": 0.005}, dry_run=True)

    def under_way() -> bool:
        current = fresh_run(run.id)
        return current.status == "running" and current.tick_count >= 20

    wait_until(under_way, 30, "the dry run to make progress")
    return run.id, before, worker


def _ends_unchanged(run_id: int, before: str) -> None:
    wait_until(lambda: fresh_run(run_id).status == "succeeded", 60, "the dry run to end")
    run = fresh_run(run_id)
    assert run.tick_count == ITEMS
    assert run.changes["tables"] == expected_changes(ITEMS)
    assert checksum() == before
    assert_trail_agrees(run_id)


def test_sigkill_of_the_work_horse_mid_tick(app, workers):
    run_id, before, worker = _start(workers)
    os.kill(workers.horse_pid(worker), signal.SIGKILL)
    _ends_unchanged(run_id, before)


def test_sigterm_to_the_worker(app, workers):
    run_id, before, worker = _start(workers)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0, workers.log(worker)
    assert fresh_run(run_id).status == "interrupted"
    workers.start()
    _ends_unchanged(run_id, before)
