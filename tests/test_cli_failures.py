"""Failures as data on the command line: the policy options of ``run``, ``failures``,
``retry-failures`` and what ``status`` says about them."""

from __future__ import annotations

import json
import typing as t

import pytest
import sqlalchemy as sa
from click.testing import Result
from flask import Flask

from flask_maintenance_tasks import Failure, Run
from tests.support.commands import Invoke, error_line
from tests.support.records import counters, fresh_run, seed_items, trail
from tests.support.workers import drain
from tests.testapp import Item, db

ESCAPES = "\x1b[2J\x1b]0;owned\x07"
SHOWN = "\\x1b[2J\\x1b]0;owned\\x07"


def run_ids() -> list[int]:
    db.session.remove()
    return list(db.session.scalars(sa.select(Run.id).order_by(Run.id)))


def ledger(run_id: int) -> list[Failure]:
    db.session.remove()
    return list(
        db.session.scalars(sa.select(Failure).where(Failure.run_id == run_id).order_by(Failure.id))
    )


def make_bad(*ids: int) -> None:
    db.session.execute(sa.update(Item).where(Item.id.in_(ids)).values(title="bad"))
    db.session.commit()


def fix_all() -> None:
    db.session.execute(sa.update(Item).where(Item.title == "bad").values(title="fixed"))
    db.session.commit()


def skipped_run(app: Flask, cli: Invoke, items: int, bad: t.Iterable[int], *args: str) -> int:
    """A drained run of SkipBadItemsTask over ``items`` items, those in ``bad`` failing."""
    seed_items(items)
    make_bad(*bad)
    result = cli("run", "SkipBadItemsTask", *args)
    assert result.exit_code == 0, result.output
    drain(app)
    return int(result.stdout.strip())


# -- run with policy options --------------------------------------------------


def test_run_takes_the_error_policy_and_its_limits(cli: Invoke) -> None:
    fraction = cli(
        "run", "StopOnBadItemsTask", "--error-policy", "SKIP", "--max-failures", "3",
        "--max-failure-rate", "0.05",
    )  # fmt: skip
    assert fraction.exit_code == 0, fraction.output
    run = fresh_run(int(fraction.stdout))
    assert (run.error_policy, run.max_failures, run.max_failure_rate) == ("skip", 3, 0.05)
    cli("cancel", str(run.id))

    percentage = cli("run", "SkipBadItemsTask", "--max-failure-rate", "2.5%")
    assert percentage.exit_code == 0, percentage.output
    run = fresh_run(int(percentage.stdout))
    assert (run.error_policy, run.max_failures, run.max_failure_rate) == ("skip", None, 0.025)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--error-policy", "ignore", "'ignore' is not an error policy: choose stop or skip."),
        ("--error-policy", "", "'' is not an error policy"),
        ("--max-failures", "-1", "'-1' must be a whole number, 0 or more."),
        ("--max-failures", "ten", "'ten' must be a whole number, 0 or more."),
        ("--max-failures", "2.5", "'2.5' must be a whole number, 0 or more."),
        ("--max-failures", "9" * 19, "is too large."),
        ("--max-failure-rate", "0", "'0' must be a share above 0 and at most 1"),
        ("--max-failure-rate", "120%", "'120%' must be a share above 0 and at most 1"),
        ("--max-failure-rate", "1.5", "must be a share above 0 and at most 1 (0.05)"),
        ("--max-failure-rate", "nan", "'nan' must be a share"),
        ("--max-failure-rate", "five", "or a percentage (5%)."),
    ],
)
def test_run_with_a_bad_policy_option_is_a_usage_error_naming_it(
    cli: Invoke, option: str, value: str, message: str
) -> None:
    result = cli("run", "SkipBadItemsTask", option, value)

    assert result.exit_code == 2
    line = error_line(result)
    assert line.startswith(f"Error: Invalid value for '{option}': ")
    assert message in line
    assert run_ids() == []
    assert trail(1) == []  # not even a refused event: the command line was wrong


def test_a_bad_policy_option_shows_control_characters_as_escapes(cli: Invoke) -> None:
    result = cli("run", "SkipBadItemsTask", "--error-policy", ESCAPES)

    assert result.exit_code == 2
    assert SHOWN in error_line(result)
    assert "\x1b" not in result.output
    assert run_ids() == []


# -- failures -------------------------------------------------------------------


