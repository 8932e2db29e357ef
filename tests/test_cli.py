"""``flask mtasks``: list, run, status, pause, resume and cancel, as a user types them."""

from __future__ import annotations

import io
import json
import os
import typing as t

import pydantic
import pytest
import sqlalchemy as sa
from flask import Flask

from flask_maintenance_tasks import Run, Task
from flask_maintenance_tasks.cli.runs import _parse_arguments
from flask_maintenance_tasks.cli.terminal import visible
from flask_maintenance_tasks.executors import RQExecutor
from flask_maintenance_tasks.models import runs_table
from tests.support import ROOT
from tests.support.commands import Invoke, error_line, started
from tests.support.dashboard import add_run
from tests.support.processes import FlaskProcess
from tests.support.records import counters, fresh_run, seed_items
from tests.support.waiting import wait_until
from tests.support.workers import APP, drain


def runs(db: t.Any) -> list[Run]:
    db.session.remove()
    return list(db.session.scalars(sa.select(Run).order_by(Run.id)))


# -- list -------------------------------------------------------------------


def test_list_shows_every_task_as_new_before_any_run(cli: Invoke) -> None:
    result = cli("list")

    assert result.exit_code == 0, result.output
    lines = dict(line.split(None, 1) for line in result.stdout.splitlines())
    assert lines["CountItemsTask"] == "new"
    assert lines["nested.FixInvoicesTask"] == "new"
    assert lines["CustomName"] == "new"
    assert "_HelperBase" not in lines


def test_list_shows_the_status_of_each_tasks_latest_run(
    app: Flask, cli: Invoke, mtasks: t.Any
) -> None:
    mtasks.run("ListTask")
    once = mtasks.run("OnceTask")
    drain(app)
    again = mtasks.run("ListTask")

    result = cli("list")

    lines = dict(line.split(None, 1) for line in result.stdout.splitlines())
    assert lines["ListTask"] == f"enqueued (run #{again.id})"
    assert lines["OnceTask"] == f"succeeded (run #{once.id})"
    assert lines["SquaresTask"] == "new"


# -- run --------------------------------------------------------------------


def test_run_prints_the_id_of_a_new_enqueued_run(cli: Invoke, db: t.Any) -> None:
    run_id = started(cli("run", "ListTask"))

    [run] = runs(db)
    assert (run.id, run.task_name, run.status) == (run_id, "ListTask", "enqueued")


def test_run_converts_arguments_through_the_tasks_parameters(cli: Invoke, db: t.Any) -> None:
    result = cli(
        "run",
        "ParamsTask",
        "--arg", "content=hello, world",
        "--arg", "mode=fast",
        "--arg", "limit=25",
        "--arg", "enabled=true",
        "--arg", "colour=blue",
        "--arg", "since=2024-02-29",
        "--arg", "api_token=s3cret",
    )  # fmt: skip

    started(result)
    [run] = runs(db)
    assert run.arguments == {
        "content": "hello, world",
        "mode": "fast",
        "limit": 25,
        "ids": [],
        "enabled": True,
        "colour": "blue",
        "since": "2024-02-29",
        "api_token": "s3cret",
        "password": None,
    }


@pytest.mark.parametrize(
    "given",
    [
        ["ids=[1, 2, 3]"],
        ["ids=1,2,3"],
        ["ids=1", "ids=2", "ids=3"],
        ["ids=1, 2", "ids=3"],
    ],
    ids=["json", "commas", "repeated", "commas-and-repeated"],
)
def test_run_takes_a_list_parameter_as_json_commas_or_a_repeated_key(
    cli: Invoke, db: t.Any, given: list[str]
) -> None:
    options = [part for arg in given for part in ("--arg", arg)]

    started(cli("run", "ParamsTask", "--arg", "content=x", *options))

    [run] = runs(db)
    assert run.arguments["ids"] == [1, 2, 3]


class _Window(pydantic.BaseModel):
    start: int
    end: int


