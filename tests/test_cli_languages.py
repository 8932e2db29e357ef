"""``flask mtasks`` in Japanese and in English: the terminal's locale picks the language.

Each command runs in a process of its own (as a user types it), with
``LANGUAGE=ja``, or ``LANG=ja_JP.UTF-8`` and no ``LANGUAGE``; the same command
in English gives the English wording and the same exit status. What programs
read (``--json``) and what is stored (a run's error, the audit trail) stays
English whatever the locale of the command or of the worker.
"""

from __future__ import annotations

import json
import re
import subprocess
import typing as t
from pathlib import Path

import flask
import pytest
import sqlalchemy as sa
from flask import Flask

from flask_maintenance_tasks.csv import rows as reading
from flask_maintenance_tasks.models import Event
from tests.support import ROOT
from tests.support.csv_files import items_csv, write
from tests.support.dashboard import Dashboard, text
from tests.support.processes import run_flask
from tests.support.records import fresh_run, seed_items
from tests.support.waiting import wait_until
from tests.support.workers import APP, WorkerProcesses, drain

#: The locale variables gettext reads, in its order; every test sets its own.
LOCALE_VARIABLES = ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")

JAPANESE = {"LANGUAGE": "ja"}
#: Japanese the way most terminals say it: no LANGUAGE, only LANG.
JAPANESE_LANG = {"LANG": "ja_JP.UTF-8"}
ENGLISH = {"LANGUAGE": "en"}


