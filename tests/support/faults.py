"""A run struck by a fault on real workers: what the fault tests measure and promise.

With ``MTASKS_RELIABILITY_REPORT`` set to a file, every check appends what it
measured (a JSON line) for ``benchmarks/reliability.py``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import typing as t

from tests.support.records import assert_trail_agrees, counters, fresh_run
from tests.support.waiting import wait_until


def database_of(app_env: t.Mapping[str, str]) -> str:
    """``"postgresql"`` or ``"sqlite"``: the test's database, as the report names it."""
    url = app_env["MTASKS_TEST_DATABASE_URL"]
    return "postgresql" if url.startswith("postgresql") else "sqlite"


@dataclasses.dataclass
class Fault:
    """A run under way, the fault, and the measure of what followed."""

    name: str
    run_id: int
    database: str
    items: int = 300
    #: Seconds to wait for the run to progress again, then to end.
    timeout: float = 60.0
    ticks_at_fault: int = 0
    injected_at: float = 0.0
    recovered_after: float | None = None

    def inject(self) -> None:
        run = fresh_run(self.run_id)
        assert run.tick_count < self.items, "the run ended before the fault"
        assert run.ended_at is None, "the run ended before the fault"
        self.ticks_at_fault = run.tick_count
        self.injected_at = time.monotonic()

    def watch_recovery(self, timeout: float | None = None) -> None:
        """Wait until the run commits progress again (or ends), then until it ends."""
        timeout = self.timeout if timeout is None else timeout

        def progressed() -> bool:
            run = fresh_run(self.run_id)
            return run.tick_count > self.ticks_at_fault or run.status == "succeeded"

        wait_until(progressed, timeout, f"the run to progress after {self.name}")
        self.recovered_after = time.monotonic() - self.injected_at

        def ended() -> bool:
            run = fresh_run(self.run_id)
            # An error is told at once, rather than as a time-out.
            assert run.status not in ("errored", "paused", "cancelled"), (
                run.status,
                run.error_message,
            )
            return run.status == "succeeded"

        wait_until(ended, timeout, "the run to end")

    def check(self) -> None:
        """The promises; and a line for the reliability report."""
        done = counters()
        run = fresh_run(self.run_id)
        missed = sum(1 for c in done if c == 0)
        twice = sum(1 for c in done if c > 1)
        self.report(run, missed, twice)
        assert run.status == "succeeded", run.error_message
        assert (missed, twice) == (0, 0)
        assert run.tick_count == self.items == sum(done)
        # Every status change left its event, in its transaction: the trail
        # replays to the run's status whatever the fault did.
        assert_trail_agrees(self.run_id)

    def report(self, run: t.Any, missed: int, twice: int) -> None:
        report = os.environ.get("MTASKS_RELIABILITY_REPORT")
        if not report:
            return
        line = {
            "fault": self.name,
            "database": self.database,
            "status": run.status,
            "missed": missed,
            "twice": twice,
            "recovered_after": self.recovered_after,
        }
        with open(report, "a") as out:
            out.write(json.dumps(line) + "\n")