class _ShapesTask(Task):
    """Field shapes the test app's tasks lack: optional lists, tuples, sets, dicts, models."""

    class Parameters(pydantic.BaseModel):
        ids: list[int] | None = None
        pair: tuple[str, str] = ("a", "b")
        tags: t.Annotated[set[str], pydantic.Field(max_length=5)] = set()
        weights: dict[str, float] = {}
        window: _Window | None = None
        note: str = ""


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        (["ids=3,4"], {"ids": [3, 4]}),
        (["ids=[3, 4]"], {"ids": [3, 4]}),
        (["ids="], {"ids": []}),
        (["pair=x,y"], {"pair": ("x", "y")}),
        (["tags=a", "tags=b,a"], {"tags": {"a", "b"}}),
        (['weights={"a": 1.5}'], {"weights": {"a": 1.5}}),
        (['window={"start": 1, "end": 9}'], {"window": _Window(start=1, end=9)}),
        (["note=[not, a list]"], {"note": "[not, a list]"}),
    ],
)
def test_arguments_take_the_shape_of_their_parameter_field(
    pairs: list[str], expected: dict[str, t.Any]
) -> None:
    arguments = _parse_arguments(_ShapesTask, tuple(pairs))

    params = _ShapesTask.validate_arguments(arguments)

    assert params is not None
    assert {name: getattr(params, name) for name in expected} == expected


def test_run_of_an_unknown_task_fails_naming_it_and_writes_no_run(cli: Invoke, db: t.Any) -> None:
    result = cli("run", "NoSuchTask")

    assert error_line(result).startswith("Error: Task 'NoSuchTask' not found.")
    assert result.exit_code == 1
    assert runs(db) == []


@pytest.mark.parametrize(
    ("arg", "field"),
    [
        ("limit=lots", "limit"),
        ("mode=reckless", "mode"),
        ("since=yesterday", "since"),
        ("enabled=perhaps", "enabled"),
        ("ids=1,two", "ids.1"),
        ("colour2=red", "colour2"),
    ],
)
def test_run_with_an_invalid_argument_fails_naming_the_field_and_writes_no_run(
    cli: Invoke, db: t.Any, arg: str, field: str
) -> None:
    result = cli("run", "ParamsTask", "--arg", "content=x", "--arg", arg)

    line = error_line(result)
    assert line.startswith("Error: Invalid arguments for ParamsTask: ")
    assert f" {field}: " in line
    assert runs(db) == []


def test_run_without_a_required_argument_fails_naming_it(cli: Invoke, db: t.Any) -> None:
    result = cli("run", "ParamsTask")

    assert "content: Field required" in error_line(result)
    assert runs(db) == []


def test_run_with_an_argument_that_is_not_key_value_fails_and_writes_no_run(
    cli: Invoke, db: t.Any
) -> None:
    result = cli("run", "ParamsTask", "--arg", "content")

    assert result.exit_code == 2
    assert "'content' is not KEY=VALUE." in error_line(result)
    assert runs(db) == []


def test_an_argument_that_is_not_key_value_is_not_quoted_when_it_names_a_secret(
    cli: Invoke, db: t.Any
) -> None:
    result = cli("run", "ParamsTask", "--arg", "content=x", "--arg", "api_token hunter2")

    assert result.exit_code == 2
    assert "An argument naming a masked parameter is not KEY=VALUE." in error_line(result)
    assert "hunter2" not in result.output
    assert runs(db) == []


def test_run_with_a_single_value_parameter_given_twice_fails_and_writes_no_run(
    cli: Invoke, db: t.Any
) -> None:
    result = cli("run", "ParamsTask", "--arg", "content=a", "--arg", "content=b")

    assert "content is given 2 times but takes one value." in error_line(result)
    assert runs(db) == []


def test_run_with_arguments_for_a_task_without_parameters_fails(cli: Invoke, db: t.Any) -> None:
    result = cli("run", "ListTask", "--arg", "limit=3")

    assert "ListTask takes no parameters (got limit)" in error_line(result)
    assert runs(db) == []


