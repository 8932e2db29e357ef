"""Knowing before running on the command line: ``run --dry-run``, what ``status`` and
``list`` say of a dry run, ``run-for-real`` and ``preview``."""

from __future__ import annotations

import json
import typing as t

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_maintenance_tasks import Run
from tests.support.commands import Invoke, error_line, started
from tests.support.dashboard import add_run
from tests.support.records import counters, fresh_run, seed_items, trail
from tests.support.workers import drain
from tests.testapp import Flag, Item, db

ESCAPES = "\x1b[2J\x1b]0;owned\x07\u202e"
SHOWN = "\\x1b[2J\\x1b]0;owned\\x07\\u202e"
SECRET = "hunter22x"


def run_count() -> int:
    db.session.remove()
    return int(db.session.scalar(sa.select(sa.func.count()).select_from(Run)) or 0)


def assert_no_control_characters(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text


def seed_mixed(count: int) -> None:
    """Items and the seeded flags DryRunMixedTask deletes (see tests/test_dry_runs.py)."""
    seed_items(count)
    db.session.add_all(Flag(name=f"seed-{n}", value="s") for n in range(5, count + 1, 5))
    db.session.commit()


def dry_run_of(app: Flask, cli: Invoke, name: str, *args: str) -> int:
    """A drained dry run of task ``name``."""
    run_id = started(cli("run", name, "--dry-run", *args))
    drain(app)
    return run_id


# -- run --dry-run ------------------------------------------------------------


def test_run_dry_run_prints_the_id_and_says_it_is_a_dry_run(cli: Invoke) -> None:
    seed_items(3)

    result = cli("run", "DryRunMixedTask", "--dry-run")

    run_id = started(result)
    assert result.stdout == f"{run_id}\n"  # alone, for id=$(...)
    assert result.stderr.splitlines() == [
        f"Run #{run_id} is a dry run: every tick is rolled back, nothing is written; "
        f"`flask mtasks status {run_id}` says what it would change."
    ]
    run = fresh_run(run_id)
    assert run.dry_run and run.exclusive_key is None and run.status == "enqueued"


def test_a_normal_run_says_nothing_of_dry_runs(cli: Invoke) -> None:
    result = cli("run", "DryRunMixedTask")

    assert started(result) and result.stderr == ""
    assert not fresh_run(started(result)).dry_run


def test_run_dry_run_wait_ends_with_what_it_would_change(inprocess_app: Flask) -> None:
    seed_mixed(20)

    result = inprocess_app.test_cli_runner().invoke(
        args=["mtasks", "run", "DryRunMixedTask", "--dry-run", "--wait"]
    )

    assert result.exit_code == 0, result.output
    run_id = int(result.stdout.strip())
    assert fresh_run(run_id).status == "succeeded"
    assert result.stderr.strip().splitlines()[-5:] == [
        f"[{'#' * 30}] succeeded   Processed 20 out of 20 items (100%).",
        "Would insert 2 rows of flags",
        "Would delete 4 rows of flags",
        "Would update 22 rows of items: counter, group, title",
        f"To make these changes: flask mtasks run-for-real {run_id}",
    ]
    assert counters() == [0] * 20


def test_run_dry_run_wait_of_a_dry_run_that_errors_exits_1(inprocess_app: Flask) -> None:
    seed_items(5)

    result = inprocess_app.test_cli_runner().invoke(
        args=["mtasks", "run", "CommittingTask", "--dry-run", "--wait"]
    )

    run_id = int(result.stdout.strip())
    assert result.exit_code == 1
    assert error_line(result).startswith(f"Error: Run #{run_id} ended errored: DryRunCommit: ")
    assert "run-for-real" not in result.stderr
    assert counters() == [0] * 5


def test_run_dry_run_of_an_unknown_task_fails_and_writes_nothing(cli: Invoke) -> None:
    result = cli("run", "NoSuchTask", "--dry-run")

    assert result.exit_code == 1
    assert error_line(result).startswith("Error: Task 'NoSuchTask' not found.")
    assert run_count() == 0


# -- status and list ------------------------------------------------------------


def test_status_of_a_succeeded_dry_run_shows_what_it_would_change(app: Flask, cli: Invoke) -> None:
    seed_mixed(30)
    run_id = dry_run_of(app, cli, "DryRunMixedTask")

    result = cli("status", str(run_id))

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"Run #{run_id}  DryRunMixedTask  succeeded (dry run)"
    start = lines.index("  Dry run: every tick is rolled back; nothing is written.")
    assert lines[start + 1 : start + 6] == [
        "  What it would change:",
        "    Would insert 3 rows of flags",
        "    Would delete 6 rows of flags",
        "    Would update 34 rows of items: counter, group, title",
        "  First changes:",
    ]
    sample = lines[start + 6 : start + 16]
    assert set(sample[:2]) == {
        "    items, key 1, counter: 0 -> 1",
        '    items, key 1, title: "item-1" -> "new-1"',
    }
    assert lines[start + 16] == f"  To make these changes: flask mtasks run-for-real {run_id}"
    assert counters() == [0] * 30


def test_status_json_of_a_dry_run_gives_its_changes(app: Flask, cli: Invoke) -> None:
    seed_mixed(10)
    run_id = dry_run_of(app, cli, "DryRunMixedTask")

    data = json.loads(cli("status", str(run_id), "--json").stdout)

    assert data["dry_run"] is True
    assert data["changes"]["tables"]["flags"] == {
        "inserted": 1,
        "updated": 0,
        "deleted": 2,
        "columns": [],
    }
    assert data["changes_summary"] == [
        "Would insert 1 row of flags",
        "Would delete 2 rows of flags",
        "Would update 11 rows of items: counter, group, title",
    ]
    normal = started(cli("run", "OnceTask"))
    plain = json.loads(cli("status", str(normal), "--json").stdout)
    assert (plain["dry_run"], plain["changes"], plain["changes_summary"]) == (False, None, None)


def test_status_of_a_dry_run_that_errored_shows_the_counts_so_far_and_no_hint(
    app: Flask, cli: Invoke
) -> None:
    seed_items(6)
    run_id = dry_run_of(app, cli, "CommittingTask")

    result = cli("status", str(run_id))

    assert result.stdout.splitlines()[0] == f"Run #{run_id}  CommittingTask  errored (dry run)"
    assert "  What it would change so far:" in result.stdout
    assert "run-for-real" not in result.stdout
    assert "  Error: DryRunCommit: " in result.stdout


def test_status_of_an_enqueued_dry_run_says_it_would_change_nothing_so_far(cli: Invoke) -> None:
    run_id = started(cli("run", "DryRunMixedTask", "--dry-run"))

    lines = cli("status", str(run_id)).stdout.splitlines()

    start = lines.index("  What it would change so far:")
    assert lines[start + 1] == "    Would change nothing in the database"
    assert "First changes:" not in "\n".join(lines)


def test_status_of_a_normal_run_says_nothing_of_dry_runs(app: Flask, cli: Invoke) -> None:
    seed_items(2)
    run_id = started(cli("run", "DryRunMixedTask"))
    drain(app)

    result = cli("status", str(run_id))

    assert result.stdout.splitlines()[0] == f"Run #{run_id}  DryRunMixedTask  succeeded"
    assert "ry run" not in result.stdout and "Would " not in result.stdout


def test_list_and_status_mark_dry_runs(app: Flask, cli: Invoke) -> None:
    seed_items(2)
    normal = started(cli("run", "OnceTask"))
    dry = dry_run_of(app, cli, "DryRunMixedTask")
    waiting = started(cli("run", "ListTask", "--dry-run"))

    listed = dict(line.split(None, 1) for line in cli("list").stdout.splitlines())
    runs = cli("status").stdout

    assert listed["DryRunMixedTask"] == f"succeeded (dry run #{dry})"
    assert listed["OnceTask"] == f"succeeded (run #{normal})"
    assert listed["ListTask"] == f"enqueued (dry run #{waiting})"
    assert f"#{waiting:<6} ListTask  enqueued (dry run)  " in runs
    assert f"#{dry:<6} DryRunMixedTask  succeeded (dry run)  " in runs
    assert f"#{normal:<6} OnceTask  succeeded  " in runs


def test_failures_marks_a_dry_run(app: Flask, cli: Invoke) -> None:
    seed_items(2)
    run_id = dry_run_of(app, cli, "DryRunMixedTask")

    result = cli("failures", str(run_id))

    assert result.stdout.splitlines()[0] == f"Run #{run_id}  DryRunMixedTask  succeeded (dry run)"


def test_status_shows_control_characters_of_the_changes_as_escapes(cli: Invoke) -> None:
    changes = {
        "tables": {f"posts{ESCAPES}": {"inserted": 0, "updated": 2, "deleted": 0,
                                       "columns": [f"title{ESCAPES}"]}},
        "sample": [{"table": f"posts{ESCAPES}", "key": f"k{ESCAPES}",
                    "column": f"title{ESCAPES}", "before": f"old{ESCAPES}", "after": None}],
    }  # fmt: skip
    run_id = add_run(db.engine, "DryRunMixedTask", "succeeded", dry_run=True, changes=changes)

    result = cli("status", str(run_id))
    listed = cli("status")

    assert result.exit_code == 0, result.output
    assert_no_control_characters(result.stdout)
    assert f"    Would update 2 rows of posts{SHOWN}: title{SHOWN}" in result.stdout
    # JSON writes the control characters of a value as \u escapes; the rest is visible().
    assert f"    posts{SHOWN}, key " in result.stdout and ", title" in result.stdout
    assert "-> null" in result.stdout
    assert_no_control_characters(listed.stdout)


def test_a_dry_run_never_prints_a_secret_argument(app: Flask, cli: Invoke) -> None:
    seed_items(6)
    run_id = dry_run_of(app, cli, "PreviewItemsTask", "--arg", f"token={SECRET}")

    text = cli("status", str(run_id))
    as_json = cli("status", str(run_id), "--json")

    assert "Would update 6 rows of items: counter" in text.stdout
    assert SECRET not in text.output and SECRET not in as_json.output
    assert json.loads(as_json.stdout)["arguments"]["token"] == "[FILTERED]"


# -- run-for-real -------------------------------------------------------------


def test_run_for_real_starts_a_normal_run_with_the_dry_runs_arguments(
    app: Flask, cli: Invoke
) -> None:
    seed_items(9)
    dry = dry_run_of(
        app, cli, "PreviewItemsTask", "--arg", "limit_group=1", "--error-policy", "skip"
    )
    assert counters() == [0] * 9

    result = cli("run-for-real", str(dry), "--as", "ada")

    assert result.exit_code == 0, result.output
    real = fresh_run(dry + 1)
    assert result.stdout == (
        f"Started run #{real.id} of PreviewItemsTask for real, "
        f"with the arguments of dry run #{dry}.\n"
    )
    assert not real.dry_run and real.exclusive_key == "PreviewItemsTask"
    assert real.arguments == fresh_run(dry).arguments
    assert real.error_policy == "skip"
    assert trail(real.id)[0][2].startswith("ada (")
    drain(app)
    assert counters() == [0, 0, 1, 0, 0, 1, 0, 0, 1]  # group 0: ids 3, 6, 9


def test_run_for_real_wait_follows_the_new_run(inprocess_app: Flask, mtasks: t.Any) -> None:
    seed_items(4)
    runner = inprocess_app.test_cli_runner()
    dry = runner.invoke(args=["mtasks", "run", "CountItemsTask", "--dry-run", "--wait"])
    dry_id = int(dry.stdout.strip())

    result = runner.invoke(args=["mtasks", "run-for-real", str(dry_id), "--wait"])

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Started run #{dry_id + 1} of CountItemsTask for real")
    assert result.stderr.strip().splitlines()[-1] == (
        f"[{'#' * 30}] succeeded   Processed 4 out of 4 items (100%)."
    )
    assert "run-for-real" not in result.stderr  # a normal run: no changes to report
    assert counters() == [1] * 4


@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("missing", "Error: Run #4242 not found."),
        ("normal", "Error: Run #{id} is not a dry run."),
        ("enqueued", "Error: Run #{id} is an enqueued dry run: run for real only after a "
                     "dry run that succeeded."),
        ("errored", "Error: Run #{id} is an errored dry run: run for real only after a "
                    "dry run that succeeded."),
    ],
)  # fmt: skip
def test_run_for_real_refuses_what_is_no_succeeded_dry_run_and_writes_no_run(
    app: Flask, cli: Invoke, which: str, message: str
) -> None:
    seed_items(4)
    if which == "missing":
        run_id = 4242
    elif which == "normal":
        run_id = started(cli("run", "OnceTask"))
        drain(app)
    elif which == "enqueued":
        run_id = started(cli("run", "DryRunMixedTask", "--dry-run"))
    else:
        run_id = dry_run_of(app, cli, "CommittingTask")
    before = run_count()

    result = cli("run-for-real", str(run_id))

    assert result.exit_code == 1
    assert error_line(result) == message.format(id=run_id)
    assert result.stdout == ""
    assert run_count() == before
    assert counters() == [0] * 4


