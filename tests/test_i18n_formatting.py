"""How runs read in Japanese, and that English reads as it always did: durations, ETA,
status sentences, progress, throughput, speed, timelines, error policies, dry runs and
step lines, formatted in a request of the real app on runs read back from the database."""

from __future__ import annotations

import contextlib
import typing as t
from datetime import datetime, timedelta, timezone

import pytest
from flask import Flask

from flask_maintenance_tasks import Run, audit, formatting, i18n
from flask_maintenance_tasks.dryrun import summary
from flask_maintenance_tasks.models import Event
from flask_maintenance_tasks.policy import ErrorPolicy
from flask_maintenance_tasks.published import step_line
from flask_maintenance_tasks.store import open_session
from tests.support.dashboard import add_run
from tests.support.records import fresh_run

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=timezone.utc)

pytestmark = pytest.mark.skipif(not i18n.babel_available(), reason="needs the i18n extra")


@contextlib.contextmanager
def speaking(app: Flask, language: str | None) -> t.Iterator[None]:
    """A request of the app whose ``Accept-Language`` is ``language`` (none: no header).

    In an app context of its own, as a served request has: the language is kept in ``g``.
    """
    headers = {"Accept-Language": language} if language else {}
    with app.app_context(), app.test_request_context("/maintenance_tasks/", headers=headers):
        yield


def stored(db: t.Any, status: str, **fields: t.Any) -> t.Any:
    """A run in ``status`` inserted as a worker leaves it, read back through the extension."""
    return fresh_run(add_run(db.engine, "ListTask", status, **fields))


# -- durations, "ago", dates and numbers -----------------------------------------------

DURATIONS = [
    (None, "-", "-"),
    (0, "0s", "0秒"),
    (4, "4s", "4秒"),
    (59.4, "59s", "59秒"),
    (185, "3m 05s", "3分05秒"),
    (3599, "59m 59s", "59分59秒"),
    (7500, "2h 05m", "2時間05分"),
    (3 * 86400 + 4 * 3600 + 59, "3d 4h", "3日4時間"),
]


@pytest.mark.parametrize(("seconds", "english", "japanese"), DURATIONS)
def test_durations_at_each_scale(
    app: Flask, seconds: float | None, english: str, japanese: str
) -> None:
    with speaking(app, "ja"):
        assert formatting.duration(seconds) == japanese
    with speaking(app, "en-US,en;q=0.9"):
        assert formatting.duration(seconds) == english
    with speaking(app, None):
        assert formatting.duration(seconds) == english


def test_ago_and_the_moment_of_a_tooltip(app: Flask) -> None:
    with speaking(app, "ja"):
        assert formatting.ago(NOW - timedelta(minutes=5), NOW) == "5分00秒前"
        assert formatting.ago(None, NOW) == "-"
        assert formatting.timestamp(NOW) == "2024/06/01 12:00:00 UTC"
    with speaking(app, "en"):
        assert formatting.ago(NOW - timedelta(minutes=5), NOW) == "5m 00s ago"
        assert formatting.timestamp(NOW) == "2024-06-01 12:00:00 UTC"


def test_the_language_is_the_best_match_of_accept_language(app: Flask) -> None:
    with speaking(app, "fr-FR,ja;q=0.8,en;q=0.5"):
        assert formatting.duration(4) == "4秒"
    with speaking(app, "fr-FR,de;q=0.8"):
        assert formatting.duration(4) == "4s"


# -- progress and throughput ------------------------------------------------------------


def test_progress_with_and_without_a_total_and_thousands_separators(app: Flask, db: t.Any) -> None:
    known = stored(db, "running", tick_count=4000, tick_total=7000)
    unknown = stored(db, "running", tick_count=1234567)
    one = stored(db, "running", tick_count=1)
    past = stored(db, "running", tick_count=12000, tick_total=10000)

    def progress(run: t.Any) -> str:
        return formatting.progress_text(run.tick_count, run.tick_total)

    with speaking(app, "ja"):
        japanese = [progress(run) for run in (known, unknown, one, past)]
    with speaking(app, "en"):
        english = [progress(run) for run in (known, unknown, one, past)]

    assert japanese == [
        "7,000 件中 4,000 件を処理しました（57%）。",
        "1,234,567 件を処理しました。",
        "1 件を処理しました。",
        "12,000 件を処理しました（予定は 10,000 件）。",
    ]
    assert english == [
        "Processed 4,000 out of 7,000 items (57%).",
        "Processed 1,234,567 items.",
        "Processed 1 item.",
        "Processed 12,000 items (expected 10,000).",
    ]