def test_run_with_a_csv_file_for_a_task_that_takes_none_fails_and_writes_no_run(
    cli: Invoke, db: t.Any, tmp_path: t.Any
) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("title\nfirst\n")

    from_file = cli("run", "ListTask", "--csv", str(path))
    from_stdin = cli("run", "ListTask", "--csv", "-", input="title\nfirst\n")

    expected = "Error: ListTask is not a CSV task: it takes no CSV file. Start it without one."
    assert error_line(from_file) == expected
    assert error_line(from_stdin) == expected
    assert runs(db) == []


def test_run_with_a_missing_csv_file_fails_and_writes_no_run(
    cli: Invoke, db: t.Any, tmp_path: t.Any
) -> None:
    result = cli("run", "ListTask", "--csv", str(tmp_path / "absent.csv"))

    assert "absent.csv' does not exist" in error_line(result)
    assert runs(db) == []


def test_run_of_a_task_with_an_active_run_fails_naming_that_run(cli: Invoke, db: t.Any) -> None:
    first = started(cli("run", "ListTask"))

    result = cli("run", "ListTask")

    assert f"ListTask already has an active run (run #{first})" in error_line(result)
    assert [run.id for run in runs(db)] == [first]


# -- status -----------------------------------------------------------------


def test_status_shows_progress_and_masks_secret_arguments(
    app: Flask, cli: Invoke, mtasks: t.Any
) -> None:
    run = mtasks.run(
        "ParamsTask",
        arguments={"content": "visible", "api_token": "tok-123", "password": "pw-456"},
    )
    drain(app)

    result = cli("status", str(run.id))

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == f"Run #{run.id}  ParamsTask  succeeded"
    assert "Processed 1 out of 1 item (100%)." in result.stdout
    assert '"content": "visible"' in result.stdout
    assert '"api_token": "[FILTERED]"' in result.stdout
    assert '"password": "[FILTERED]"' in result.stdout
    assert "tok-123" not in result.output
    assert "pw-456" not in result.output


def test_status_masks_parameters_whose_name_contains_secret_words(
    app: Flask, cli: Invoke, mtasks: t.Any, db: t.Any
) -> None:
    # A run whose task has since changed: its stored names are masked by name alone.
    run = mtasks.run("ListTask")
    db.session.execute(
        runs_table.update()
        .where(runs_table.c.id == run.id)
        .values(arguments={"client_secret": "cs-789", "note": "plain"})
    )
    db.session.commit()

    text = cli("status", str(run.id)).stdout
    as_json = json.loads(cli("status", str(run.id), "--json").stdout)

    assert '"client_secret": "[FILTERED]"' in text and "cs-789" not in text
    assert as_json["arguments"] == {"client_secret": "[FILTERED]", "note": "plain"}


def test_status_json_gives_the_run_with_masked_arguments(
    app: Flask, cli: Invoke, mtasks: t.Any
) -> None:
    run = mtasks.run("ParamsTask", arguments={"content": "x", "api_token": "tok-123"})
    drain(app)

    result = cli("status", str(run.id), "--json")

    data = json.loads(result.stdout)
    assert data["id"] == run.id
    assert data["status"] == "succeeded"
    assert (data["tick_count"], data["tick_total"], data["percent"]) == (1, 1, 100.0)
    assert data["arguments"]["api_token"] == "[FILTERED]"
    assert data["arguments"]["content"] == "x"
    assert data["error"] is None
    assert "tok-123" not in result.output


def test_status_of_an_errored_run_shows_the_error_failing_item_and_backtrace(
    app: Flask, cli: Invoke, mtasks: t.Any
) -> None:
    seed_items(5)
    run = mtasks.run("CountItemsTask", arguments={"fail_on": "item-3"})
    drain(app)

    result = cli("status", str(run.id))

    out = result.stdout
    assert result.exit_code == 0, result.output
    assert out.splitlines()[0] == f"Run #{run.id}  CountItemsTask  errored"
    assert "out of 5 items" in out
    assert "  Error: ValueError: cannot process item 3: its title is 'item-3'" in out
    assert '  Failing item: {"class": "Item", "id": 3}' in out
    backtrace = out.split("  Backtrace:\n", 1)[1]
    assert "counting.py" in backtrace and "in process" in backtrace


