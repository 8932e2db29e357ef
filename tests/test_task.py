"""The Task base class: parameters, secrets, throttles, names and callbacks."""

from __future__ import annotations

import datetime as dt
import json
import logging
import typing as t

import pydantic
import pytest
import sqlalchemy as sa

from flask_maintenance_tasks import (
    InvalidArguments,
    MaintenanceTasksError,
    Run,
    Task,
    no_collection,
    throttle_on,
)
from tests.support.records import counters, fresh_run, seed_items
from tests.support.workers import drain
from tests.testapp import Flag
from tests.testapp.maintenance import kinds
from tests.testapp.maintenance.kinds import ParamsTask

# -- parameters --------------------------------------------------------------------


def test_keyword_arguments_are_validated_into_params() -> None:
    task = ParamsTask(content="x", limit="5", since="2024-01-02")

    assert task.params.content == "x"
    assert task.params.limit == 5
    assert task.params.since == dt.date(2024, 1, 2)
    assert task.params.mode == "careful"


def test_task_without_parameters_has_none() -> None:
    assert kinds.ListTask().params is None


def test_any_argument_to_a_task_without_parameters_is_invalid() -> None:
    with pytest.raises(InvalidArguments) as caught:
        kinds.ListTask(limit=3, dry_run=True)

    assert caught.value.task_name == "ListTask"
    assert caught.value.errors == {
        "__root__": ["ListTask takes no parameters (got dry_run, limit)"]
    }


def test_unknown_argument_names_are_each_reported() -> None:
    with pytest.raises(InvalidArguments) as caught:
        ParamsTask(content="x", colour_name="red", Limit=3)

    assert caught.value.errors == {
        "Limit": ["unknown parameter"],
        "colour_name": ["unknown parameter"],
    }
    assert str(caught.value) == (
        "Invalid arguments for ParamsTask: Limit: unknown parameter; colour_name: unknown parameter"
    )


def test_invalid_values_are_reported_by_field() -> None:
    with pytest.raises(InvalidArguments) as caught:
        ParamsTask(content="", mode="reckless", limit="many", ids=[1, "two"])

    errors = caught.value.errors
    assert sorted(errors) == ["content", "ids.1", "limit", "mode"]
    assert errors["content"] == ["String should have at least 1 character"]
    assert errors["mode"] == ["Input should be 'fast' or 'careful'"]
    assert "content: String should have at least 1 character" in str(caught.value)


def test_missing_required_parameter_is_reported() -> None:
    with pytest.raises(InvalidArguments) as caught:
        ParamsTask()

    assert caught.value.errors == {"content": ["Field required"]}


def test_invalid_arguments_is_a_maintenance_tasks_error_and_a_value_error() -> None:
    with pytest.raises(MaintenanceTasksError):
        ParamsTask(content="")
    with pytest.raises(ValueError):
        ParamsTask(content="")


def test_run_with_invalid_arguments_raises_and_writes_no_run(
    app: t.Any, mtasks: t.Any, db: t.Any
) -> None:
    with pytest.raises(InvalidArguments) as caught:
        mtasks.run("ParamsTask", arguments={"content": "x", "limit": "many"})

    assert list(caught.value.errors) == ["limit"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Run)) == 0


def test_run_stores_validated_arguments_with_defaults_as_json(app: t.Any, mtasks: t.Any) -> None:
    run = mtasks.run(
        "ParamsTask",
        arguments={"content": "x", "limit": "7", "since": "2024-01-02", "api_token": "s3cret"},
    )

    assert fresh_run(run.id).arguments == {
        "content": "x",
        "mode": "careful",
        "limit": 7,
        "ids": [],
        "enabled": False,
        "colour": "red",
        "since": "2024-01-02",
        "api_token": "s3cret",
        "password": None,
    }


def test_dumped_arguments_are_json_and_validate_back_to_the_same_params() -> None:
    params = ParamsTask.validate_arguments(
        {"content": "x", "ids": {3, 1}, "colour": "blue", "api_token": "s3cret"}
    )

    dumped = ParamsTask.dump_arguments(params)

    assert json.loads(json.dumps(dumped)) == dumped
    assert ParamsTask(**dumped).params == params


def test_task_without_parameters_dumps_no_arguments() -> None:
    assert kinds.ListTask.dump_arguments(None) == {}