def test_throughput_per_second_and_per_minute(app: Flask, db: t.Any) -> None:
    fast = stored(db, "running", tick_count=24691, tick_total=50000, time_running=20.0)
    slow = stored(db, "running", tick_count=3, tick_total=50, time_running=60.0)

    with speaking(app, "ja"):
        japanese = [formatting.throughput_text(fast), formatting.throughput_text(slow)]
    with speaking(app, "en"):
        english = [formatting.throughput_text(fast), formatting.throughput_text(slow)]

    assert japanese == ["1,234.5 件/秒", "3.0 件/分"]
    assert english == ["1,234.5 items/s", "3.0 items/min"]


@pytest.mark.parametrize("rate", [0.35, 0.25, 1.05, 2.675, 12345.65])
def test_throughput_rounds_as_it_always_did(app: Flask, rate: float) -> None:
    run = Run(tick_count=1, time_running=1 / rate, status="running")
    expected_rate = formatting.throughput(run) or 0.0
    per = "s" if expected_rate >= 1 else "min"
    shown = expected_rate if expected_rate >= 1 else expected_rate * 60
    with speaking(app, "en"):
        assert formatting.throughput_text(run) == f"{shown:,.1f} items/{per}"


def test_the_speed_line(app: Flask, db: t.Any) -> None:
    capped = stored(
        db, "running", max_rate=200.0, batch_size_override=50, ticker_delay_override=0.5
    )
    plain = stored(db, "running")

    with speaking(app, "ja"):
        japanese = [formatting.speed_text(capped), formatting.speed_text(plain)]
    with speaking(app, "en"):
        english = [formatting.speed_text(capped), formatting.speed_text(plain)]

    assert japanese == [
        "速度上限 200 件/秒、バッチサイズ 50、ティッカー間隔 0.5秒",
        "速度上限 なし、バッチサイズ タスクの既定値、ティッカー間隔 タスクの既定値",
    ]
    assert english == [
        "rate cap 200/s, batch size 50, ticker delay 0.5s",
        "rate cap none, batch size task's own, ticker delay task's own",
    ]


# -- status sentences -----------------------------------------------------------------


def status_runs(db: t.Any) -> dict[str, t.Any]:
    ended = NOW - timedelta(minutes=5)
    return {
        "running_eta": stored(db, "running", tick_count=500, tick_total=1000, time_running=10.0),
        "running": stored(db, "running", tick_count=500, time_running=10.0),
        "scheduled_later": stored(db, "scheduled", scheduled_at=NOW + timedelta(minutes=3)),
        "scheduled_due": stored(db, "scheduled", scheduled_at=NOW - timedelta(seconds=1)),
        "enqueued": stored(db, "enqueued"),
        "pausing": stored(db, "pausing", time_running=4.0),
        "paused": stored(db, "paused", tick_count=4000, tick_total=7000, time_running=185.0),
        "interrupted_why": stored(db, "interrupted", interruption_reason="time_slice"),
        "interrupted": stored(db, "interrupted"),
        "cancelling": stored(db, "cancelling"),
        "cancelled": stored(db, "cancelled", time_running=7500.0, ended_at=ended),
        "succeeded": stored(db, "succeeded", time_running=4.0, ended_at=ended),
        "errored": stored(db, "errored", time_running=4.0, ended_at=ended),
    }