def test_status_json_of_an_errored_run_gives_the_error(
    app: Flask, cli: Invoke, mtasks: t.Any
) -> None:
    seed_items(5)
    run = mtasks.run("CountItemsTask", arguments={"fail_on": "item-2"})
    drain(app)

    error = json.loads(cli("status", str(run.id), "--json").stdout)["error"]

    assert error["class"] == "ValueError"
    assert error["message"] == "cannot process item 2: its title is 'item-2'"
    assert error["element"] == {"class": "Item", "id": 2}
    assert any("counting.py" in frame for frame in error["backtrace"])


def test_status_of_a_paused_run_shows_why_it_was_interrupted(
    app: Flask, cli: Invoke, mtasks: t.Any
) -> None:
    seed_items(3)
    run = mtasks.run("CountItemsTask")
    mtasks.pause(run.id)
    drain(app)

    result = cli("status", str(run.id))

    assert f"Run #{run.id}  CountItemsTask  paused" in result.stdout
    assert "  Last interruption: pause" in result.stdout


def test_status_without_a_run_id_lists_active_and_latest_runs(
    app: Flask, cli: Invoke, mtasks: t.Any
) -> None:
    done = mtasks.run("ListTask")
    drain(app)
    waiting = mtasks.run("OnceTask")

    text = cli("status")
    data = json.loads(cli("status", "--json").stdout)

    active, latest = text.stdout.split("Latest runs:\n")
    assert active.startswith("Active runs:\n")
    assert f"#{waiting.id}" in active and "OnceTask  enqueued" in active
    assert f"#{done.id}" in latest and "ListTask  succeeded" in latest
    assert [r["id"] for r in data["active"]] == [waiting.id]
    assert [r["id"] for r in data["latest"]] == [done.id]


def test_status_without_runs_says_there_are_none(cli: Invoke) -> None:
    result = cli("status")

    assert result.exit_code == 0
    assert result.stdout == "No active runs.\n"


@pytest.mark.parametrize("command", ["status", "pause", "resume", "cancel"])
def test_a_command_on_an_unknown_run_fails_saying_so(cli: Invoke, command: str) -> None:
    result = cli(command, "4242")

    assert error_line(result) == "Error: Run #4242 not found."
    assert result.exit_code == 1


@pytest.mark.both_databases
@pytest.mark.parametrize("command", ["status", "pause", "resume", "cancel"])
def test_a_command_on_a_run_id_beyond_64_bits_fails_saying_so(cli: Invoke, command: str) -> None:
    result = cli(command, "99999999999999999999999")

    assert error_line(result) == "Error: Run #99999999999999999999999 not found."
    assert result.exit_code == 1


def test_run_with_json_nested_too_deep_fails_and_writes_no_run(cli: Invoke, db: t.Any) -> None:
    deep = "[" * 5000 + "]" * 5000

    given_json = cli("run", "WebNestedSecretsTask", "--arg", 'options={"a": ' + deep + "}")
    given_list = cli("run", "ParamsTask", "--arg", "content=x", "--arg", "ids=" + deep)

    assert "options: nested deeper than 64 levels." in error_line(given_json)
    assert "ids: nested deeper than 64 levels." in error_line(given_list)
    assert (given_json.exit_code, given_list.exit_code) == (2, 2)
    assert runs(db) == []


@pytest.mark.both_databases
@pytest.mark.parametrize("pair", ["note=\udced\udca0\udc80", 'tags=["\udcff"]'])
def test_run_with_bytes_that_are_not_utf8_fails_and_writes_no_run(
    cli: Invoke, db: t.Any, pair: str
) -> None:
    # Python hands undecodable bytes of argv over as lone surrogates.
    given = ["--arg", "note=x"] if pair.startswith("tags") else []

    result = cli("run", "WebFormKindsTask", *given, "--arg", pair)

    assert result.exit_code == 1
    field = pair.partition("=")[0]
    assert f"{field}: must be text without lone surrogates" in error_line(result)
    assert runs(db) == []


