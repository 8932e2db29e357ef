"""``flask mtasks`` and partitioned runs: ``run --partitions``, ``run-for-real``, ``status``
of a run and of a partition, actions refused on a partition, and ``--wait``.

Both databases: the partitions are cut by queries and their ticks write their run's row.
Runs are walked by an RQ worker in the test's process (``drain``), or by worker
processes where a command follows a run while it moves.
"""

from __future__ import annotations

import json
import typing as t

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_maintenance_tasks.models import Run
from tests.support.commands import Invoke, error_line, started
from tests.support.dashboard import Dashboard
from tests.support.records import counters, fresh_run, seed_items
from tests.support.workers import drain

pytestmark = pytest.mark.both_databases

COUNT = "PartitionedCountTask"  # four partitions of its own


def all_runs(db: t.Any) -> list[Run]:
    db.session.remove()
    return list(db.session.scalars(sa.select(Run).order_by(Run.id)))


def partitions_of(db: t.Any, run_id: int) -> list[Run]:
    db.session.remove()
    return list(
        db.session.scalars(sa.select(Run).where(Run.parent_id == run_id).order_by(Run.partition))
    )


def queued(app: Flask) -> int:
    return int(app.extensions["maintenance_tasks"].executor.queue().count)


# -- run --partitions --------------------------------------------------------


def test_run_with_partitions_cuts_the_run_into_that_many(
    app: Flask, cli: Invoke, db: t.Any
) -> None:
    seed_items(30)

    run_id = started(cli("run", "CountItemsTask", "--partitions", "3"))
    drain(app)

    run = fresh_run(run_id)
    assert (run.status, run.partitions, run.tick_count) == ("succeeded", 3, 30)
    children = partitions_of(db, run_id)
    assert [child.partition for child in children] == [0, 1, 2]
    assert {child.status for child in children} == {"succeeded"}
    assert counters() == [1] * 30


def test_run_without_partitions_takes_the_tasks_own(app: Flask, cli: Invoke, db: t.Any) -> None:
    seed_items(8)

    own = started(cli("run", COUNT))
    plain = started(cli("run", "CountItemsTask"))
    drain(app)

    assert fresh_run(own).partitions == 4
    assert len(partitions_of(db, own)) == 4
    assert fresh_run(plain).partitions == 1
    assert partitions_of(db, plain) == []


def test_run_with_one_partition_walks_a_partitioned_task_in_one_walk(
    app: Flask, cli: Invoke, db: t.Any
) -> None:
    seed_items(8)

    run_id = started(cli("run", COUNT, "--partitions", "1"))
    drain(app)

    assert (fresh_run(run_id).status, fresh_run(run_id).partitions) == ("succeeded", 1)
    assert partitions_of(db, run_id) == []


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        (["--partitions", "0"], "partitions: must be at least 1, not 0"),
        (["--partitions", "0" * 5000], "partitions: must be at least 1, not 0"),
        (["--partitions", "-" + "0" * 5000 + "2"], "partitions: must be at least 1, not -2"),
        (["--partitions", "-2"], "partitions: must be at least 1, not -2"),
        (["--partitions=-2"], "partitions: must be at least 1, not -2"),
        (
            ["--partitions", "17"],
            "partitions: 17 is more than MAINTENANCE_TASKS_MAX_PARTITIONS allows (16)",
        ),
        (["--partitions", "two"], "partitions: must be a whole number from 1 to 16, not 'two'"),
        (["--partitions", "2.5"], "partitions: must be a whole number from 1 to 16, not '2.5'"),
        (["--partitions", ""], "partitions: must be a whole number from 1 to 16, not ''"),
        (
            ["--partitions", "9" * 40],
            f"partitions: {'9' * 17}... is more than MAINTENANCE_TASKS_MAX_PARTITIONS allows (16)",
        ),
    ],
)
def test_run_with_a_bad_number_of_partitions_fails_and_enqueues_nothing(
    app: Flask, cli: Invoke, db: t.Any, given: list[str], problem: str
) -> None:
    seed_items(5)

    result = cli("run", COUNT, *given)

    assert result.exit_code == 1
    line = error_line(result)
    assert line.startswith(f"Error: Invalid arguments for {COUNT}: ")
    assert problem in line
    assert all_runs(db) == []
    assert queued(app) == 0