def test_failures_lists_the_summary_then_each_failure_with_secrets_filtered(
    app: Flask, cli: Invoke
) -> None:
    run_id = skipped_run(app, cli, 12, [3, 7, 11], "--arg", "token=hunter2")
    ids = [failure.id for failure in ledger(run_id)]

    result = cli("failures", str(run_id))

    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output
    lines = result.stdout.splitlines()
    assert lines[:5] == [
        f"Run #{run_id}  SkipBadItemsTask  succeeded",
        "  Error policy: skip",
        "  3 failed items, 3 unresolved",
        "    BadItem  3 (3 unresolved)",
        "Failures:",
    ]
    failures = lines[5:]
    assert failures[0] == (
        f"  #{ids[0]}  attempt 1  unresolved  key 3  BadItem: item 3 is bad [FILTERED]"
    )
    assert failures[1].startswith("      item: {")
    assert [line.split("  ")[1] for line in failures[::2]] == [f"#{i}" for i in ids]
    assert len(failures) == 6


def test_failures_json_gives_the_counts_and_the_failures(app: Flask, cli: Invoke) -> None:
    run_id = skipped_run(app, cli, 12, [3, 7, 11], "--arg", "token=hunter2")

    result = cli("failures", str(run_id), "--json")

    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output
    data = json.loads(result.stdout)
    assert data["run"] == run_id
    assert data["failure_count"] == 3
    assert data["by_class"] == [{"error_class": "BadItem", "count": 3, "unresolved": 3}]
    assert data["next_after"] is None
    assert [f["item_key"] for f in data["failures"]] == [3, 7, 11]
    first = data["failures"][0]
    assert (first["run_id"], first["attempt"], first["status"]) == (run_id, 1, "unresolved")
    assert first["message"] == "item 3 is bad [FILTERED]"


def test_failures_pages_with_after_and_says_how_to_see_the_next_page(
    app: Flask, cli: Invoke
) -> None:
    run_id = skipped_run(app, cli, 10, [2, 4, 6, 8, 10])
    ids = [failure.id for failure in ledger(run_id)]

    first = cli("failures", str(run_id), "--limit", "2")
    shown = [line.split("  ")[1] for line in first.stdout.splitlines() if " attempt " in line]
    assert shown == [f"#{ids[0]}", f"#{ids[1]}"]
    assert first.stdout.splitlines()[-1] == (
        f"More failures follow; the next page: "
        f"flask mtasks failures {run_id} --limit 2 --after {ids[1]}"
    )

    data = json.loads(cli("failures", str(run_id), "--limit", "2", "--json").stdout)
    assert data["next_after"] == ids[1]
    second = json.loads(
        cli("failures", str(run_id), "--limit", "2", "--after", str(ids[1]), "--json").stdout
    )
    assert [f["id"] for f in second["failures"]] == ids[2:4]
    last = cli("failures", str(run_id), "--limit", "2", "--after", str(ids[3]))
    assert "More failures follow" not in last.stdout
    assert last.stdout.splitlines()[-2].split("  ")[1] == f"#{ids[4]}"


def test_failures_filters_by_class_and_status(app: Flask, cli: Invoke) -> None:
    run_id = skipped_run(app, cli, 10, [2, 4, 6])
    first, second, third = ledger(run_id)
    db.session.execute(
        sa.update(Failure)
        .where(Failure.id == second.id)
        .values(error_class="KeyError", status="gone")
    )
    db.session.commit()

    by_class = json.loads(cli("failures", str(run_id), "--class", "KeyError", "--json").stdout)
    by_status = json.loads(cli("failures", str(run_id), "--status", "unresolved", "--json").stdout)
    text = cli("failures", str(run_id), "--class", "NoSuchError")

    assert [f["id"] for f in by_class["failures"]] == [second.id]
    assert [f["id"] for f in by_status["failures"]] == [first.id, third.id]
    assert by_status["by_class"] == [
        {"error_class": "BadItem", "count": 2, "unresolved": 2},
        {"error_class": "KeyError", "count": 1, "unresolved": 0},
    ]
    assert text.exit_code == 0, text.output
    assert "    KeyError  1 (0 unresolved)" in text.stdout
    assert text.stdout.splitlines()[-1] == "No failures match."


def test_failures_of_a_run_without_any_says_so(app: Flask, cli: Invoke) -> None:
    run_id = skipped_run(app, cli, 3, [])

    result = cli("failures", str(run_id))

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-2:] == ["  0 failed items, 0 unresolved", "No failed items."]


