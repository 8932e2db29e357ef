"""How runs read to people: progress, durations, ETA, status lines and masking."""

from __future__ import annotations

import typing as t
from datetime import datetime, timedelta, timezone

import pydantic
import pytest

from flask_maintenance_tasks import Run, Task
from flask_maintenance_tasks.formatting import (
    ago,
    duration,
    eta_seconds,
    percent,
    progress_text,
    run_as_dict,
    status_text,
    throughput,
)
from flask_maintenance_tasks.masking import (
    is_secret_parameter,
    mask,
    masked_arguments,
    secret_arguments,
)
from tests.support.apps import FAST
from tests.testapp.maintenance.kinds import ParamsTask

DEFAULT_MASKS = ("password", "secret", "token")
NOW = datetime(2024, 6, 1, 12, 0, tzinfo=timezone.utc)


def make_run(**fields: t.Any) -> Run:
    values: dict[str, t.Any] = {
        "task_name": "ListTask",
        "status": "running",
        "tick_count": 0,
        "tick_total": None,
        "time_running": 0.0,
    }
    return Run(**{**values, **fields})


# -- progress ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "total", "text"),
    [
        (4000, 7000, "Processed 4,000 out of 7,000 items (57%)."),
        (0, 5, "Processed 0 out of 5 items (0%)."),
        (999, 1000, "Processed 999 out of 1,000 items (99%)."),
        (1, 3, "Processed 1 out of 3 items (33%)."),
        (1, 1, "Processed 1 out of 1 item (100%)."),
        (1_234_567, 1_234_567, "Processed 1,234,567 out of 1,234,567 items (100%)."),
    ],
)
def test_progress_with_a_known_total(count: int, total: int, text: str) -> None:
    assert progress_text(count, total) == text


@pytest.mark.parametrize(
    ("count", "total", "text"),
    [
        (0, None, "Processed 0 items."),
        (1, None, "Processed 1 item."),
        (2500, None, "Processed 2,500 items."),
        (3, 0, "Processed 3 items."),
    ],
)
def test_progress_with_an_unknown_total_only_counts(
    count: int, total: int | None, text: str
) -> None:
    assert progress_text(count, total) == text


def test_progress_past_the_expected_total_says_so() -> None:
    assert progress_text(12_000, 10_000) == "Processed 12,000 items (expected 10,000)."


@pytest.mark.parametrize(
    ("count", "total", "expected"),
    [(4000, 7000, 57.1), (1, 3, 33.3), (9999, 10000, 99.9), (10, 10, 100.0), (0, 10, 0.0)],
)
def test_percent_is_rounded_down_like_the_progress_text(
    count: int, total: int, expected: float
) -> None:
    assert percent(make_run(tick_count=count, tick_total=total)) == expected


def test_percent_is_unknown_without_a_total_until_the_run_succeeds() -> None:
    assert percent(make_run(tick_count=5)) is None
    assert percent(make_run(tick_count=12, tick_total=10)) is None
    assert percent(make_run(status="succeeded", tick_count=5)) == 100.0


# -- durations and ETA ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0, "0s"),
        (4.4, "4s"),
        (59.4, "59s"),
        (59.6, "1m 00s"),
        (200, "3m 20s"),
        (3605, "1h 00m"),
        (7500, "2h 05m"),
        (3 * 86400 + 4 * 3600 + 59, "3d 4h"),
        (-3, "0s"),
    ],
)
def test_duration_is_short_and_human(seconds: float | None, text: str) -> None:
    assert duration(seconds) == text


def test_ago_tells_how_long_ago_a_moment_was() -> None:
    assert ago(NOW - timedelta(minutes=5), NOW) == "5m 00s ago"
    assert ago(None, NOW) == "-"


def test_throughput_is_items_per_second_of_running_time() -> None:
    assert throughput(make_run(tick_count=40, time_running=20.0)) == 2.0
    assert throughput(make_run(tick_count=0, time_running=20.0)) is None
    assert throughput(make_run(tick_count=40, time_running=0.0)) is None


def test_eta_is_what_is_left_at_the_average_rate() -> None:
    run = make_run(tick_count=40, tick_total=100, time_running=20.0)

    assert eta_seconds(run) == 30.0