def test_run_of_a_task_that_cannot_be_cut_fails_saying_why_and_enqueues_nothing(
    app: Flask, cli: Invoke, db: t.Any
) -> None:
    result = cli("run", "UncuttableTask", "--partitions", "2")

    assert result.exit_code == 1
    line = error_line(result)
    assert line.startswith("Error: Invalid arguments for UncuttableTask: partitions: ")
    assert "partition_ranges" in line
    assert all_runs(db) == []
    assert queued(app) == 0


def test_a_bad_number_of_partitions_fails_as_bad_task_arguments_do(cli: Invoke, db: t.Any) -> None:
    bad_argument = cli("run", "ParamsTask", "--arg", "content=x", "--arg", "limit=lots")
    bad_partitions = cli("run", COUNT, "--partitions", "0")

    assert bad_partitions.exit_code == bad_argument.exit_code != 0
    assert all_runs(db) == []


# -- dry runs ------------------------------------------------------------------


def test_a_dry_run_with_partitions_is_cut_and_run_for_real_keeps_them(
    app: Flask, cli: Invoke, db: t.Any
) -> None:
    seed_items(12)
    dry = started(cli("run", "CountItemsTask", "--dry-run", "--partitions", "3"))
    drain(app)
    assert fresh_run(dry).status == "succeeded"
    assert len(partitions_of(db, dry)) == 3
    assert counters() == [0] * 12

    result = cli("run-for-real", str(dry))

    assert result.exit_code == 0, result.output
    real = max(run.id for run in all_runs(db) if run.parent_id is None)
    assert fresh_run(real).partitions == 3
    drain(app)
    assert fresh_run(real).status == "succeeded"
    assert len(partitions_of(db, real)) == 3
    assert counters() == [1] * 12


def test_run_for_real_with_partitions_overrides_the_dry_runs(
    app: Flask, cli: Invoke, db: t.Any
) -> None:
    seed_items(6)
    dry = started(cli("run", COUNT, "--dry-run"))
    drain(app)

    result = cli("run-for-real", str(dry), "--partitions", "2")

    assert result.exit_code == 0, result.output
    real = max(run.id for run in all_runs(db) if run.parent_id is None)
    assert (fresh_run(dry).partitions, fresh_run(real).partitions) == (4, 2)


def test_run_for_real_with_a_bad_number_of_partitions_fails_and_enqueues_nothing(
    app: Flask, cli: Invoke, db: t.Any
) -> None:
    seed_items(6)
    dry = started(cli("run", COUNT, "--dry-run"))
    drain(app)
    before = [run.id for run in all_runs(db)]

    result = cli("run-for-real", str(dry), "--partitions", "17")

    assert result.exit_code == 1
    assert "MAINTENANCE_TASKS_MAX_PARTITIONS" in error_line(result)
    assert [run.id for run in all_runs(db)] == before
    assert queued(app) == 0


# -- status ------------------------------------------------------------------


def test_status_of_a_run_not_yet_cut_says_into_how_many_partitions_it_will_be(
    cli: Invoke,
) -> None:
    run_id = started(cli("run", COUNT))

    result = cli("status", str(run_id))
    data = json.loads(cli("status", str(run_id), "--json").stdout)

    assert result.exit_code == 0, result.output
    assert "  Will be cut into 4 partitions when it starts." in result.stdout.splitlines()
    assert (data["partition_count"], data["partitions"]) == (4, [])