# -- secrets -----------------------------------------------------------------------


class Login(pydantic.BaseModel):
    user: str
    pin: pydantic.SecretStr


class SecretsTask(Task):
    class Parameters(pydantic.BaseModel):
        plain: str = ""
        token: pydantic.SecretStr | None = None
        key: t.Annotated[pydantic.SecretBytes, pydantic.Field(min_length=1)] = b"k"
        keys: list[pydantic.SecretStr] = []
        login: Login | None = None
        logins: list[Login] = []
        by_name: dict[str, Login] = {}
        secret_by_name: dict[str, pydantic.SecretStr] = {}


def test_secret_parameters_are_the_secret_typed_fields() -> None:
    assert SecretsTask.secret_parameters() == {"token", "key", "keys", "secret_by_name"}
    assert ParamsTask.secret_parameters() == {"api_token"}


def test_secret_fields_map_secrets_inside_nested_models() -> None:
    assert SecretsTask.secret_fields() == {
        "token": True,
        "key": True,
        "keys": True,
        "login": {"pin": True},
        "logins": {"pin": True},
        "by_name": {"*": {"pin": True}},
        "secret_by_name": True,
    }


def test_task_without_parameters_has_no_secrets() -> None:
    assert kinds.ListTask.secret_parameters() == frozenset()
    assert kinds.ListTask.secret_fields() == {}


def test_secrets_are_stored_in_clear_for_the_task_to_use() -> None:
    params = SecretsTask.validate_arguments({"token": "t0k", "login": {"user": "u", "pin": "1"}})

    dumped = SecretsTask.dump_arguments(params)

    assert dumped["token"] == "t0k"
    assert dumped["key"] == "k"
    assert dumped["login"] == {"user": "u", "pin": "1"}
    assert SecretsTask(**dumped).params.token.get_secret_value() == "t0k"


# -- throttles ---------------------------------------------------------------------


class BusyTask(Task):
    collection = no_collection()

    @throttle_on()
    def busy(self) -> bool:
        return False

    @throttle_on(backoff=dt.timedelta(minutes=2))
    def lagging(self) -> bool:
        return False


class BusierTask(BusyTask):
    @throttle_on(backoff=lambda: 5)
    def overloaded(self) -> bool:
        return True

    @throttle_on(backoff=1.5)
    def lagging(self) -> bool:
        return True


def test_throttle_conditions_are_collected_with_their_backoff_in_seconds() -> None:
    assert [(th.method_name, th.backoff_seconds()) for th in BusyTask().throttles] == [
        ("busy", 30.0),
        ("lagging", 120.0),
    ]


def test_subclass_throttles_add_to_inherited_ones_and_override_by_method_name() -> None:
    assert [(th.method_name, th.backoff_seconds()) for th in BusierTask().throttles] == [
        ("busy", 30.0),
        ("lagging", 1.5),
        ("overloaded", 5.0),
    ]
    assert [th.method_name for th in BusyTask().throttles] == ["busy", "lagging"]


def test_callable_backoff_is_asked_each_time_and_never_negative() -> None:
    answers = iter([dt.timedelta(seconds=90), -4])

    class MoodyTask(BusyTask):
        @throttle_on(backoff=lambda: next(answers))
        def moody(self) -> bool:
            return True

    moody = MoodyTask().throttles[-1]
    assert [moody.backoff_seconds(), moody.backoff_seconds()] == [90.0, 0.0]


def test_throttle_on_without_parentheses_fails_where_the_task_is_defined() -> None:
    with pytest.raises(TypeError, match=r"write @throttle_on\(\) or @throttle_on\(backoff=...\)"):

        class ForgetfulTask(Task):
            @throttle_on  # type: ignore[arg-type]
            def busy(self) -> bool:
                return True


@pytest.mark.parametrize("backoff", ["60", None, True, [1]])
def test_throttle_backoff_of_the_wrong_type_is_rejected(backoff: t.Any) -> None:
    with pytest.raises(TypeError, match="the backoff must be seconds, a timedelta, or a callable"):
        throttle_on(backoff=backoff)


@pytest.mark.parametrize("backoff", [-1, -0.5, dt.timedelta(seconds=-1)])
def test_negative_throttle_backoff_is_rejected(backoff: t.Any) -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        throttle_on(backoff=backoff)