def mtasks_in(
    app_env: dict[str, str], locale: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    """``flask mtasks ARGS`` in a process of its own, speaking ``locale``."""
    import os

    env = {k: v for k, v in {**os.environ, **app_env}.items() if k not in LOCALE_VARIABLES}
    return run_flask([*APP, "mtasks", *args], env={**env, **locale}, cwd=ROOT, timeout=60)


def error_of(result: subprocess.CompletedProcess[str]) -> str:
    """The last line of stderr: a failed command's one error line."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip().splitlines()[-1]


def succeeded_run(app: Flask, mtasks: t.Any, name: str = "ListTask") -> int:
    run = mtasks.run(name)
    drain(app)
    assert fresh_run(run.id).status == "succeeded"
    return int(run.id)


# -- what people read -------------------------------------------------------


@pytest.mark.parametrize("locale", [JAPANESE, JAPANESE_LANG], ids=["LANGUAGE", "LANG"])
def test_list_names_each_latest_run_in_japanese(
    app: Flask, app_env: dict[str, str], mtasks: t.Any, locale: dict[str, str]
) -> None:
    run_id = succeeded_run(app, mtasks)
    dry = mtasks.run("OnceTask", dry_run=True)

    result = mtasks_in(app_env, locale, "list")

    assert result.returncode == 0, result.stderr
    lines = dict(line.split(None, 1) for line in result.stdout.splitlines())
    assert lines["ListTask"] == f"成功（実行 #{run_id}）"
    assert lines["OnceTask"] == f"待機中（ドライラン #{dry.id}）"
    assert lines["CountItemsTask"] == "新規"
    english = mtasks_in(app_env, ENGLISH, "list")
    lines = dict(line.split(None, 1) for line in english.stdout.splitlines())
    assert lines["ListTask"] == f"succeeded (run #{run_id})"
    assert lines["CountItemsTask"] == "new"


def test_show_describes_a_task_in_japanese(
    app: Flask, app_env: dict[str, str], mtasks: t.Any
) -> None:
    result = mtasks_in(app_env, JAPANESE, "show", "CountItemsTask")

    assert result.returncode == 0, result.stderr
    assert "引数: sleep, fail_on" in result.stdout
    assert "最新の実行: なし（新規）" in result.stdout
    run_id = succeeded_run(app, mtasks, "ListTask")
    shown = mtasks_in(app_env, JAPANESE, "show", "ListTask").stdout
    assert f"最新の実行: 実行 #{run_id}、成功" in shown


def test_invalid_arguments_are_refused_in_japanese_with_the_same_exit_status(
    app: Flask, app_env: dict[str, str]
) -> None:
    args = ("run", "ParamsTask", "--arg", "content=", "--arg", "limit=many", "--arg", "mode=slow")

    japanese = mtasks_in(app_env, JAPANESE, *args)
    english = mtasks_in(app_env, ENGLISH, *args)

    assert japanese.returncode == english.returncode == 1
    assert error_of(english).startswith("Error: Invalid arguments for ParamsTask: ")
    assert "Input should be a valid integer" in error_of(english)
    line = error_of(japanese)
    assert line.startswith("エラー: 引数が正しくありません（ParamsTask）: ")
    assert "content: 1 文字以上で指定してください" in line
    assert "limit: 整数を指定してください" in line
    assert "mode: 'fast'、'careful' のいずれかを指定してください" in line


def test_an_unknown_task_is_refused_in_japanese_with_the_same_exit_status(
    app: Flask, app_env: dict[str, str]
) -> None:
    japanese = mtasks_in(app_env, JAPANESE_LANG, "run", "ListTsk")
    english = mtasks_in(app_env, ENGLISH, "run", "ListTsk")

    assert japanese.returncode == english.returncode == 1
    assert error_of(english) == (
        "Error: Task 'ListTsk' not found. Did you mean 'ListTask'? Known tasks are listed by "
        "`flask mtasks list` (package tests.testapp.maintenance)."
    )
    assert error_of(japanese) == (
        "エラー: タスク 'ListTsk' が見つかりません。'ListTask' のことですか？"
        "既存のタスクは `flask mtasks list` で一覧できます"
        "（パッケージ tests.testapp.maintenance）。"
    )


def test_status_of_a_run_reads_in_japanese(
    app: Flask, app_env: dict[str, str], mtasks: t.Any
) -> None:
    seed_items(3)
    run = mtasks.run("CountItemsTask", arguments={"fail_on": "item-2"})
    drain(app)
    assert fresh_run(run.id).status == "errored"

    result = mtasks_in(app_env, JAPANESE, "status", str(run.id))

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"実行 #{run.id}  CountItemsTask  エラー"
    assert '  引数: {"sleep": 0.0, "fail_on": "item-2"}' in lines
    assert "  エラー: ValueError: cannot process item 2: its title is 'item-2'" in lines
    assert "  バックトレース:" in lines and "  操作履歴:" in lines
    listed = mtasks_in(app_env, JAPANESE, "status").stdout.splitlines()
    assert listed[0] == "進行中の実行はありません。"
    assert listed[1] == "最近の実行:"


@pytest.mark.parametrize(
    ("action", "english", "japanese"),
    [
        ("pause", "Cannot pause a succeeded run.", "状態が「成功」の実行は一時停止できません。"),
        ("resume", "Cannot resume a succeeded run.", "状態が「成功」の実行は再開できません。"),
    ],
)
def test_an_action_in_the_wrong_state_is_refused_in_japanese_and_recorded_in_english(
    app: Flask,
    app_env: dict[str, str],
    mtasks: t.Any,
    db: t.Any,
    action: str,
    english: str,
    japanese: str,
) -> None:
    run_id = succeeded_run(app, mtasks)

    in_japanese = mtasks_in(app_env, JAPANESE, action, str(run_id))
    in_english = mtasks_in(app_env, ENGLISH, action, str(run_id))

    assert in_japanese.returncode == in_english.returncode == 1
    assert error_of(in_japanese) == f"エラー: {japanese}"
    assert error_of(in_english) == f"Error: {english}"
    db.session.remove()
    refused = db.session.scalars(
        sa.select(Event.detail).where(Event.run_id == run_id, Event.outcome == "refused")
    ).all()
    assert refused == [english, english]  # the trail is stored: English for everyone


def test_help_is_printed_in_the_terminals_language(app_env: dict[str, str]) -> None:
    group = mtasks_in(app_env, JAPANESE, "--help")
    run = mtasks_in(app_env, JAPANESE_LANG, "run", "--help")
    english = mtasks_in(app_env, ENGLISH, "run", "--help")

    assert group.returncode == run.returncode == english.returncode == 0
    assert "メンテナンスタスクを実行・操作します。" in group.stdout
    # The short help of each command, in the list of commands.
    assert re.search(r"^  list +タスクを、それぞれの最新の実行の状態とともに", group.stdout, re.M)
    assert "タスク NAME の実行を開始し、その ID を表示します。" in run.stdout
    flat = " ".join(run.stdout.split())
    assert "引数（複数指定可）。" in flat
    assert "実行が終わるまで追跡し、成功しなければ失敗として終了します。" in flat
    assert "件が失敗したときの動作" in flat
    flat = " ".join(english.stdout.split())
    assert "Start a run of task NAME and print its id." in flat
    assert "--arg KEY=VALUE A parameter (repeatable)." in flat
    assert "Follow the run until it ends; fail unless it succeeds." in flat


def _without_ages(output: str) -> str:
    """JSON output with its "... ago" durations blotted out (seconds pass between commands)."""
    return re.sub(r"[0-9dhms ]+ ago", " N ago", output)


def test_json_output_is_the_same_in_japanese_and_in_english(
    app: Flask, app_env: dict[str, str], mtasks: t.Any
) -> None:
    seed_items(3)
    failed = mtasks.run("CountItemsTask", arguments={"fail_on": "item-2"}, error_policy="skip")
    drain(app)
    waiting = mtasks.run("ListTask", dry_run=True)  # no worker: it stays enqueued

    for args in (
        ("status", str(waiting.id), "--json"),
        ("status", str(failed.id), "--json"),
        ("status", "--json"),
        ("failures", str(failed.id), "--json"),
        ("preview", "CountItemsTask", "--json"),
        ("preview", "ParamsTask", "--arg", "limit=many", "--json"),
    ):
        japanese = mtasks_in(app_env, JAPANESE, *args)
        english = mtasks_in(app_env, ENGLISH, *args)
        assert japanese.returncode == english.returncode, args
        assert _without_ages(japanese.stdout) == _without_ages(english.stdout), args
        json.loads(japanese.stdout)
    data = json.loads(mtasks_in(app_env, JAPANESE, "status", str(waiting.id), "--json").stdout)
    assert data["status_text"] == "Waiting to start."
    refused = json.loads(
        mtasks_in(
            app_env, JAPANESE, "preview", "ParamsTask", "--arg", "limit=many", "--json"
        ).stdout
    )
    assert "Input should be a valid integer" in json.dumps(refused)


# -- what is stored ---------------------------------------------------------


@pytest.mark.slow
def test_a_worker_in_a_japanese_locale_stores_english_errors(
    app: Flask, mtasks: t.Any, app_env: dict[str, str], tmp_path: Path
) -> None:
    rows = items_csv(1400, pad=85).splitlines(keepends=True)
    rows[1100] = "1100,bad,row\n"  # found by the worker, past the checked start of the file
    path = write(tmp_path, "items.csv", "".join(rows))
    assert path.stat().st_size > 2 * reading.PREFLIGHT_BYTES
    workers = WorkerProcesses({**app_env, **JAPANESE}, tmp_path)
    try:
        workers.start()
        run = mtasks.run("ImportItemsTask", csv_file=path)
        wait_until(lambda: fresh_run(run.id).status == "errored", 60, "the run to error")
    finally:
        workers.stop_all()

    errored = fresh_run(run.id)
    assert errored.error_class == "CSVFileError"
    assert errored.error_message == (
        "Row 1,100 (line 1,101) has 3 fields, but the header has 2 columns."
    )
    # ...and a person reading it in Japanese gets it as it was stored.
    result = mtasks_in(app_env, JAPANESE, "status", str(run.id))
    assert (
        "  エラー: CSVFileError: Row 1,100 (line 1,101) has 3 fields, but the header has 2 columns."
        in result.stdout.splitlines()
    )


# -- the dashboard's form ---------------------------------------------------


def test_the_run_forms_validation_messages_follow_accept_language(app: Flask, db: t.Any) -> None:
    web = Dashboard(app)
    web.token()
    form = {"content": "", "limit": "many", "mode": "fast", "ids": "1, x"}

    # The test's app context outlives each request, and so does flask.g, where
    # the request's language is kept: forget it, as a new request's context would.
    flask.g.pop("_mtasks_locale", None)
    japanese = web.post("/tasks/ParamsTask/runs", form, headers={"Accept-Language": "ja"})
    flask.g.pop("_mtasks_locale", None)
    english = web.post("/tasks/ParamsTask/runs", form, headers={"Accept-Language": "en"})

    assert japanese.status_code == english.status_code == 422
    errors = re.compile(r'class="field-error"[^>]*>([^<]+)<')
    assert errors.findall(text(japanese)) == [
        "必須です",  # content: an empty field is a missing one
        "整数を指定してください",  # limit
        "整数を指定してください (1)",  # ids, its second item
    ]
    assert errors.findall(text(english)) == [
        "Field required",
        "Input should be a valid integer, unable to parse string as an integer",
        "Input should be a valid integer, unable to parse string as an integer (1)",
    ]