def test_eta_of_a_capped_run_is_at_the_cap_when_that_is_slower() -> None:
    slower = make_run(tick_count=40, tick_total=100, time_running=20.0, max_rate=0.5)
    faster = make_run(tick_count=40, tick_total=100, time_running=20.0, max_rate=50.0)

    assert eta_seconds(slower) == 120.0
    assert eta_seconds(faster) == 30.0


@pytest.mark.parametrize(
    "fields",
    [
        {"tick_count": 0, "tick_total": 100, "time_running": 20.0},
        {"tick_count": 40, "tick_total": None, "time_running": 20.0},
        {"tick_count": 40, "tick_total": 0, "time_running": 20.0},
        {"tick_count": 40, "tick_total": 100, "time_running": 0.0},
        {"tick_count": 100, "tick_total": 100, "time_running": 20.0},
        {"tick_count": 40, "tick_total": 100, "time_running": 20.0, "status": "succeeded"},
        {"tick_count": 40, "tick_total": 100, "time_running": 20.0, "status": "cancelled"},
        {"tick_count": 40, "tick_total": 100, "time_running": 20.0, "status": "errored"},
    ],
)
def test_eta_is_unknown_when_it_cannot_be_told(fields: dict[str, t.Any]) -> None:
    assert eta_seconds(make_run(**fields)) is None


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        ({"status": "enqueued"}, "Waiting to start."),
        (
            {"tick_count": 40, "tick_total": 100, "time_running": 20.0},
            "Running for 20s; about 30s remaining.",
        ),
        ({"tick_count": 40, "time_running": 20.0}, "Running for 20s."),
        ({"status": "pausing"}, "Pausing at the next item..."),
        (
            {"status": "paused", "tick_count": 4000, "tick_total": 7000, "time_running": 200.0},
            "Ran for 3m 20s until paused; Processed 4,000 out of 7,000 items (57%).",
        ),
        (
            {"status": "interrupted", "interruption_reason": "time_slice"},
            "Interrupted (time slice); resuming shortly.",
        ),
        ({"status": "interrupted"}, "Interrupted; resuming shortly."),
        ({"status": "cancelling"}, "Cancelling at the next item..."),
        (
            {"status": "cancelled", "time_running": 5.0, "ended_at": NOW - timedelta(seconds=90)},
            "Ran for 5s; cancelled 1m 30s ago.",
        ),
        (
            {"status": "succeeded", "time_running": 100.0, "ended_at": NOW - timedelta(hours=2)},
            "Ran for 1m 40s; finished 2h 00m ago.",
        ),
        (
            {"status": "errored", "time_running": 1.0, "ended_at": NOW - timedelta(seconds=3)},
            "Ran for 1s until an error 3s ago.",
        ),
    ],
)
def test_status_text_says_where_the_run_stands(fields: dict[str, t.Any], text: str) -> None:
    assert status_text(make_run(**fields), NOW) == text


# -- masking ---------------------------------------------------------------------------


class Login(pydantic.BaseModel):
    user: str
    pin: pydantic.SecretStr


class NestedSecretsTask(Task):
    masked_parameters = ("IBAN",)

    class Parameters(pydantic.BaseModel):
        title: str = ""
        login: Login | None = None
        logins: list[Login] = []
        by_name: dict[str, Login] = {}
        options: dict[str, str] = {}
        iban_number: str = ""


def test_names_containing_a_masked_name_in_any_case_are_masked() -> None:
    arguments = {"API_TOKEN": "a", "Password2": "b", "my_secret_key": "c", "title": "d", "n": 1}

    assert mask(arguments, None, DEFAULT_MASKS) == {
        "API_TOKEN": "[FILTERED]",
        "Password2": "[FILTERED]",
        "my_secret_key": "[FILTERED]",
        "title": "d",
        "n": 1,
    }


def test_secret_fields_are_masked_whatever_their_name() -> None:
    arguments = {"content": "x", "api_token": "s3cret", "password": "hunter2", "limit": 3}

    assert mask(arguments, ParamsTask, ()) == {
        "content": "x",
        "api_token": "[FILTERED]",
        "password": "hunter2",
        "limit": 3,
    }


