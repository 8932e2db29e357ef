"""Signals sent when a run changes status: who gets them, with what, and what if they fail."""

from __future__ import annotations

import contextlib
import logging
import typing as t

import pytest
from blinker import NamedSignal
from flask import Flask

from flask_maintenance_tasks import signals
from flask_maintenance_tasks.transitions import SIGNAL_OF
from tests.support.apps import FAST
from tests.support.records import fresh_run, seed_items
from tests.support.workers import drain

ALL = [
    signals.run_enqueued,
    signals.run_started,
    signals.run_paused,
    signals.run_interrupted,
    signals.run_cancelled,
    signals.run_succeeded,
    signals.run_errored,
]
PAYLOAD_KEYS = {
    "task_name",
    "run_id",
    "job_id",
    "arguments",
    "metadata",
    "published",
    "time_running",
    "started_at",
    "ended_at",
}


class Received(t.NamedTuple):
    signal: str
    sender: t.Any
    run: t.Any
    payload: dict[str, t.Any]


@contextlib.contextmanager
def receiving(sender: t.Any, *which: NamedSignal) -> t.Iterator[list[Received]]:
    """Record what the given signals (default: all) send for ``sender``."""
    received: list[Received] = []
    with contextlib.ExitStack() as stack:
        for signal in which or ALL:

            def receiver(
                sender: t.Any, *, run: t.Any, payload: dict[str, t.Any], _name: str = signal.name
            ) -> None:
                received.append(Received(_name, sender, run, payload))

            stack.enter_context(signal.connected_to(receiver, sender=sender))
        yield received


def names(received: list[Received]) -> list[str]:
    return [r.signal for r in received]


def test_run_enqueued_is_sent_by_the_app_with_the_documented_payload(
    app: Flask, mtasks: t.Any
) -> None:
    with receiving(app) as received:
        run = mtasks.run("ListTask", metadata={"by": "ann@example.com"})

    [event] = received
    assert (event.signal, event.sender, event.run.id) == ("run-enqueued", app, run.id)
    assert event.payload == {
        "task_name": "ListTask",
        "run_id": run.id,
        "job_id": run.job_id,
        "arguments": {},
        "metadata": {"by": "ann@example.com"},
        "published": None,
        "time_running": 0.0,
        "started_at": None,
        "ended_at": None,
    }


def test_arguments_in_payloads_are_masked(app: Flask, mtasks: t.Any) -> None:
    with receiving(app) as received:
        run = mtasks.run(
            "ParamsTask", arguments={"content": "x", "api_token": "s3cret", "password": "hunter2"}
        )
        drain(app)

    assert names(received) == ["run-enqueued", "run-started", "run-succeeded"]
    for event in received:
        assert event.payload["arguments"]["api_token"] == "[FILTERED]"
        assert event.payload["arguments"]["password"] == "[FILTERED]"
        assert event.payload["arguments"]["content"] == "x"
    assert fresh_run(run.id).arguments["api_token"] == "s3cret"


@pytest.mark.both_databases  # the timings as each database stores them
def test_started_and_succeeded_carry_the_run_timings(app: Flask, mtasks: t.Any) -> None:
    seed_items(3)
    run = mtasks.run("CountItemsTask", metadata="cli")

    with receiving(app) as received:
        drain(app)

    started, succeeded = received
    assert (started.signal, succeeded.signal) == ("run-started", "run-succeeded")
    assert set(started.payload) == set(succeeded.payload) == PAYLOAD_KEYS
    assert started.payload["started_at"] is not None
    assert started.payload["ended_at"] is None
    ended = fresh_run(run.id)
    assert succeeded.payload["started_at"] == ended.started_at
    assert succeeded.payload["ended_at"] == ended.ended_at
    assert succeeded.payload["time_running"] == ended.time_running
    assert succeeded.payload["metadata"] == "cli"
    assert succeeded.run.status == "succeeded"