def test_run_for_real_of_a_task_with_an_active_run_fails_naming_it(app: Flask, cli: Invoke) -> None:
    seed_items(2)
    dry = dry_run_of(app, cli, "CountItemsTask")
    active = started(cli("run", "CountItemsTask"))

    result = cli("run-for-real", str(dry))

    assert result.exit_code == 1
    assert error_line(result).startswith(
        f"Error: CountItemsTask already has an active run (run #{active})"
    )
    assert run_count() == 2


# -- preview --------------------------------------------------------------------


def test_preview_shows_parameters_count_first_items_and_sql(cli: Invoke) -> None:
    seed_items(40)

    result = cli(
        "preview", "PreviewItemsTask", "--arg", "limit_group=2", "--arg", f"token={SECRET}"
    )

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:5] == [
        "Preview of PreviewItemsTask",
        '  Parameters: {"prefix": "item-", "limit_group": 2, "token": "[FILTERED]"}',
        "  Items: 27 items",
        "  First 10 items:",
        '    {"class": "Item", "id": 1}',
    ]
    assert lines[5:14] == [
        f'    {{"class": "Item", "id": {n}}}' for n in (3, 4, 6, 7, 9, 10, 12, 13, 15)
    ]
    sql = lines[lines.index("  SQL of the first page:") + 1 :]
    assert sql and all(line.startswith("    ") for line in sql)
    assert "FROM items" in result.stdout and "LIMIT 100" in result.stdout
    assert SECRET not in result.output
    assert run_count() == 0