def test_masked_names_of_the_app_and_of_the_task_add_up() -> None:
    arguments = {"title": "t", "iban_number": "DE00", "ssn": "123", "options": {}}

    assert mask(arguments, NestedSecretsTask, ("SSN",)) == {
        "title": "t",
        "iban_number": "[FILTERED]",
        "ssn": "[FILTERED]",
        "options": {},
    }


def test_secrets_inside_nested_models_lists_and_dicts_are_masked() -> None:
    arguments = {
        "login": {"user": "ann", "pin": "1111"},
        "logins": [{"user": "bob", "pin": "2222"}, {"user": "cy", "pin": "3333"}],
        "by_name": {"dee": {"user": "dee", "pin": "4444"}},
        "options": {"db_password": "hunter2", "colour": "red"},
    }

    assert mask(arguments, NestedSecretsTask, DEFAULT_MASKS) == {
        "login": {"user": "ann", "pin": "[FILTERED]"},
        "logins": [{"user": "bob", "pin": "[FILTERED]"}, {"user": "cy", "pin": "[FILTERED]"}],
        "by_name": {"dee": {"user": "dee", "pin": "[FILTERED]"}},
        "options": {"db_password": "[FILTERED]", "colour": "red"},
    }


def test_masking_leaves_the_arguments_it_was_given_untouched() -> None:
    arguments = {"login": {"user": "ann", "pin": "1111"}, "token": "t"}

    mask(arguments, NestedSecretsTask, DEFAULT_MASKS)

    assert arguments == {"login": {"user": "ann", "pin": "1111"}, "token": "t"}


def test_the_arguments_holding_a_secret_at_any_depth_are_the_ones_masking_changes() -> None:
    arguments = {
        "title": "t",
        "login": {"user": "ann", "pin": "1111"},
        "logins": [],
        "options": {"deep": [{"Api_Token": "x"}]},
        "by_name": {"dee": {"user": "dee", "pin": "4444"}},
        "extra": [{"password": "p"}],
    }

    held = secret_arguments(arguments, NestedSecretsTask, DEFAULT_MASKS)

    changed = {
        name
        for name, value in mask(arguments, NestedSecretsTask, DEFAULT_MASKS).items()
        if value != arguments[name]
    }
    assert held == changed == {"login", "options", "by_name", "extra"}
    assert secret_arguments(None, NestedSecretsTask, DEFAULT_MASKS) == frozenset()


def test_a_parameter_is_secret_when_its_name_is_masked_or_its_type_holds_a_secret() -> None:
    secret = {
        name: is_secret_parameter(name, NestedSecretsTask, DEFAULT_MASKS)
        for name in ("title", "login", "logins", "by_name", "options", "iban_number")
    }

    assert secret == {
        "title": False,
        "login": True,
        "logins": True,
        "by_name": True,
        "options": False,  # a dict of text: only some values may be secret
        "iban_number": True,  # the task's own masked_parameters
    }


def test_arguments_that_are_not_a_mapping_are_returned_as_they_are() -> None:
    assert mask(None, ParamsTask, DEFAULT_MASKS) is None


@pytest.mark.parametrize("settings", [{**FAST, "masked_parameters": ["Content"]}])
def test_masked_arguments_use_the_apps_masked_names_and_the_tasks_secrets(app: t.Any) -> None:
    arguments = {"content": "x", "api_token": "s3cret", "password": "hunter2"}

    assert masked_arguments(app, "ParamsTask", arguments) == {
        "content": "[FILTERED]",
        "api_token": "[FILTERED]",
        "password": "hunter2",
    }
    assert masked_arguments(app, "GoneTask", arguments) == {
        "content": "[FILTERED]",
        "api_token": "s3cret",
        "password": "hunter2",
    }


def test_run_as_json_masks_its_arguments(app: t.Any, mtasks: t.Any) -> None:
    run = mtasks.run("ParamsTask", arguments={"content": "x", "api_token": "t", "password": "p"})

    data = run_as_dict(app, mtasks.get_run(run.id), NOW)

    assert (data["arguments"]["api_token"], data["arguments"]["password"]) == (
        "[FILTERED]",
        "[FILTERED]",
    )
    assert data["arguments"]["content"] == "x"
    assert (data["status"], data["progress"], data["status_text"]) == (
        "enqueued",
        "Processed 0 items.",
        "Waiting to start.",
    )