def test_failures_show_control_characters_of_messages_as_escapes(app: Flask, cli: Invoke) -> None:
    run_id = skipped_run(app, cli, 4, [2])
    db.session.execute(
        sa.update(Failure)
        .where(Failure.run_id == run_id)
        .values(error_class=f"Bad{ESCAPES}", message=f"first {ESCAPES}\u202eline\nsecond line")
    )
    db.session.commit()

    result = cli("failures", str(run_id))

    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output
    assert "\u202e" not in result.output
    assert f"    Bad{SHOWN}  1 (1 unresolved)" in result.stdout
    line = next(line for line in result.stdout.splitlines() if " attempt " in line)
    assert line.endswith(f"Bad{SHOWN}: first {SHOWN}\\u202eline")  # the first line only


@pytest.mark.parametrize("run_id", ["999999", str(2**70)])
@pytest.mark.parametrize("command", ["failures", "retry-failures"])
def test_a_failures_command_on_an_unknown_run_fails_saying_so(
    cli: Invoke, command: str, run_id: str
) -> None:
    result = cli(command, run_id)

    assert error_line(result) == f"Error: Run #{run_id} not found."
    assert result.exit_code == 1
    assert run_ids() == []


def test_failures_with_an_unknown_status_is_a_usage_error(app: Flask, cli: Invoke) -> None:
    result = cli("failures", "1", "--status", "fixed")

    assert result.exit_code == 2
    assert "Invalid value for '--status'" in error_line(result)


# -- retry-failures -------------------------------------------------------------


@pytest.mark.both_databases
def test_retry_failures_starts_a_linked_run_that_resolves_the_ledger(
    app: Flask, cli: Invoke
) -> None:
    run_id = skipped_run(app, cli, 20, [5, 10, 15])
    fix_all()

    result = cli("retry-failures", str(run_id), "--as", "ticket-7")

    assert result.exit_code == 0, result.output
    retry_id = max(run_ids())
    assert result.stdout == f"Started run #{retry_id} retrying 3 failed items of run #{run_id}.\n"
    drain(app)
    retry = fresh_run(retry_id)
    assert (retry.status, retry.retry_of_id, retry.tick_count) == ("succeeded", run_id, 3)
    assert {(f.status, f.retried_by_id) for f in ledger(run_id)} == {("resolved", retry_id)}
    assert counters() == [1] * 20
    assert trail(retry_id)[0][0] == "started"
    assert trail(retry_id)[0][2].startswith("ticket-7 (")

    shown = cli("failures", str(run_id))
    assert f"  Retried in #{retry_id}" in shown.stdout
    assert "  3 failed items, 0 unresolved" in shown.stdout
    assert f"  Retry of #{run_id}" in cli("failures", str(retry_id)).stdout


def test_retry_failures_takes_policy_options(app: Flask, cli: Invoke) -> None:
    run_id = skipped_run(app, cli, 6, [2])

    result = cli("retry-failures", str(run_id), "--error-policy", "stop", "--max-failures", "0")

    assert result.exit_code == 0, result.output
    retry = fresh_run(max(run_ids()))
    assert (retry.error_policy, retry.max_failures, retry.retry_of_id) == ("stop", 0, run_id)


def test_retry_failures_with_a_bad_policy_option_is_a_usage_error(app: Flask, cli: Invoke) -> None:
    run_id = skipped_run(app, cli, 6, [2])

    result = cli("retry-failures", str(run_id), "--max-failure-rate", "0%")

    assert result.exit_code == 2
    assert error_line(result).startswith("Error: Invalid value for '--max-failure-rate': '0%'")
    assert run_ids() == [run_id]