def test_throttle_condition_true_when_a_slice_starts_interrupts_the_run(
    app: t.Any, mtasks: t.Any, db: t.Any
) -> None:
    seed_items(3)
    db.session.add(Flag(name="busy", value="yes"))
    db.session.commit()

    run = mtasks.run("ThrottledCountTask")
    drain(app)

    run = fresh_run(run.id)
    assert (run.status, run.interruption_reason, run.error_class) == (
        "interrupted",
        "throttle",
        None,
    )
    assert counters() == [0, 0, 0]


# -- names and defaults ------------------------------------------------------------


def test_task_name_is_the_class_name_unless_set() -> None:
    class PlainTask(Task):
        pass

    class NamedTask(Task):
        name = "billing.Named"

    class NamedChildTask(NamedTask):
        pass

    assert (PlainTask.name, NamedTask.name, NamedChildTask.name) == (
        "PlainTask",
        "billing.Named",
        "NamedChildTask",
    )


def test_task_class_defaults() -> None:
    class PlainTask(Task):
        pass

    assert PlainTask.batch_size == 100
    assert PlainTask.cursor_columns is None
    assert PlainTask.report_on == ()
    assert PlainTask.status_reload_frequency is None
    assert PlainTask.allow_concurrent_runs is False
    assert PlainTask().throttles == ()
    assert (PlainTask().run, PlainTask().metadata) == (None, None)


# -- callbacks ---------------------------------------------------------------------


def test_callbacks_do_nothing_by_default() -> None:
    task = kinds.ListTask()

    results = [
        task.after_start(),
        task.after_pause(),
        task.after_interrupt(),
        task.after_cancel(),
        task.after_complete(),
        task.after_error(RuntimeError("x")),
    ]

    assert results == [None] * 6


def test_process_must_be_implemented() -> None:
    class LazyTask(Task):
        collection = [1]

    with pytest.raises(NotImplementedError, match="LazyTask must implement process"):
        LazyTask().process(1)


def test_callbacks_run_around_processing_and_reported_errors_do_not_stop_it(
    app: t.Any, mtasks: t.Any
) -> None:
    run = mtasks.run("CallbacksTask")
    drain(app)

    run = fresh_run(run.id)
    assert (run.status, run.tick_count) == ("succeeded", 3)
    assert kinds.EVENTS == ["start", ("process", 1), ("process", 3), "complete"]


def test_failing_after_start_errors_the_run_before_any_item(app: t.Any, mtasks: t.Any) -> None:
    run = mtasks.run("UnitFailingStartTask")
    drain(app)

    run = fresh_run(run.id)
    assert (run.status, run.error_class, run.error_message) == (
        "errored",
        "RuntimeError",
        "after_start went wrong",
    )
    assert kinds.EVENTS == []


def test_failing_after_complete_errors_the_run(app: t.Any, mtasks: t.Any) -> None:
    run = mtasks.run("ExplodingCallbackTask")
    drain(app)

    run = fresh_run(run.id)
    assert (run.status, run.error_class) == ("errored", "RuntimeError")


def test_failing_after_error_is_logged_and_the_original_error_kept(
    app: t.Any, mtasks: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    run = mtasks.run("UnitFailingAfterErrorTask")
    with caplog.at_level(logging.ERROR, logger="flask_maintenance_tasks"):
        drain(app)

    run = fresh_run(run.id)
    assert (run.status, run.error_class, run.error_message) == (
        "errored",
        "ValueError",
        "cannot process 1",
    )
    assert kinds.EVENTS == [("after_error", "cannot process 1")]
    assert "UnitFailingAfterErrorTask.after_error failed" in caplog.text


def test_a_throttle_overridden_without_the_decorator_keeps_its_backoff_and_uses_the_override() -> (
    None
):
    class Busy(Task):
        collection = [1]

        @throttle_on(backoff=7)
        def busy(self) -> bool:
            return True

        def process(self, item: t.Any) -> None:
            pass

    class NeverBusy(Busy):
        def busy(self) -> bool:
            return False

    [throttle] = NeverBusy().throttles
    assert (throttle.method_name, throttle.backoff_seconds()) == ("busy", 7.0)
    assert throttle.condition(NeverBusy()) is False
    assert Busy().throttles[0].condition(Busy()) is True