# -- text from elsewhere on the terminal -------------------------------------

#: Clears the screen, sets the window title, colours what follows, reverses the text.
ESCAPES = "\x1b[2J\x1b]0;owned\x07\x1b[31m\u202e"
SHOWN = "\\x1b[2J\\x1b]0;owned\\x07\\x1b[31m\\u202e"


def assert_no_control_characters(output: str) -> None:
    assert "\x1b" not in output and "\x07" not in output and "\u202e" not in output
    assert SHOWN in output


def test_status_shows_control_characters_from_the_database_as_escapes(
    cli: Invoke, db: t.Any
) -> None:
    run_id = add_run(
        db.engine,
        f"Gone{ESCAPES}Task",
        "errored",
        error_class=f"Evil{ESCAPES}Error",
        error_message=f"first line\nsecond{ESCAPES}",
        backtrace=[f"tasks.py:3 in {ESCAPES}"],
        interruption_reason=f"odd{ESCAPES}",
    )

    one = cli("status", str(run_id))
    every = cli("status")
    as_json = cli("status", str(run_id), "--json")

    assert one.exit_code == every.exit_code == as_json.exit_code == 0
    assert_no_control_characters(one.stdout)
    assert one.stdout.count(SHOWN) == 5  # name, error class and message, interruption, frame
    assert "  Error: " in one.stdout and "first line\\nsecond" in one.stdout
    assert_no_control_characters(every.stdout)
    assert "\x1b" not in as_json.stdout
    assert json.loads(as_json.stdout)["task_name"] == f"Gone{ESCAPES}Task"


def test_a_csv_file_name_and_a_run_error_are_printed_with_control_characters_as_escapes(
    inprocess_app: Flask, mtasks: t.Any
) -> None:
    upload = mtasks.run(
        "ImportItemsTask", csv_file=(f"items{ESCAPES}.csv", io.BytesIO(b"id,title\n1,a\n"))
    )
    runner = inprocess_app.test_cli_runner()

    status = runner.invoke(args=["mtasks", "status", str(upload.id)])
    failed = runner.invoke(
        args=["mtasks", "run", "WebHostileErrorTask", "--arg", f"message={ESCAPES}", "--wait"]
    )

    assert_no_control_characters(status.stdout)
    assert f"given as items{SHOWN}.csv" in status.stdout
    assert error_line(failed).endswith(f"ValueError: {SHOWN}")
    assert "\x1b" not in failed.stderr


def test_error_messages_show_control_characters_of_what_was_typed_as_escapes(
    cli: Invoke, db: t.Any
) -> None:
    unknown = cli("run", "ParamsTask", "--arg", "content=x", "--arg", f"{ESCAPES}=1")
    twice = cli("run", "ParamsTask", "--arg", f"ids{ESCAPES}=1", "--arg", f"ids{ESCAPES}=2")

    assert f"{SHOWN}: unknown parameter" in error_line(unknown)
    assert f"ids{SHOWN} is given 2 times" in error_line(twice)
    for result in (unknown, twice):
        assert "\x1b" not in result.output
    assert runs(db) == []


def test_visible_writes_every_control_character_as_an_escape() -> None:
    assert visible("a\x1b[0mb\tc\r\n\x00\x7f\x9b\u2066é✓") == (
        "a\\x1b[0mb\\tc\\r\\n\\x00\\x7f\\x9b\\u2066é✓"
    )


# -- pause, resume, cancel --------------------------------------------------


def test_pause_prints_pausing_and_the_worker_then_pauses_the_run(
    app: Flask, cli: Invoke, mtasks: t.Any
) -> None:
    seed_items(3)
    run = mtasks.run("CountItemsTask")

    result = cli("pause", str(run.id))
    drain(app)

    assert result.exit_code == 0
    assert result.stdout == f"Run #{run.id} is pausing.\n"
    assert fresh_run(run.id).status == "paused"
    assert counters() == [0, 0, 0]