def test_run_errored_carries_the_error(app: Flask, mtasks: t.Any) -> None:
    seed_items(3)
    run = mtasks.run("CountItemsTask", arguments={"fail_on": "item-2"})

    with receiving(app, signals.run_errored) as received:
        drain(app)

    [event] = received
    error = event.payload["error"]
    assert (error["class"], error["message"]) == (
        "ValueError",
        "cannot process item 2: its title is 'item-2'",
    )
    assert any("counting.py" in frame for frame in error["backtrace"])
    assert event.payload["ended_at"] == fresh_run(run.id).ended_at


def test_run_paused_then_run_cancelled(app: Flask, mtasks: t.Any) -> None:
    seed_items(3)
    run = mtasks.run("CountItemsTask")
    mtasks.pause(run.id)

    with receiving(app) as received:
        drain(app)
        mtasks.cancel(run.id)

    assert names(received) == ["run-paused", "run-cancelled"]
    assert received[1].payload["ended_at"] == fresh_run(run.id).ended_at
    assert received[1].payload["ended_at"] is not None


def test_resume_sends_run_enqueued_again(app: Flask, mtasks: t.Any) -> None:
    run = mtasks.run("ListTask")
    mtasks.pause(run.id)
    drain(app)

    with receiving(app) as received:
        resumed = mtasks.resume(run.id)

    [event] = received
    assert event.signal == "run-enqueued"
    assert event.payload["job_id"] == resumed.job_id != run.job_id


@pytest.mark.parametrize("settings", [{**FAST, "max_job_runtime": 0.03}])
def test_run_interrupted_is_sent_when_a_slice_hands_the_run_on(app: Flask, mtasks: t.Any) -> None:
    seed_items(12)
    run = mtasks.run("CountItemsTask", arguments={"sleep": 0.01})

    with receiving(app, signals.run_interrupted, signals.run_started) as received:
        drain(app)

    assert names(received)[0] == "run-started"
    interruptions = received[1:]
    assert interruptions
    assert {event.signal for event in interruptions} == {"run-interrupted"}
    assert {event.run.id for event in interruptions} == {run.id}
    assert fresh_run(run.id).status == "succeeded"


def test_receivers_of_another_sender_get_nothing(app: Flask, mtasks: t.Any) -> None:
    with receiving(Flask("another_app")) as elsewhere, receiving(app) as here:
        mtasks.run("ListTask")

    assert (names(elsewhere), names(here)) == ([], ["run-enqueued"])


def test_failing_receiver_is_logged_and_the_run_goes_on(
    app: Flask, mtasks: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    seed_items(3)

    def broken(sender: t.Any, **kwargs: t.Any) -> None:
        raise RuntimeError("receiver bug")

    with (
        signals.run_enqueued.connected_to(broken, sender=app),
        signals.run_started.connected_to(broken, sender=app),
        signals.run_succeeded.connected_to(broken, sender=app),
        receiving(app) as received,
        caplog.at_level(logging.ERROR, logger="flask_maintenance_tasks"),
    ):
        run = mtasks.run("CountItemsTask")
        drain(app)

    assert names(received) == ["run-enqueued", "run-started", "run-succeeded"]
    assert fresh_run(run.id).status == "succeeded"
    failures = [r for r in caplog.records if "receiver" in r.getMessage()]
    assert [r.getMessage() for r in failures] == [
        f"A receiver of run-enqueued failed for run #{run.id}",
        f"A receiver of run-started failed for run #{run.id}",
        f"A receiver of run-succeeded failed for run #{run.id}",
    ]
    assert all(r.exc_info and str(r.exc_info[1]) == "receiver bug" for r in failures)


def test_each_status_maps_to_its_signal() -> None:
    assert SIGNAL_OF == {
        "enqueued": signals.run_enqueued,
        "running": signals.run_started,
        "paused": signals.run_paused,
        "interrupted": signals.run_interrupted,
        "cancelled": signals.run_cancelled,
        "succeeded": signals.run_succeeded,
        "errored": signals.run_errored,
    }
