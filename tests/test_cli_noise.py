"""What ``flask mtasks`` prints besides its answer: start-up warnings once, where they help."""

from __future__ import annotations

import os
import time

import pytest
from flask import Flask

from tests.support import ROOT
from tests.support.processes import run_flask
from tests.support.records import fresh_run


def _flask(app_env: dict[str, str], *args: str, **env: str):
    environment = {**os.environ, **app_env, **env}
    return run_flask(["--app", "tests.testapp:create_app", *args], env=environment, cwd=ROOT)


def test_a_command_prints_no_start_up_warnings(app: Flask, app_env: dict[str, str]) -> None:
    """Without a Redis URL, and with a dashboard opened by TESTING: the server's warnings."""
    result = _flask(app_env, "mtasks", "list", MTASKS_TEST_REDIS_URL="")
    assert result.returncode == 0, result.stderr
    assert "ListTask" in result.stdout
    assert result.stderr == ""


def test_the_worker_without_a_redis_url_says_where_the_url_is_read(
    app: Flask, app_env: dict[str, str]
) -> None:
    result = _flask(app_env, "mtasks", "worker", "--burst", MTASKS_TEST_REDIS_URL="")
    assert result.returncode == 1
    assert 'app.config["MAINTENANCE_TASKS_REDIS_URL"]' in result.stderr
    assert "app.config.from_prefixed_env()" in result.stderr


@pytest.mark.parametrize("settings", [{"stuck_after": 0.5}], indirect=False)
def test_recover_prints_each_recovery_once(
    app: Flask, app_env: dict[str, str], mtasks, settings
) -> None:
    run = mtasks.run("OnceTask")  # enqueued in Redis, and nobody works on it
    app.extensions["maintenance_tasks"].executor.queue().empty()  # its job is lost
    time.sleep(0.6)  # past the stuck limit
    assert fresh_run(run.id).status == "enqueued"
    result = _flask(app_env, "mtasks", "recover")
    assert result.returncode == 0, result.stderr
    line = f"Run #{run.id} (OnceTask) had no live job: handed to a new job."
    assert (result.stdout + result.stderr).count(line) == 1, (result.stdout, result.stderr)
