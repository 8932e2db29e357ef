"""What a task publishes with ``self.status``: kept with its ticks, shown everywhere, bounded."""

from __future__ import annotations

import json
import typing as t

import pytest

from flask_maintenance_tasks import InvalidStatus, Task
from flask_maintenance_tasks.exceptions import ConfigurationError
from flask_maintenance_tasks.published import TaskStatus, step_line
from flask_maintenance_tasks.testing import run_task, run_task_interrupted
from tests.support.dashboard import Dashboard, text
from tests.support.records import counters, seed_items
from tests.testapp.maintenance.publishing import SECRET


@pytest.mark.both_databases
def test_a_published_mapping_is_kept_on_the_run(app):
    seed_items(7)
    run = run_task("PublishingTask")
    assert run.status == "succeeded"
    assert run.published["count"] == 7
    assert run.published["result"] == "counted 7"
    assert run.published["step"] == "reporting"
    assert step_line(run.published) == "Step 2 of 2: reporting"


@pytest.mark.both_databases
def test_a_count_in_the_status_is_exact_across_slices(app):
    seed_items(20)
    run = run_task_interrupted("PublishingTask")
    assert run.published["count"] == 20
    assert counters() == [1] * 20


@pytest.mark.both_databases
@pytest.mark.parametrize("bad, key", [("set", "tags"), ("datetime", "seen_at"), ("big", "blob")])
def test_a_value_that_cannot_be_kept_errors_the_run_naming_its_key(app, bad, key):
    seed_items(5)
    run = run_task("PublishingTask", {"bad": bad})
    assert run.status == "errored"
    assert run.error_class == "InvalidStatus"
    assert repr(key) in run.error_message
    # What the undone tick published went with it.
    assert run.published is None or run.published.get("count", 0) <= 2


def test_values_are_checked_before_any_is_kept():
    status = TaskStatus(max_bytes=100)
    status.update(a=1)
    with pytest.raises(InvalidStatus, match="'b'") as caught:
        status.update(a=2, b=object())
    assert caught.value.key == "b"
    assert dict(status) == {"a": 1}
    with pytest.raises(InvalidStatus, match="past its limit of 100"):
        status["c"] = "y" * 200
    with pytest.raises(InvalidStatus, match="not a string"):
        status.update({1: "x"})
    with pytest.raises(InvalidStatus, match="finite"):
        status["f"] = float("nan")


def test_the_size_counted_is_the_compact_json_of_the_mapping():
    status = TaskStatus(max_bytes=10_000)
    status.update(a=[1, 2, (3, "é")], b={"c": None}, d=True)
    expected = json.dumps(dict(status), ensure_ascii=False, separators=(",", ":"))
    assert status.as_dict() == {"a": [1, 2, [3, "é"]], "b": {"c": None}, "d": True}
    limit = len(expected.encode())
    exact = TaskStatus(max_bytes=limit)
    exact.update(status)
    with pytest.raises(InvalidStatus):
        TaskStatus(max_bytes=limit - 1).update(status)


def test_steps_are_numbered_when_they_change():
    status = TaskStatus()
    status.update(step="loading", step_total=3)
    status.update(step="loading")
    status["step"] = "re-indexing"
    assert step_line(dict(status)) == "Step 2 of 3: re-indexing"
    status.update(step="checking", step_number=3)
    assert step_line(dict(status)) == "Step 3 of 3: checking"
    assert step_line({"count": 1}) is None


def test_a_task_outside_a_run_publishes_into_its_own_mapping():
    class Plain(Task):
        collection = [1]

        def process(self, n: int) -> None:
            self.status.update(now=True, seen=n)

    task = Plain()
    task.process(5)
    assert task.status["seen"] == 5


def test_the_queue_must_be_a_name():
    with pytest.raises(ConfigurationError, match="queue must be a non-empty string"):

        class Bad(Task):
            queue = ""
            collection = [1]


def test_masked_keys_are_not_shown_in_clear(app):
    seed_items(3)
    run = run_task("PublishingTask")
    assert run.published["api_token"] == SECRET  # stored as published, masked when shown
    body = Dashboard(app).get(f"/runs/{run.id}.json").get_data(as_text=True)
    assert SECRET not in body
    assert json.loads(body)["published"]["api_token"] == "[FILTERED]"


@pytest.mark.both_databases
def test_now_writes_only_the_keys_it_gives_at_once(app):
    """Written apart from the tick: what the undone tick counted is not written with it."""
    seed_items(5)
    run = run_task("PublishingTask", {"now_at": 2, "fail_at": 3})
    assert run.status == "errored"
    assert run.tick_count == 0  # items 1 to 3 were one tick, undone
    assert run.published["marked"] == 2
    assert run.published["count"] == 0  # as after_start committed it, not 2
    assert run.published["step"] == "counting"


def test_flask_mtasks_list_and_the_task_page_show_a_task_of_its_own_queue(app, cli):
    listed = cli("list").output
    [line] = [line for line in listed.splitlines() if line.startswith("SlowQueueTask ")]
    assert line.endswith("(queue slow)")
    [other] = [line for line in listed.splitlines() if line.startswith("PublishingTask ")]
    assert "queue" not in other
    page = text(Dashboard(app).get("/tasks/SlowQueueTask"))
    assert "--queue slow" in page


@pytest.mark.both_databases
def test_each_partition_keeps_its_own_mapping_and_the_run_its_callbacks(app):
    seed_items(30)
    run = run_task("PublishingTask", partitions=3)
    assert run.status == "succeeded"
    data = json.loads(text(Dashboard(app).get(f"/runs/{run.id}.json")))
    parts = [part["published"] for part in data["partitions"]]
    # Each partition counted its own range; the run kept what its callbacks published.
    assert sum(part["count"] for part in parts) == 30
    assert all(part["api_token"] == "[FILTERED]" for part in parts)
    assert data["published"]["step"] == "reporting"
    assert data["step"] == "Step 2 of 2: reporting"


@pytest.mark.both_databases
def test_a_dry_run_keeps_what_it_publishes_now_or_with_its_ticks(app):
    seed_items(5)
    run = run_task("PublishingTask", {"now_at": 2}, dry_run=True)
    assert run.status == "succeeded"
    assert run.published["marked"] == 2
    assert run.published["result"] == "counted 5"
    assert counters() == [0] * 5  # its changes were rolled back, its status kept


def test_signal_payloads_carry_the_published_status_masked(app):
    from flask_maintenance_tasks import signals

    received: list[dict[str, t.Any]] = []

    def receive(sender: t.Any, run: t.Any, payload: dict[str, t.Any]) -> None:
        received.append(payload)

    seed_items(3)
    with signals.run_succeeded.connected_to(receive, sender=app):
        run_task("PublishingTask")
    [payload] = received
    assert payload["published"]["count"] == 3
    assert payload["published"]["api_token"] == "[FILTERED]"
    assert SECRET not in json.dumps(payload, default=str)