def test_status_of_a_run_cancelled_before_it_was_cut_says_so(
    app: Flask, cli: Invoke, db: t.Any
) -> None:
    seed_items(8)
    run_id = started(cli("run", COUNT))
    assert cli("cancel", str(run_id)).exit_code == 0
    drain(app)
    assert fresh_run(run_id).status == "cancelled"
    assert partitions_of(db, run_id) == []

    result = cli("status", str(run_id))

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "  Asked for 4 partitions; it stopped before it was cut." in lines
    assert not any("Will be cut" in line for line in lines)


def test_status_of_a_cut_run_shows_each_partition_after_the_runs_progress(
    app: Flask, cli: Invoke, db: t.Any
) -> None:
    seed_items(40)
    run_id = started(cli("run", COUNT, "--arg", "fail_on=item-15"))
    drain(app)
    children = partitions_of(db, run_id)

    result = cli("status", str(run_id))

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"Run #{run_id}  {COUNT}  errored"
    # The run's own progress and status, then its partitions; they have the cursors.
    run = fresh_run(run_id)
    assert (
        lines[1] == f"  Processed {run.tick_count} out of 40 items ({run.tick_count * 100 // 40}%)."
    )
    assert lines[2].startswith("  Ran for ")
    # Then its pace, its partitions' added up.
    assert lines[3].startswith("  Pace: latest ")
    start = lines.index("  Partitions (4):")
    assert start == 4
    assert not any(line.startswith("  Cursor:") for line in lines)
    shown = lines[start + 1 : start + 5]
    assert [line.split()[:3] for line in shown] == [
        [f"{n}/4", f"#{child.id}", child.status] for n, child in enumerate(children, 1)
    ]
    second = shown[1]
    assert children[1].status == "errored"
    assert f"{children[1].tick_count} / {children[1].tick_total}" in second
    assert second.endswith("ValueError")
    assert shown[0].split()[3:] == ["10", "/", "10", "(100%)"]


def test_status_json_gives_the_partitions_as_the_dashboards_json_does(
    app: Flask, cli: Invoke, db: t.Any
) -> None:
    seed_items(20)
    run_id = started(cli("run", COUNT))
    drain(app)
    dashboard = Dashboard(app).get(f"/runs/{run_id}.json").get_json()

    result = cli("status", str(run_id), "--json")

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["partition_count"] == 4
    assert data["partitions"] == dashboard["partitions"]
    assert [p["index"] for p in data["partitions"]] == [0, 1, 2, 3]
    assert [p["status"] for p in data["partitions"]] == ["succeeded"] * 4
    assert sum(p["tick_count"] for p in data["partitions"]) == data["tick_count"] == 20
    assert {"tick_total", "error_class", "failure_count", "run_id"} <= set(data["partitions"][0])


def test_status_json_of_a_run_that_is_not_partitioned_has_one_partition_and_none_listed(
    app: Flask, cli: Invoke
) -> None:
    run_id = started(cli("run", "CountItemsTask"))
    drain(app)

    data = json.loads(cli("status", str(run_id), "--json").stdout)

    assert (data["partition_count"], data["partitions"]) == (1, [])


def test_status_lists_a_partitioned_run_once_and_never_its_partitions(
    app: Flask, cli: Invoke, db: t.Any
) -> None:
    seed_items(12)
    run_id = started(cli("run", COUNT))
    drain(app)
    child_ids = {child.id for child in partitions_of(db, run_id)}
    assert len(child_ids) == 4

    text = cli("status")
    as_json = json.loads(cli("status", "--json").stdout)

    assert text.exit_code == 0, text.output
    shown = [line.split()[0] for line in text.stdout.splitlines() if line.startswith("  #")]
    assert shown == [f"#{run_id}"]
    assert "(4 partitions)" in text.stdout
    listed = [run["id"] for run in as_json["active"] + as_json["latest"]]
    assert listed == [run_id]