def test_resume_of_a_paused_run_prints_enqueued_and_the_run_finishes(
    app: Flask, cli: Invoke, mtasks: t.Any
) -> None:
    seed_items(3)
    run = mtasks.run("CountItemsTask")
    mtasks.pause(run.id)
    drain(app)

    result = cli("resume", str(run.id))
    drain(app)

    assert result.stdout == f"Run #{run.id} is enqueued.\n"
    assert fresh_run(run.id).status == "succeeded"
    assert counters() == [1, 1, 1]


def test_cancel_of_a_paused_run_cancels_it_at_once(app: Flask, cli: Invoke, mtasks: t.Any) -> None:
    run = mtasks.run("ListTask")
    mtasks.pause(run.id)
    drain(app)

    result = cli("cancel", str(run.id))

    assert result.stdout == f"Run #{run.id} is cancelled.\n"
    assert fresh_run(run.id).status == "cancelled"


def test_cancel_of_an_enqueued_run_prints_cancelling(cli: Invoke, mtasks: t.Any) -> None:
    run = mtasks.run("ListTask")

    result = cli("cancel", str(run.id))

    assert result.stdout == f"Run #{run.id} is cancelling.\n"
    assert fresh_run(run.id).status == "cancelling"


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("pause", "Error: Cannot pause a succeeded run."),
        ("resume", "Error: Cannot resume a succeeded run."),
        ("cancel", "Error: Cannot cancel a succeeded run."),
    ],
)
def test_a_control_command_in_the_wrong_state_fails_and_changes_nothing(
    app: Flask, cli: Invoke, mtasks: t.Any, command: str, message: str
) -> None:
    run = mtasks.run("ListTask")
    drain(app)
    before = fresh_run(run.id)

    result = cli(command, str(run.id))

    after = fresh_run(run.id)
    assert error_line(result) == message
    assert result.exit_code == 1
    assert (after.status, after.lock_version, after.updated_at) == (
        "succeeded",
        before.lock_version,
        before.updated_at,
    )


def test_resume_of_an_enqueued_run_fails(cli: Invoke, mtasks: t.Any) -> None:
    run = mtasks.run("ListTask")

    result = cli("resume", str(run.id))

    assert error_line(result) == "Error: Cannot resume an enqueued run."
    assert fresh_run(run.id).status == "enqueued"


# -- a database without the runs table -------------------------------------


@pytest.mark.both_databases  # each driver says "no such table" its own way
@pytest.mark.parametrize(
    "args",
    [("list",), ("run", "ListTask"), ("status",), ("status", "1"), ("pause", "1")],
    ids=lambda args: " ".join(args),
)
def test_a_command_without_the_runs_table_says_how_to_create_it(
    cli: Invoke, db: t.Any, args: tuple[str, ...]
) -> None:
    db.session.remove()
    # The CSV tables refer to the runs table: drop them too.
    db.metadata.drop_all(db.engine)

    result = cli(*args)

    line = error_line(result)
    assert line.startswith("Error: The table maintenance_tasks_runs does not exist in ")
    assert "`flask mtasks migrations install` then `flask db upgrade`" in line
    assert "`db.create_all()`" in line
    assert "Traceback" not in result.output


# -- run --wait -------------------------------------------------------------


def test_run_wait_draws_progress_on_stderr_and_exits_0_once_succeeded(
    inprocess_app: Flask,
) -> None:
    seed_items(20)

    result = inprocess_app.test_cli_runner().invoke(
        args=["mtasks", "run", "CountItemsTask", "--wait"]
    )

    assert result.exit_code == 0, result.output
    run_id = int(result.stdout.strip())
    assert fresh_run(run_id).status == "succeeded"
    last = result.stderr.strip().splitlines()[-1]
    assert last == f"[{'#' * 30}] succeeded   Processed 20 out of 20 items (100%)."
    assert counters() == [1] * 20


