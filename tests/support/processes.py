"""``flask`` commands in processes of their own, started without paying for imports.

A ``python -m flask ... mtasks worker`` spends a second or more importing
Flask, SQLAlchemy, RQ and the extension before it does anything, and the
suite starts dozens of workers and commands. These are forked from a fork
server (:mod:`multiprocessing`'s ``forkserver``) that imported those modules
once: each child gets its own environment, working directory, standard
streams and ``sys.argv``, then runs Flask's command line as ``python -m
flask`` does, and exits with its status. It is a process of its own like any
other (signals, its work horse, its exit code); only the imports are done.

multiprocessing imports the parent's ``__main__`` in each child (as
``__mp_main__``): pytest's is guarded by ``if __name__ == "__main__"``, and a
script that uses these helpers must be too.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import threading
import typing as t
from pathlib import Path

#: What a worker or a command imports anyway; missing ones are skipped.
PRELOAD = [
    "flask",
    "flask.cli",
    "flask_sqlalchemy",
    "sqlalchemy",
    "psycopg",
    "redis",
    "rq",
    "rq.worker",
    "pydantic",
    "alembic",
    "flask_migrate",
    "flask_maintenance_tasks",
    "flask_maintenance_tasks.cli",
    "flask_maintenance_tasks.worker",
    "tests.testapp",
]

_forkserver = multiprocessing.get_context("forkserver")
_forkserver.set_forkserver_preload(PRELOAD)


def _become_flask(
    args: list[str], env: dict[str, str], cwd: str, stdin: str, stdout: str, stderr: str
) -> None:
    """In the child: take the environment and streams, then run ``flask ARGS``.

    The command leads a process group of its own: the processes it starts
    (RQ's scheduler) stay in it, so a test can kill them all even after the
    command itself was killed.
    """
    os.setsid()
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    sys.path.insert(0, cwd)  # as ``python -m`` puts the working directory first
    for fd, path, flags in (
        (0, stdin, os.O_RDONLY),
        (1, stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
        (2, stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
    ):
        if fd == 2 and stderr == stdout:
            os.dup2(1, 2)  # one file, one offset: the two streams interleave
            continue
        opened = os.open(path, flags, 0o644)
        os.dup2(opened, fd)
        os.close(opened)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.argv = ["flask", *args]
    from flask.cli import main

    main()  # exits: multiprocessing makes SystemExit's code the exit status


class FlaskProcess:
    """A forked ``flask`` command, with the part of :class:`subprocess.Popen` tests use."""

    def __init__(
        self,
        args: t.Sequence[str],
        *,
        env: dict[str, str],
        cwd: Path,
        stdout: Path,
        stderr: Path | None = None,
        stdin: Path | None = None,
    ) -> None:
        self.args = list(args)
        self._process = _forkserver.Process(
            target=_become_flask,
            args=(
                self.args,
                dict(env),
                str(cwd),
                str(stdin or os.devnull),
                str(stdout),
                str(stderr or stdout),
            ),
            name=f"flask {' '.join(self.args)}",
        )
        self._process.start()
        _STARTED.append(self)

    @property
    def pid(self) -> int:
        return t.cast(int, self._process.pid)

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(self.args, t.cast(float, timeout))
        return self._process.exitcode

    def send_signal(self, signum: int) -> None:
        if self._process.exitcode is None:
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


#: Every command started since the last :func:`kill_leftovers`.
_STARTED: list[FlaskProcess] = []


def kill_leftovers() -> list[str]:
    """Kill what the commands started since the last call left running; say what was alive.

    Each command leads a process group: killing the group also ends what it
    started (RQ's scheduler), even when the command itself is gone. A worker
    left running past its test would take the next tests' jobs from the same
    Redis, against the same database file or another one.
    """
    alive = [" ".join(process.args) for process in _STARTED if process.poll() is None]
    for process in _STARTED:
        for kill in (os.killpg, os.kill):
            try:
                kill(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    for process in _STARTED:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            pass
    _STARTED.clear()
    return alive


def run_flask(
    args: t.Sequence[str],
    *,
    env: dict[str, str],
    cwd: Path,
    input: str | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``flask ARGS`` to its end; what ``subprocess.run(..., capture_output=True)`` gives.

    ``input`` arrives through a pipe (a FIFO), as ``subprocess.run(input=...)`` sends it:
    the command cannot know its size beforehand.
    """
    with tempfile.TemporaryDirectory(prefix="flask-") as directory:
        streams = Path(directory)
        stdin = None
        if input is not None:
            stdin = streams / "stdin"
            os.mkfifo(stdin)
        process = FlaskProcess(
            args,
            env=env,
            cwd=cwd,
            stdin=stdin,
            stdout=streams / "stdout",
            stderr=streams / "stderr",
        )
        feeder = None
        if stdin is not None:
            feeder = threading.Thread(target=_feed, args=(stdin, input or ""), daemon=True)
            feeder.start()
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
            raise
        finally:
            if feeder is not None and feeder.is_alive():
                # The child never opened its end: open it here, so the feeder gives up.
                os.close(os.open(stdin, os.O_RDONLY | os.O_NONBLOCK))
                feeder.join(10)
        return subprocess.CompletedProcess(
            ["flask", *args],
            code,
            (streams / "stdout").read_text(errors="replace"),
            (streams / "stderr").read_text(errors="replace"),
        )


def _feed(fifo: Path, text: str) -> None:
    # Opening blocks until the child opens its end; a child that stops reading closes it.
    try:
        with open(fifo, "w") as pipe:
            pipe.write(text)
    except BrokenPipeError:
        pass
