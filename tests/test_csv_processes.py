"""CSV runs across processes: the CLI's refusals, a run handed from one worker to another."""

from __future__ import annotations

import signal

import pytest

from tests.support.csv_files import items_csv, table_counts, write
from tests.support.records import counters, fresh_run
from tests.support.waiting import wait_until
from tests.support.workers import WorkerProcesses

BINARY = bytes(range(256)) * 8


@pytest.mark.parametrize(
    ("args", "content", "error"),
    [
        (["ImportItemsTask"], None, "Error: ImportItemsTask is a CSV task: give it a CSV file"),
        (["CountItemsTask", "--csv"], items_csv(2), "Error: CountItemsTask is not a CSV task"),
        (["ImportItemsTask", "--csv"], BINARY, "Error: bad.csv: This is not a CSV file"),
        (
            ["ImportItemsTask", "--csv", "missing.csv"],
            None,
            "Error: Invalid value for '--csv': File 'missing.csv' does not exist.",
        ),
    ],
    ids=["no file", "not a CSV task", "binary file", "missing path"],
)
def test_cli_refuses_bad_csv_input_with_one_error_line_and_writes_nothing(
    app, workers: WorkerProcesses, tmp_path, args, content, error
):
    if content is not None:
        args = [*args, str(write(tmp_path, "bad.csv", content))]
    result = workers.cli("run", *args)
    # A path that does not exist is a usage error (2); the others are errors of the input (1).
    assert result.returncode == (2 if error.startswith("Error: Invalid value") else 1)
    assert result.stderr.strip().splitlines()[-1].startswith(error)
    assert table_counts() == (0, 0, 0)


@pytest.mark.slow
@pytest.mark.both_databases  # two worker processes share the run and its stored file
def test_a_run_stopped_on_one_worker_resumes_mid_file_on_another(
    app, mtasks, workers: WorkerProcesses, tmp_path
):
    path = write(tmp_path, "items.csv", items_csv(300, pad=50))
    first = workers.start()
    run_id = mtasks.run("ImportItemsTask", {"sleep": 0.005}, csv_file=path).id
    wait_until(lambda: (fresh_run(run_id).cursor or {}).get("row", 0) > 50, 30, "progress")

    first.send_signal(signal.SIGTERM)
    assert first.wait(30) == 0
    stopped = fresh_run(run_id)
    assert stopped.status == "interrupted"
    assert stopped.interruption_reason == "worker_shutdown"
    assert 50 < stopped.cursor["row"] < 300

    second = workers.start()
    wait_until(lambda: fresh_run(run_id).status == "succeeded", 60, "the second worker")
    # The second process performed the slice the first one queued when it stopped.
    assert f"maintenance task run #{run_id} ({stopped.job_id})" in workers.log(second)
    run = fresh_run(run_id)
    assert run.tick_count == run.tick_total == 300
    assert counters() == [1] * 300