def test_run_wait_exits_1_with_the_error_of_an_errored_run(inprocess_app: Flask) -> None:
    seed_items(4)

    result = inprocess_app.test_cli_runner().invoke(
        args=["mtasks", "run", "CountItemsTask", "--arg", "fail_on=item-2", "--wait"]
    )

    run_id = int(result.stdout.strip())
    assert error_line(result) == (
        f"Error: Run #{run_id} ended errored: ValueError: "
        "cannot process item 2: its title is 'item-2'"
    )
    assert result.exit_code == 1


@pytest.mark.slow
def test_run_wait_follows_a_run_on_a_worker_process_until_it_succeeds(
    app: Flask, workers: t.Any
) -> None:
    seed_items(60)
    workers.start()

    result = workers.cli("run", "CountItemsTask", "--arg", "sleep=0.05", "--wait", timeout=60)

    assert result.returncode == 0, result.stderr
    run = fresh_run(int(result.stdout.strip()))
    assert (run.status, run.tick_count, run.tick_total) == ("succeeded", 60, 60)
    assert "running" in result.stderr  # the bar was drawn while it ran
    assert result.stderr.strip().endswith("succeeded   Processed 60 out of 60 items (100%).")
    assert counters() == [1] * 60


@pytest.mark.slow
def test_run_wait_on_a_worker_process_fails_with_the_runs_error(app: Flask, workers: t.Any) -> None:
    seed_items(10)
    workers.start()

    result = workers.cli("run", "CountItemsTask", "--arg", "fail_on=item-7", "--wait", timeout=60)

    run_id = int(result.stdout.strip())
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: Run #{run_id} ended errored: ValueError: "
        "cannot process item 7: its title is 'item-7'"
    )
    assert fresh_run(run_id).status == "errored"
    assert counters()[6:] == [0, 0, 0, 0]  # item-7 and those after it were never processed


# -- the in-process executor: the command says it waits, and shows progress ---

IN_PROCESS_NOTE = (
    "no MAINTENANCE_TASKS_REDIS_URL: the run executes in this process; "
    "the command returns when it ends"
)


def test_run_without_redis_says_it_waits_and_shows_progress_until_the_run_ends(
    inprocess_app: Flask,
) -> None:
    seed_items(5)

    result = inprocess_app.test_cli_runner().invoke(args=["mtasks", "run", "CountItemsTask"])

    assert result.exit_code == 0, result.output
    run_id = int(result.stdout.strip())
    assert fresh_run(run_id).status == "succeeded"  # the command returned once it ended
    lines = result.stderr.strip().splitlines()
    assert lines[0] == IN_PROCESS_NOTE
    assert lines[-1] == f"[{'#' * 30}] succeeded   Processed 5 out of 5 items (100%)."


def test_run_without_redis_nor_wait_reports_an_errored_run_and_exits_0(
    inprocess_app: Flask,
) -> None:
    seed_items(3)

    result = inprocess_app.test_cli_runner().invoke(
        args=["mtasks", "run", "CountItemsTask", "--arg", "fail_on=item-2"]
    )

    assert result.exit_code == 0, result.output
    run_id = int(result.stdout.strip())
    assert result.stderr.strip().splitlines()[-1] == (
        f"Run #{run_id} ended errored: ValueError: cannot process item 2: its title is 'item-2'"
    )


def _paused_run(inprocess_app: Flask, items: int) -> int:
    seed_items(items)
    engine = inprocess_app.extensions["sqlalchemy"].engine
    return add_run(
        engine,
        "CountItemsTask",
        "paused",
        tick_total=items,
        cursor=1,
        tick_count=1,
        arguments={},
        interruption_reason="pause",
    )


