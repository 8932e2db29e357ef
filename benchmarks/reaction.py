"""Section 4: how fast a run reacts to a pause request and a worker to SIGTERM.

Both use real ``flask mtasks worker`` processes (a forking RQ worker, as in production) and
default settings. A pause request comes at a random moment of the status reload cycle, so the
worst of several trials shows the bound; the time runs from the request to the run being
``paused``. SIGTERM goes to the worker process alone (the worker forwards it to its work horse)
at a random moment of an item, and the time runs until the worker has exited.
"""

from __future__ import annotations

import random
import signal
import statistics
import subprocess
import sys
import time
import typing as t
from pathlib import Path

from flask_maintenance_tasks.config import Settings

from .benchapp import mtasks
from .harness import MISSED, Bench, Table, Target

ROOT = Path(__file__).resolve().parent.parent

#: Defaults of the extension, which the benchmark app keeps.
RELOAD = Settings().status_reload_frequency
TICK = Settings().ticker_delay

#: A pause must be seen within this multiple of STATUS_RELOAD_FREQUENCY.
PAUSE_TARGET = 1.5
PAUSE_ITEM = 0.001
SIGTERM_ITEM = 0.1


class _Worker:
    """A ``flask mtasks worker`` process on the target's app, its output in a file."""

    def __init__(self, target: Target, directory: Path, name: str) -> None:
        self.log_path = directory / f"{name}.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "flask", "mtasks", "worker"],
                cwd=ROOT,
                env=target.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def _wait(what: str, predicate: t.Callable[[], t.Any], timeout: float = 60.0) -> t.Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.005)


def _progress(run_id: int) -> tuple[str, int]:
    run = mtasks.get_run(run_id)
    assert run is not None
    return run.status, run.tick_count


def _wait_for_progress(run_id: int) -> None:
    """Until the run is running and has committed a tick since now."""
    ticks = _progress(run_id)[1]

    def moved() -> bool:
        status, count = _progress(run_id)
        return status == "running" and count > ticks

    _wait("the run to make progress", moved)


def pause_trials(target: Target, directory: Path, trials: int) -> list[float]:
    """Seconds from each pause request to ``paused`` (one run, paused ``trials`` times)."""
    worker = _Worker(target, directory, f"pause-{target.name}")
    seconds = []
    try:
        with target.context():
            run = mtasks.run("SleepTask", {"seconds": PAUSE_ITEM})
            for _ in range(trials):
                _wait_for_progress(run.id)
                time.sleep(random.uniform(0, RELOAD))
                start = time.perf_counter()
                mtasks.pause(run.id)
                _wait("the run to pause", lambda: _progress(run.id)[0] == "paused")
                seconds.append(time.perf_counter() - start)
                mtasks.resume(run.id)
            _wait("the run to make progress", lambda: _progress(run.id)[0] == "running")
            mtasks.pause(run.id)
            _wait("the run to pause", lambda: _progress(run.id)[0] == "paused")
            mtasks.cancel(run.id)
    finally:
        worker.stop()
    return seconds


def sigterm_trials(target: Target, directory: Path, trials: int) -> list[float]:
    """Seconds from SIGTERM to the worker's exit, one worker per trial on the same run."""
    seconds = []
    with target.context():
        run = mtasks.run("SleepTask", {"seconds": SIGTERM_ITEM})
        try:
            for n in range(trials):
                worker = _Worker(target, directory, f"sigterm-{target.name}-{n}")
                try:
                    _wait_for_progress(run.id)
                    time.sleep(random.uniform(0, RELOAD))
                    start = time.perf_counter()
                    worker.process.send_signal(signal.SIGTERM)
                    code = worker.process.wait(60)
                    seconds.append(time.perf_counter() - start)
                finally:
                    worker.stop()
                status, _ = _progress(run.id)
                reason = mtasks.get_run(run.id).interruption_reason  # type: ignore[union-attr]
                if code != 0 or status != "interrupted" or reason != "worker_shutdown":
                    raise RuntimeError(
                        f"after SIGTERM the worker exited {code} and run is {status} ({reason}); "
                        f"see {worker.log_path}"
                    )
        finally:
            mtasks.cancel(run.id)
    return seconds


def reaction(bench: Bench) -> list[Table]:
    rows = []
    pause_trials_n = max(3 * bench.repeat, 3)
    sigterm_trials_n = max(2 * bench.repeat, 2)
    for target in bench.targets:
        pauses = pause_trials(target, bench.directory, pause_trials_n)
        bench.log(f"{target.name} pause: {[round(s, 3) for s in pauses]}")
        rows.append(
            _row(
                target,
                "pause request → `paused`",
                PAUSE_ITEM,
                pauses,
                f"< {PAUSE_TARGET:g} × reload",
                max(pauses) < PAUSE_TARGET * RELOAD,
            )
        )
        exits = sigterm_trials(target, bench.directory, sigterm_trials_n)
        bench.log(f"{target.name} SIGTERM: {[round(s, 3) for s in exits]}")
        bound = SIGTERM_ITEM + TICK
        rows.append(
            _row(
                target,
                "SIGTERM → worker exited",
                SIGTERM_ITEM,
                exits,
                f"≤ one item + one tick ({bound:g} s)",
                max(exits) <= bound,
            )
        )
    return [
        Table(
            "Reaction time",
            [
                "database",
                "from → to",
                "item",
                "trials",
                "median",
                "worst",
                "worst ÷ STATUS_RELOAD_FREQUENCY",
                "target",
                "met",
            ],
            rows,
            [
                f"Default settings: STATUS_RELOAD_FREQUENCY = {RELOAD:g} s, "
                f"TICKER_DELAY = {TICK:g} s. Real `flask mtasks worker` processes; the "
                "task sleeps for the item time on each row. Pause requests and signals "
                "come at random moments; the pause time includes the request's own "
                "write and ends when another connection reads `paused`.",
            ],
        )
    ]


def _row(
    target: Target, what: str, item: float, values: list[float], goal: str, met: bool
) -> list[str]:
    return [
        target.name,
        what,
        f"{item * 1000:g} ms",
        str(len(values)),
        f"{statistics.median(values):.2f} s",
        f"{max(values):.2f} s",
        f"{max(values) / RELOAD:.2f}",
        goal,
        "yes" if met else MISSED,
    ]