def test_each_status_sentence_in_japanese_and_in_english(app: Flask, db: t.Any) -> None:
    runs = status_runs(db)

    with speaking(app, "ja"):
        japanese = {key: formatting.status_text(run, NOW) for key, run in runs.items()}
    with speaking(app, "en"):
        english = {key: formatting.status_text(run, NOW) for key, run in runs.items()}

    assert japanese == {
        "running_eta": "10秒実行中です。残り約10秒です。",
        "running": "10秒実行中です。",
        "scheduled_later": "2024/06/01 12:03:00 UTC に開始する予定です（あと3分00秒）。",
        "scheduled_due": "2024/06/01 11:59:59 UTC に開始する予定です。まもなく開始します。",
        "enqueued": "開始を待っています。",
        "pausing": "次の件で一時停止します…",
        "paused": "3分05秒実行して一時停止しました。7,000 件中 4,000 件を処理しました（57%）。",
        "interrupted_why": "中断されました（持ち時間の終了）。まもなく再開します。",
        "interrupted": "中断されました。まもなく再開します。",
        "cancelling": "次の件でキャンセルします…",
        "cancelled": "2時間05分実行し、5分00秒前にキャンセルされました。",
        "succeeded": "4秒実行し、5分00秒前に完了しました。",
        "errored": "4秒実行し、5分00秒前にエラーで停止しました。",
    }
    assert english == {
        "running_eta": "Running for 10s; about 10s remaining.",
        "running": "Running for 10s.",
        "scheduled_later": "Scheduled for 2024-06-01 12:03:00 UTC (in 3m 00s).",
        "scheduled_due": "Scheduled for 2024-06-01 11:59:59 UTC; starting shortly.",
        "enqueued": "Waiting to start.",
        "pausing": "Pausing at the next item...",
        "paused": "Ran for 3m 05s until paused; Processed 4,000 out of 7,000 items (57%).",
        "interrupted_why": "Interrupted (time slice); resuming shortly.",
        "interrupted": "Interrupted; resuming shortly.",
        "cancelling": "Cancelling at the next item...",
        "cancelled": "Ran for 2h 05m; cancelled 5m 00s ago.",
        "succeeded": "Ran for 4s; finished 5m 00s ago.",
        "errored": "Ran for 4s until an error 5m 00s ago.",
    }


def test_status_words_in_a_sentence(app: Flask) -> None:
    with speaking(app, "ja"):
        assert formatting.status_in_sentence("running") == "実行中"
        assert formatting.status_name("running") == "実行中"
    with speaking(app, "en"):
        assert formatting.status_in_sentence("running") == "running"
        assert formatting.status_name("running") == "Running"


# -- the audit trail ------------------------------------------------------------------


def test_every_audit_action_reads_in_japanese_and_in_english(app: Flask) -> None:
    with speaking(app, "ja"):
        japanese = {action: formatting.action_text(action) for action in formatting.ACTION_TEXT}
    with speaking(app, "en"):
        english = {action: formatting.action_text(action) for action in formatting.ACTION_TEXT}

    assert english["pause_requested"] == "Pause asked"
    assert english["speed_changed"] == "Speed changed"
    assert english["interrupted"] == "Handed on"
    assert japanese["pause_requested"] == "一時停止を要求"
    assert japanese["csv_downloaded"] == "CSV ファイルをダウンロード"
    assert japanese["step_changed"] == "新しいステップ"
    for action, text in japanese.items():
        assert text and text != english[action], action
        assert not any("a" <= c.lower() <= "z" for c in text.replace("CSV", "")), text


def test_an_event_line_of_a_real_trail(app: Flask, db: t.Any) -> None:
    run_id = add_run(db.engine, "ListTask", "interrupted")
    dashboard = audit.Actor("bob", audit.DASHBOARD, "10.0.0.7")
    with open_session(db) as session:
        audit.record(
            session, run_id=run_id, task_name="ListTask", action="pause_requested", actor=dashboard
        )
        audit.record(
            session,
            run_id=run_id,
            task_name="ListTask",
            action="cancel_requested",
            actor=audit.Actor(None, audit.CLI, None),
            outcome=audit.REFUSED,
            detail="Cannot cancel a paused run.",
        )
        audit.record(
            session,
            run_id=run_id,
            task_name="ListTask",
            action="interrupted",
            actor=audit.worker(),
            detail="time_slice",
        )
        session.commit()
        events: list[Event] = audit.timeline(session, run_id, 10).events
        host = events[2].address

    with speaking(app, "ja"):
        japanese = [formatting.event_text(event) for event in events]
    with speaking(app, "en"):
        english = [formatting.event_text(event) for event in events]

    assert japanese == [
        "一時停止を要求：bob（ダッシュボード、10.0.0.7）",
        "キャンセルを要求：不明なユーザー（CLI）：拒否 - Cannot cancel a paused run.",
        f"別のジョブへ引き継ぎ：worker（エンジン、{host}） - 持ち時間の終了",
    ]
    assert english == [
        "Pause asked by bob (dashboard, 10.0.0.7)",
        "Cancel asked by someone unknown (cli): refused - Cannot cancel a paused run.",
        f"Handed on by worker (engine, {host}) - time slice",
    ]