def test_retry_failures_refusals_fail_saying_why_and_write_no_run(app: Flask, cli: Invoke) -> None:
    clean = skipped_run(app, cli, 6, [])
    make_bad(3)
    failed = cli("run", "SkipBadItemsTask")
    drain(app)
    failed_id = int(failed.stdout)
    before = run_ids()

    nothing = cli("retry-failures", str(clean))
    unknown = cli("retry-failures", "999999")

    assert error_line(nothing) == (
        f"Error: Cannot retry the failures of run #{clean}: it has no unresolved failed items."
    )
    assert error_line(unknown) == "Error: Run #999999 not found."

    active = cli("run", "SkipBadItemsTask")  # enqueued: the task is now busy
    busy = cli("retry-failures", str(failed_id))
    assert "SkipBadItemsTask already has an active run" in error_line(busy)
    cli("cancel", str(int(active.stdout)))
    drain(app)
    before = run_ids()

    def with_run(**values: t.Any) -> Result:
        db.session.execute(sa.update(Run).where(Run.id == failed_id).values(**values))
        db.session.commit()
        return cli("retry-failures", str(failed_id))

    running = with_run(status="running")
    bad_arguments = with_run(status="succeeded", arguments={"colour": "red"})
    gone = with_run(arguments={}, task_name="DeletedTask")

    assert error_line(running) == (
        f"Error: Cannot retry the failures of run #{failed_id}: it is running; "
        "retry its failures once it has stopped."
    )
    assert error_line(bad_arguments).startswith("Error: Invalid arguments for SkipBadItemsTask")
    assert error_line(gone).startswith(
        f"Error: Cannot retry the failures of run #{failed_id}: Task 'DeletedTask' not found."
    )
    for result in (nothing, unknown, busy, running, bad_arguments, gone):
        assert result.exit_code == 1
    assert run_ids() == before
    assert {f.status for f in ledger(failed_id)} == {"unresolved"}


def test_retry_failures_wait_follows_the_retry_until_it_succeeds(inprocess_app: Flask) -> None:
    invoke = inprocess_app.test_cli_runner().invoke
    seed_items(8)
    make_bad(4, 6)
    first = invoke(args=["mtasks", "run", "SkipBadItemsTask"])
    run_id = int(first.stdout)
    assert fresh_run(run_id).failure_count == 2
    fix_all()

    result = invoke(args=["mtasks", "retry-failures", str(run_id), "--wait"])

    assert result.exit_code == 0, result.output
    retry_id = max(run_ids())
    assert result.stdout == f"Started run #{retry_id} retrying 2 failed items of run #{run_id}.\n"
    assert result.stderr.strip().splitlines()[-1] == (
        f"[{'#' * 30}] succeeded   Processed 2 out of 2 items (100%)."
    )
    assert {f.status for f in ledger(run_id)} == {"resolved"}


def test_retry_failures_wait_exits_1_when_the_retry_errors(inprocess_app: Flask) -> None:
    invoke = inprocess_app.test_cli_runner().invoke
    seed_items(8)
    make_bad(4, 6)
    run_id = int(invoke(args=["mtasks", "run", "SkipBadItemsTask"]).stdout)

    result = invoke(
        args=["mtasks", "retry-failures", str(run_id), "--error-policy", "stop", "--wait"]
    )

    retry_id = max(run_ids())
    assert error_line(result).startswith(f"Error: Run #{retry_id} ended errored: BadItem: item 4")
    assert result.exit_code == 1
    assert fresh_run(retry_id).status == "errored"


# -- status -----------------------------------------------------------------------


def test_status_shows_the_policy_the_failures_and_the_retries(app: Flask, cli: Invoke) -> None:
    run_id = skipped_run(app, cli, 10, [3, 4], "--max-failures", "5", "--max-failure-rate", "50%")
    fix_all()
    cli("retry-failures", str(run_id))
    retry_id = max(run_ids())
    drain(app)

    original = cli("status", str(run_id)).stdout.splitlines()
    retry = cli("status", str(retry_id)).stdout.splitlines()
    data = json.loads(cli("status", str(run_id), "--json").stdout)

    assert "  Error policy: skip, at most 5 failures or 50%" in original
    assert f"  2 failed items; see `flask mtasks failures {run_id}`" in original
    assert f"  Retried in #{retry_id}" in original
    assert f"  Retry of #{run_id}" in retry
    assert not any("failed item" in line for line in retry)
    assert data["retried_in"] == [retry_id]
    assert data["failure_count"] == 2
    assert data["error_policy"] == {"policy": "skip", "max_failures": 5, "max_failure_rate": 0.5}


def test_status_of_a_plain_run_says_nothing_of_policies(app: Flask, cli: Invoke) -> None:
    seed_items(3)
    run_id = int(cli("run", "StopOnBadItemsTask").stdout)
    drain(app)

    shown = cli("status", str(run_id)).stdout

    assert "Error policy" not in shown
    assert "failed item" not in shown
    assert "Retr" not in shown
