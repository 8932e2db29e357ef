"""What our worker takes from RQ's internals: installed only by a worker, checked first.

``flask_maintenance_tasks._rq`` patches RQ's scheduler through a fork hook.
Importing the package (or its pytest plugin, which every test session of a
host app loads) must register nothing; a worker's start checks that RQ still
has each internal we rely on, and fails naming the one it lacks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import typing as t

import pytest
import rq
import rq.scheduler
from redis import Redis
from rq import Queue

from flask_maintenance_tasks._rq import check, rq_version
from flask_maintenance_tasks.exceptions import ConfigurationError
from flask_maintenance_tasks.worker import MaintenanceSimpleWorker, MaintenanceWorker
from tests.support import ROOT

# A fresh interpreter imports what a host app's test session imports, then forks the way
# a worker forks RQ's scheduler and reports what RQ looks like in the child; then again
# once a worker has run.
PROBE = textwrap.dedent(
    """
    import json, os, signal, sys, time, types

    import flask_maintenance_tasks
    import flask_maintenance_tasks.cli
    import flask_maintenance_tasks.testing
    import flask_maintenance_tasks.worker
    import rq.scheduler
    from redis import Redis

    from flask_maintenance_tasks import _rq

    hooks = []
    register_at_fork = os.register_at_fork
    def counting_register_at_fork(**kwargs):
        hooks.append(sorted(kwargs))
        register_at_fork(**kwargs)
    os.register_at_fork = counting_register_at_fork

    def scheduler_child():
        scheduler = rq.scheduler.RQScheduler(["probe"], connection=Redis())
        read, write = os.pipe()
        with _rq._scheduler_fork(types.SimpleNamespace(scheduler=scheduler)):
            pid = os.fork()
            if pid == 0:
                seen = {
                    "time_patched": rq.scheduler.time is not time,
                    "request_stop_wrapped": "request_stop" in vars(scheduler),
                    "stop_signals_blocked": signal.SIGTERM in signal.pthread_sigmask(
                        signal.SIG_BLOCK, []
                    ),
                }
                if seen["time_patched"]:
                    scheduler.request_stop()
                    started = time.monotonic()
                    rq.scheduler.time.sleep(30)
                    seen["slept"] = time.monotonic() - started
                os.write(write, json.dumps(seen).encode())
                os._exit(0)
        os.close(write)
        with os.fdopen(read) as pipe:
            seen = json.loads(pipe.read())
        os.waitpid(pid, 0)
        return seen

    report = {"after_import": {"installed": _rq.installed(), "child": scheduler_child()}}
    # A worker's start installs; a second install (or start) registers nothing more.
    from rq import Queue
    from flask_maintenance_tasks.worker import MaintenanceSimpleWorker
    connection = Redis.from_url(sys.argv[1])
    worker = MaintenanceSimpleWorker([Queue("probe", connection=connection)], connection=connection)
    worker.work(burst=True, logging_level="WARNING")
    installed_by_worker = _rq.installed()
    _rq.install()
    report["after_install"] = {
        "installed_by_worker": installed_by_worker,
        "installed": _rq.installed(),
        "hooks": hooks,
        "child": scheduler_child(),
        "time_untouched_here": rq.scheduler.time is time,
    }
    print(json.dumps(report))
    """
)


def _probe(redis_url: str) -> dict[str, t.Any]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, redis_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return t.cast(dict[str, t.Any], json.loads(result.stdout.splitlines()[-1]))


def test_importing_the_package_and_its_pytest_plugin_patches_nothing(redis_url):
    report = _probe(redis_url)

    after_import = report["after_import"]
    assert after_import["installed"] is False
    # A scheduler forked now would see RQ as RQ shipped it: no fork hook ran.
    assert after_import["child"]["time_patched"] is False
    assert after_import["child"]["request_stop_wrapped"] is False

    # The probe can tell: once a worker has started (and install() is called again), one
    # hook is registered and runs in the scheduler's child.
    after_install = report["after_install"]
    assert after_install["installed_by_worker"] is True
    assert after_install["installed"] is True
    assert after_install["hooks"] == [["after_in_child"]]
    child = after_install["child"]
    assert child["time_patched"] is True
    assert child["request_stop_wrapped"] is True
    assert child["stop_signals_blocked"] is False
    assert child["slept"] < 5, "a stop request should cut the scheduler's sleep short"
    assert after_install["time_untouched_here"] is True


def test_the_installed_rq_has_everything_the_worker_relies_on(redis_url):
    connection = Redis.from_url(redis_url)
    for worker_class in (MaintenanceWorker, MaintenanceSimpleWorker):
        worker = worker_class([Queue("compat", connection=connection)], connection=connection)
        check(worker)


@pytest.mark.parametrize("worker_class", [MaintenanceWorker, MaintenanceSimpleWorker])
def test_a_reply_left_on_a_pooled_connection_does_not_reach_the_farewell(redis_url, worker_class):
    # What a SIGTERM to an idle worker can leave behind: RQ raises the stop request from
    # its handler between a command sent and its reply read, and the connection goes back
    # to the pool with the reply still to come. A blocking pop that times out in 0.3 s is
    # such a command, its reply late enough to pass the pool's check for unread data.
    connection = Redis.from_url(redis_url)
    worker = worker_class([Queue("compat", connection=connection)], connection=connection)
    worker.register_birth()
    assert worker.key.encode() in connection.smembers("rq:workers")
    pool = connection.connection_pool
    pending = pool.get_connection()
    pending.send_command("BLPOP", "compat:nothing-here", 0.3)
    pool.release(pending)

    worker.teardown()

    # The farewell (RQ's register_death) went through: the worker left RQ's registry.
    assert worker.key.encode() not in connection.smembers("rq:workers")
    assert connection.ping() is True


def _owner(cls: type, name: str) -> type:
    """The class of ``cls``'s MRO that defines ``name`` (RQ moves methods between versions)."""
    return next(owner for owner in cls.__mro__ if name in vars(owner))


