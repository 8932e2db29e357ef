"""RQ workers for the test app: in this process (``drain``) and as ``flask mtasks worker``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import typing as t
from pathlib import Path

from flask import Flask

from tests.support import ROOT
from tests.support.processes import FlaskProcess, run_flask
from tests.support.waiting import wait_until

#: ``flask`` options that load the test app.
APP = ["--app", "tests.testapp:create_app"]


def _quiet_worker_class() -> type:
    from flask_maintenance_tasks.worker import MaintenanceSimpleWorker

    class QuietWorker(MaintenanceSimpleWorker):
        """No pubsub listener: its thread takes a second to stop after each burst."""

        def subscribe(self) -> None:
            pass

        def unsubscribe(self) -> None:
            pass

    return QuietWorker


def drain(app: Flask, burst: bool = True) -> None:
    """Run every queued job in this process with a real RQ SimpleWorker."""
    executor = app.extensions["maintenance_tasks"].executor
    worker = _quiet_worker_class()([executor.queue()], connection=executor.connection)
    worker.work(burst=burst, with_scheduler=False)


def run_one_job(app: Flask) -> None:
    """Run the first queued job in this process with a real RQ SimpleWorker, and only it."""
    executor = app.extensions["maintenance_tasks"].executor
    worker = _quiet_worker_class()([executor.queue()], connection=executor.connection)
    worker.work(burst=True, max_jobs=1, with_scheduler=False)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(child) for child in path.read_text().split()]
    except FileNotFoundError:
        return []


#: Set while ``benchmarks/reliability.py`` measures how long recovery takes: a
#: new worker must then start as a deploy starts one, imports included.
RELIABILITY_REPORT = "MTASKS_RELIABILITY_REPORT"

Worker: t.TypeAlias = "FlaskProcess | subprocess.Popen[bytes]"


class WorkerProcesses:
    """``flask mtasks worker`` processes of the test app, killed at teardown."""

    def __init__(self, env: dict[str, str], directory: Path) -> None:
        self.env = {**os.environ, **env}
        self.directory = directory
        self.processes: list[Worker] = []
        #: Work horses seen: each leads a group of its own, outside its worker's.
        self.horses: set[int] = set()

    def start(self, *args: str) -> Worker:
        command = [*APP, "mtasks", "worker", *args]
        log = self.directory / f"worker-{len(self.processes)}.log"
        process: Worker
        if os.environ.get(RELIABILITY_REPORT):
            with open(log, "wb") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", "flask", *command],
                    cwd=ROOT,
                    env={**self.env, "PYTHONUNBUFFERED": "1"},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        else:
            process = FlaskProcess(command, env=self.env, cwd=ROOT, stdout=log)
        self.processes.append(process)
        return process

    def log(self, process: Worker) -> str:
        index = self.processes.index(process)
        return (self.directory / f"worker-{index}.log").read_text(errors="replace")

    def horse_pid(self, process: Worker, timeout: float = 20) -> int:
        """The pid of the worker's work horse: the child that leads its own process group.

        (The worker's other child, RQ's scheduler, stays in the worker's group.)
        """

        def horse() -> int | None:
            for pid in _children(process.pid):
                try:
                    stat = Path(f"/proc/{pid}/stat").read_text()
                except FileNotFoundError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[2]) == pid:
                    return pid
            return None

        pid = t.cast(int, wait_until(horse, timeout, "a work horse"))
        self.horses.add(pid)
        return pid

    def cli(
        self, *args: str, input: bytes | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run ``flask mtasks ARGS`` against the test app in a process of its own."""
        return run_flask(
            [*APP, "mtasks", *args],
            env=self.env,
            cwd=ROOT,
            input=input.decode() if input else None,
            timeout=timeout,
        )

    def stop_all(self) -> None:
        """Kill every worker, its work horse and its scheduler, dead worker or not.

        A worker killed by its test leaves its scheduler behind, still writing
        to Redis; it is in the worker's process group, which outlives it.
        """
        for process in self.processes:
            if process.poll() is None:
                self.horses.update(_children(process.pid))
            for kill in (os.killpg, os.kill):
                try:
                    kill(process.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            process.wait(10)
        for pid in self.horses:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