# -- error policies, dry runs, steps --------------------------------------------------


def test_the_policy_line(app: Flask, db: t.Any) -> None:
    runs = [
        stored(db, "running", error_policy="skip", max_failures=100, max_failure_rate=0.05),
        stored(db, "running", error_policy="skip", max_failures=1),
        stored(db, "running", error_policy="skip", max_failure_rate=0.125),
        stored(db, "running"),
    ]

    with speaking(app, "ja"):
        japanese = [formatting.policy_text(run) for run in runs]
    with speaking(app, "en"):
        english = [formatting.policy_text(run) for run in runs]

    assert japanese == [
        "スキップ（失敗 100 件または 5% まで）",
        "スキップ（失敗 1 件まで）",
        "スキップ（失敗 12.5% まで）",
        "停止",
    ]
    assert english == [
        "skip, at most 100 failures or 5%",
        "skip, at most 1 failures",
        "skip, at most 12.5%",
        "stop",
    ]


def test_policy_errors_are_in_the_readers_language(app: Flask) -> None:
    from flask_maintenance_tasks.exceptions import InvalidArguments
    from tests.testapp.maintenance.kinds import ParamsTask

    def errors() -> dict[str, list[str]]:
        with pytest.raises(InvalidArguments) as refused:
            ErrorPolicy.resolve(ParamsTask, error_policy="retry", max_failures="-1")
        return dict(refused.value.errors)

    with speaking(app, "ja"):
        japanese = errors()
    with speaking(app, "en"):
        english = errors()

    assert japanese == {
        "error_policy": ["不明なエラー方針 'retry' です。stop か skip を指定してください"],
        "max_failures": ["0 以上の整数で指定してください"],
    }
    assert english == {
        "error_policy": ["unknown error policy 'retry': choose stop or skip"],
        "max_failures": ["must be a whole number, 0 or more"],
    }


def test_a_dry_runs_summary(app: Flask, db: t.Any) -> None:
    changes = {
        "tables": {
            "posts": {"inserted": 0, "updated": 12345, "deleted": 1, "columns": ["title", "slug"]},
            "tags": {"inserted": 2, "updated": 0, "deleted": 0, "columns": []},
        },
        "sample": [],
    }
    run = stored(db, "succeeded", dry_run=True, changes=changes)
    nothing = stored(db, "succeeded", dry_run=True, changes={"tables": {}, "sample": []})

    with speaking(app, "ja"):
        japanese = formatting.changes_summary(run) + formatting.changes_summary(nothing)
    with speaking(app, "en"):
        english = formatting.changes_summary(run) + summary(nothing.changes)

    assert japanese == [
        "posts の 12,345 行を更新予定：slug, title",
        "posts から 1 行を削除予定",
        "tags に 2 行を挿入予定",
        "データベースは何も変更されません",
    ]
    assert english == [
        "Would update 12,345 rows of posts: slug, title",
        "Would delete 1 row of posts",
        "Would insert 2 rows of tags",
        "Would change nothing in the database",
    ]


def test_step_lines(app: Flask) -> None:
    published = [
        {"step": "re-indexing", "step_number": 2, "step_total": 3},
        {"step": "re-indexing", "step_number": 2},
        {"step": "re-indexing"},
    ]
    with speaking(app, "ja"):
        japanese = [step_line(p) for p in published]
    with speaking(app, "en"):
        english = [step_line(p) for p in published]

    assert japanese == [
        "ステップ 2/3：re-indexing",
        "ステップ 2：re-indexing",
        "ステップ：re-indexing",
    ]
    assert english == ["Step 2 of 3: re-indexing", "Step 2: re-indexing", "Step: re-indexing"]


def test_the_json_of_a_run_stays_english_when_forced(app: Flask, db: t.Any) -> None:
    run = stored(db, "running", tick_count=4000, tick_total=7000, time_running=10.0)
    with speaking(app, "ja"), i18n.english():
        data = formatting.run_as_dict(app, run)
    assert data["progress"] == "Processed 4,000 out of 7,000 items (57%)."
    assert data["status_text"].startswith("Running for 10s;")