def test_preview_prints_the_notes_of_the_count(cli: Invoke) -> None:
    seed_items(60)

    batches = cli("preview", "PreviewBatchesTask")
    csv = cli("preview", "ImportItemsTask")

    assert "  Items: 3 items\n    Counted in batches of 25 rows (60 rows).\n" in batches.stdout
    assert "LIMIT 25" in batches.stdout
    assert csv.exit_code == 0, csv.output
    assert "  Items: an unknown number of items\n    A CSV task:" in csv.stdout
    assert "SQL" not in csv.stdout


def test_preview_json_prints_the_preview(cli: Invoke) -> None:
    seed_items(10)

    result = cli("preview", "PreviewItemsTask", "--arg", f"token={SECRET}", "--json")

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["task_name"] == "PreviewItemsTask"
    assert data["valid"] is True and data["errors"] == {}
    assert (data["count"], data["count_kind"], data["count_text"]) == (10, "exact", "10 items")
    assert data["items"][0] == {"class": "Item", "id": 1}
    assert "FROM items" in data["sql"]
    assert data["arguments"] == {"token": "[FILTERED]"}
    assert SECRET not in result.output


def test_preview_with_invalid_arguments_prints_each_field_and_exits_2(cli: Invoke) -> None:
    seed_items(3)

    result = cli(
        "preview", "PreviewItemsTask", "--arg", "limit_group=-1", "--arg", f"token={SECRET}"
    )

    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "Error: Invalid arguments for PreviewItemsTask:",
        "  limit_group: Input should be greater than or equal to 0",
    ]
    assert result.stdout == ""
    assert run_count() == 0

    unknown = cli("preview", "PreviewItemsTask", "--arg", "nope=1", "--arg", "other=2")
    assert unknown.exit_code == 2
    assert unknown.stderr.splitlines()[1:] == [
        "  nope: unknown parameter",
        "  other: unknown parameter",
    ]