def test_status_of_a_partitions_own_id_shows_it_and_names_its_run(
    app: Flask, cli: Invoke, db: t.Any
) -> None:
    seed_items(12)
    run_id = started(cli("run", COUNT))
    drain(app)
    second = partitions_of(db, run_id)[1]

    text = cli("status", str(second.id))
    data = json.loads(cli("status", str(second.id), "--json").stdout)

    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    assert lines[0] == f"Run #{second.id}  {COUNT}  succeeded"
    assert lines[1].startswith(f"  Partition 2 of 4 of run #{run_id}: ")
    assert f"flask mtasks status {run_id}" in lines[1]
    assert (data["id"], data["partition"], data["partition_count"]) == (second.id, 1, 4)
    assert (data["parent_id"], data["partitions"]) == (run_id, [])


@pytest.mark.parametrize("command", ["pause", "resume", "cancel"])
def test_an_action_on_a_partitions_own_id_is_refused_and_changes_nothing(
    app: Flask, cli: Invoke, db: t.Any, command: str
) -> None:
    seed_items(40)
    run_id = started(cli("run", COUNT, "--arg", "fail_on=item-15"))
    drain(app)
    before = [(run.id, run.status, run.job_id) for run in all_runs(db)]
    second = partitions_of(db, run_id)[1]

    result = cli(command, str(second.id))

    assert result.exit_code == 1
    assert error_line(result) == (
        f"Error: Run #{second.id} is partition 2 of run #{run_id}: act on run #{run_id}, "
        "which pauses, resumes or cancels all its partitions."
    )
    assert [(run.id, run.status, run.job_id) for run in all_runs(db)] == before
    assert queued(app) == 0


# -- --wait --------------------------------------------------------------------


@pytest.mark.slow
def test_run_wait_follows_a_partitioned_run_on_workers_until_it_succeeds(
    app: Flask, workers: t.Any, db: t.Any
) -> None:
    seed_items(150)
    workers.start()
    workers.start()

    # About five seconds: the bar (a line every two seconds off a terminal) shows it running.
    result = workers.cli(
        "run", COUNT, "--partitions", "3", "--arg", "sleep=0.05", "--wait", timeout=90
    )

    assert result.returncode == 0, result.stderr
    run = fresh_run(int(result.stdout.strip()))
    assert (run.status, run.tick_count, run.tick_total) == ("succeeded", 150, 150)
    assert len(partitions_of(db, run.id)) == 3
    # The bar follows the run's own progress, its partitions' together.
    assert any(
        " running " in line and " out of 150 " in line for line in result.stderr.splitlines()
    )
    assert result.stderr.strip().endswith("succeeded   Processed 150 out of 150 items (100%).")
    assert counters() == [1] * 150


@pytest.mark.slow
def test_run_wait_fails_with_the_error_of_the_partition_that_errored(
    app: Flask, workers: t.Any
) -> None:
    seed_items(40)
    workers.start()

    result = workers.cli("run", COUNT, "--arg", "fail_on=item-15", "--wait", timeout=90)

    run_id = int(result.stdout.strip())
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: Run #{run_id} ended errored: ValueError: Partition 2 of 4 errored: "
        "cannot process item 15: its title is 'item-15'"
    )
    assert fresh_run(run_id).status == "errored"


def test_run_without_redis_follows_a_partitioned_run_until_it_ends(inprocess_app: Flask) -> None:
    seed_items(20)

    result = inprocess_app.test_cli_runner().invoke(
        args=["mtasks", "run", COUNT, "--partitions", "2"]
    )

    assert result.exit_code == 0, result.output
    run = fresh_run(int(result.stdout.strip()))
    assert (run.status, run.partitions, run.tick_count) == ("succeeded", 2, 20)
    last = result.stderr.strip().splitlines()[-1]
    assert last == f"[{'#' * 30}] succeeded   Processed 20 out of 20 items (100%)."
    assert counters() == [1] * 20