def test_resume_without_redis_says_it_waits_and_shows_progress(inprocess_app: Flask) -> None:
    run_id = _paused_run(inprocess_app, 4)

    result = inprocess_app.test_cli_runner().invoke(args=["mtasks", "resume", str(run_id)])

    assert result.exit_code == 0, result.output
    assert result.stdout == f"Run #{run_id} is enqueued.\n"
    lines = result.stderr.strip().splitlines()
    assert lines[0] == IN_PROCESS_NOTE
    assert lines[-1] == f"[{'#' * 30}] succeeded   Processed 4 out of 4 items (100%)."
    assert fresh_run(run_id).status == "succeeded"
    assert counters() == [0, 1, 1, 1]


def test_resume_wait_exits_1_with_the_error_of_an_errored_run(inprocess_app: Flask) -> None:
    seed_items(3)
    engine = inprocess_app.extensions["sqlalchemy"].engine
    run_id = add_run(
        engine,
        "CountItemsTask",
        "errored",
        tick_total=3,
        arguments={"fail_on": "item-2"},
        error_class="ValueError",
        error_message="before",
    )

    result = inprocess_app.test_cli_runner().invoke(
        args=["mtasks", "resume", str(run_id), "--wait"]
    )

    assert error_line(result) == (
        f"Error: Run #{run_id} ended errored: ValueError: "
        "cannot process item 2: its title is 'item-2'"
    )
    assert result.exit_code == 1


# -- RQ: following a run nobody takes -----------------------------------------


@pytest.mark.slow
def test_resume_wait_follows_a_run_on_a_worker_process(
    app: Flask, mtasks: t.Any, workers: t.Any
) -> None:
    seed_items(30)
    run = mtasks.run("CountItemsTask")
    mtasks.pause(run.id)
    drain(app)
    worker = workers.start()
    executor = app.extensions["maintenance_tasks"].executor
    wait_until(lambda: (executor.worker_count() or 0) > 0, 30, "a worker")

    result = workers.cli("resume", str(run.id), "--wait", timeout=60)

    assert result.returncode == 0, result.stderr + workers.log(worker)
    assert result.stdout == f"Run #{run.id} is enqueued.\n"
    assert result.stderr.strip().endswith("succeeded   Processed 30 out of 30 items (100%).")
    assert "No worker listens" not in result.stderr
    assert fresh_run(run.id).status == "succeeded"


@pytest.mark.slow
def test_run_wait_without_a_worker_hints_once_to_start_one_then_follows_it(
    app: Flask, workers: t.Any, app_env: dict[str, str], tmp_path: t.Any
) -> None:
    seed_items(5)
    stderr = tmp_path / "stderr"
    command = FlaskProcess(
        [*APP, "mtasks", "run", "CountItemsTask", "--wait"],
        env={**os.environ, **app_env},
        cwd=ROOT,
        stdout=tmp_path / "stdout",
        stderr=stderr,
    )
    try:
        hint = (
            "No worker listens on queue maintenance_tasks; the run stays enqueued until one does. "
            "Start one with `flask mtasks worker`."
        )
        wait_until(lambda: stderr.exists() and hint in stderr.read_text(), 30, "the hint")
        assert command.poll() is None  # still following
        workers.start()
        assert command.wait(60) == 0, stderr.read_text()
    finally:
        command.kill()
    lines = stderr.read_text().strip().splitlines()
    assert lines.count(hint) == 1
    assert lines[-1] == f"[{'#' * 30}] succeeded   Processed 5 out of 5 items (100%)."


def test_the_worker_count_is_unknown_rather_than_an_error_while_redis_is_unreachable(
    redis_url: str,
) -> None:
    unreachable = RQExecutor("unix:///nonexistent/redis.sock", "maintenance_tasks", 30.0)
    reachable = RQExecutor(redis_url, "maintenance_tasks", 30.0)
    assert unreachable.worker_count() is None
    assert reachable.worker_count() == 0


def test_a_misspelt_task_name_gets_the_closest_names(cli: Invoke, db: t.Any) -> None:
    result = cli("run", "ListTsk")

    assert error_line(result) == (
        "Error: Task 'ListTsk' not found. Did you mean 'ListTask'? Known tasks are listed by "
        "`flask mtasks list` (package tests.testapp.maintenance)."
    )
    assert result.exit_code == 1
    assert runs(db) == []