def test_preview_json_with_invalid_arguments_prints_the_errors_and_exits_2(cli: Invoke) -> None:
    result = cli("preview", "PreviewItemsTask", "--arg", "limit_group=-1", "--json")

    assert result.exit_code == 2
    data = json.loads(result.stdout)
    assert data["valid"] is False and list(data["errors"]) == ["limit_group"]
    assert run_count() == 0


def test_preview_of_an_unknown_task_fails_as_run_does(cli: Invoke) -> None:
    preview = cli("preview", "ListTsk")
    run = cli("run", "ListTsk")

    assert preview.exit_code == run.exit_code == 1
    assert error_line(preview) == error_line(run)
    assert error_line(preview).startswith("Error: Task 'ListTsk' not found. Did you mean")
    assert run_count() == 0


def test_preview_with_an_argument_that_is_not_key_value_is_a_usage_error(cli: Invoke) -> None:
    result = cli("preview", "PreviewItemsTask", "--arg", f"token{SECRET}")

    assert result.exit_code == 2
    assert "is not KEY=VALUE" in result.stderr
    assert SECRET not in result.output


def test_preview_shows_control_characters_as_escapes(cli: Invoke) -> None:
    seed_items(3, title=f"item-{ESCAPES}")

    result = cli("preview", "PreviewItemsTask", "--arg", f"prefix=item-{ESCAPES}")
    invalid = cli("preview", "PreviewItemsTask", "--arg", f"limit_group={ESCAPES}")

    assert result.exit_code == 0, result.output
    assert_no_control_characters(result.output)
    assert "  Items: 3 items" in result.stdout
    assert f"item-{SHOWN}" in result.stdout  # in the SQL's literal
    assert invalid.exit_code == 2
    assert_no_control_characters(invalid.output)


def test_preview_writes_nothing(cli: Invoke) -> None:
    seed_items(5)

    result = cli("preview", "DryRunMixedTask")

    assert result.exit_code == 0, result.output
    assert "  Items: 5 items" in result.stdout
    assert run_count() == 0 and counters() == [0] * 5
    db.session.remove()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Flag)) == 0


# -- end to end, on both databases ----------------------------------------------


@pytest.mark.both_databases
def test_preview_dry_run_then_run_for_real(app: Flask, cli: Invoke) -> None:
    seed_mixed(15)

    preview = cli("preview", "DryRunMixedTask")
    dry = dry_run_of(app, cli, "DryRunMixedTask")
    status = cli("status", str(dry))
    real = cli("run-for-real", str(dry))
    drain(app)

    assert "  Items: 15 items" in preview.stdout
    assert "    Would update 17 rows of items: counter, group, title" in status.stdout
    assert "    Would delete 3 rows of flags" in status.stdout
    assert real.exit_code == 0, real.output
    assert fresh_run(dry + 1).status == "succeeded"
    assert counters() == [1] * 15
    db.session.remove()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Flag)) == 1
    assert list(db.session.scalars(sa.select(Item.title).order_by(Item.id)))[0] == "new-1"