def _without_method(name: str) -> t.Callable[[pytest.MonkeyPatch], None]:
    return lambda monkeypatch: monkeypatch.delattr(_owner(rq.Worker, name), name)


def _maintenance_check_not_a_property(monkeypatch: pytest.MonkeyPatch) -> None:
    name = "should_run_maintenance_tasks"
    monkeypatch.setattr(_owner(rq.Worker, name), name, lambda self: True)


def _without_stop_requested(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(sys.modules[rq.worker.BaseWorker.__module__], "StopRequested")


@pytest.mark.parametrize("worker_class", [MaintenanceWorker, MaintenanceSimpleWorker])
@pytest.mark.parametrize(
    ("break_rq", "named"),
    [
        (_without_method("bootstrap"), "rq.Worker.bootstrap (a method)"),
        (_without_method("_start_scheduler"), "rq.Worker._start_scheduler (a method)"),
        (_without_method("request_stop"), "rq.Worker.request_stop (a method)"),
        (_without_method("teardown"), "rq.Worker.teardown (a method)"),
        (_without_method("unsubscribe"), "rq.Worker.unsubscribe (a method)"),
        (
            _without_method("setup_work_horse_signals"),
            "rq.Worker.setup_work_horse_signals (a method)",
        ),
        (_maintenance_check_not_a_property, "rq.Worker.should_run_maintenance_tasks (a property)"),
        (lambda monkeypatch: monkeypatch.delattr(rq.scheduler, "time"), "rq.scheduler.time"),
        (
            lambda monkeypatch: monkeypatch.delattr(rq.scheduler.RQScheduler, "request_stop"),
            "rq.scheduler.RQScheduler.request_stop (a method)",
        ),
        (_without_stop_requested, "StopRequested"),
    ],
    ids=[
        "bootstrap",
        "_start_scheduler",
        "request_stop",
        "teardown",
        "unsubscribe",
        "setup_work_horse_signals",
        "should_run_maintenance_tasks",
        "scheduler.time",
        "RQScheduler.request_stop",
        "StopRequested",
    ],
)
def test_a_worker_does_not_start_on_an_rq_without_what_it_relies_on(
    redis_url, monkeypatch, worker_class, break_rq, named
):
    connection = Redis.from_url(redis_url)
    worker = worker_class([Queue("compat", connection=connection)], connection=connection)
    break_rq(monkeypatch)

    with pytest.raises(ConfigurationError) as raised:
        worker.work(burst=True)

    message = str(raised.value)
    assert named in message
    assert f"RQ {rq.__version__} " in message
    assert "rq>=2.3,<3" in message
    # It failed before starting: no worker ever registered with RQ.
    assert rq.Worker.all(connection=connection) == []


def test_rq_version_is_the_imported_rqs():
    assert rq_version() == rq.__version__


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_flask_mtasks_worker_on_an_incompatible_rq_says_what_is_missing(app_env):
    # `flask mtasks worker`, in a process whose RQ lacks one method we override.
    breaks_rq_then_runs_flask = textwrap.dedent(
        """
        import sys
        import rq
        owner = next(c for c in rq.Worker.__mro__ if "unsubscribe" in vars(c))
        del owner.unsubscribe
        from flask.cli import main
        sys.argv[1:] = ["--app", "tests.testapp:create_app", "mtasks", "worker", "--burst"]
        main()
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", breaks_rq_then_runs_flask],
        cwd=ROOT,
        env={**os.environ, **app_env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("Error: The installed RQ ")
    assert "rq.Worker.unsubscribe (a method)" in last_line
    assert f"RQ {rq.__version__} " in last_line
    assert "rq>=2.3,<3" in last_line
