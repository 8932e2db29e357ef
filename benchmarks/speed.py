"""Section: a rate cap set on a running run, and how well the run keeps to it.

A real ``flask mtasks worker`` runs a task whose items take 1 ms (up to about 1,000 items
per second). Once it moves, ``mtasks.set_speed`` caps it at ``--speed-rate`` items per
second, with a ticker delay of 0.1 s so that the committed count follows the work closely;
the run is not paused. After two seconds for the change to be taken (one status reload),
``tick_count`` is read every 0.1 s for ``--speed-seconds``; the table gives the highest and
the lowest rate over every 10-second window of those readings.
"""

from __future__ import annotations

import bisect
import time
from pathlib import Path

from .benchapp import mtasks
from .harness import MISSED, Bench, Table, Target
from .reaction import _wait, _Worker

#: The cap, how long it is measured, and its sliding window (seconds).
RATE = 200.0
SECONDS = 30.0
WINDOW = 10.0
#: The issue's bound: over any window the rate is within this fraction of the cap.
TOLERANCE = 0.05
ITEM = 0.001
POLL = 0.1


def window_rates(samples: list[tuple[float, int]], window: float) -> list[float]:
    """Items per second over each ``window`` seconds ending at a sample, from ``(time, count)``."""
    times = [at for at, _ in samples]
    rates = []
    for at, count in samples:
        if at - times[0] < window:
            continue
        start = bisect.bisect_right(times, at - window) - 1
        then, before = samples[start]
        rates.append((count - before) / (at - then))
    return rates


def capped_samples(
    target: Target, directory: Path, rate: float, seconds: float
) -> list[tuple[float, int]]:
    """``(time, tick_count)`` every 0.1 s of a run capped at ``rate`` while it runs."""
    worker = _Worker(target, directory, f"speed-{target.name}")
    try:
        with target.context():
            run = mtasks.run("SleepTask", {"seconds": ITEM})
            _wait("the run to move", lambda: (mtasks.get_run(run.id).tick_count or 0) > 0)
            mtasks.set_speed(run.id, rate=rate, ticker_delay=POLL)
            time.sleep(2.0)
            samples: list[tuple[float, int]] = []
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                found = mtasks.get_run(run.id)
                if found.status != "running":
                    raise RuntimeError(f"the run is {found.status}: is the table big enough?")
                samples.append((time.monotonic(), found.tick_count))
                time.sleep(POLL)
            mtasks.cancel(run.id)
    finally:
        worker.stop()
    return samples


def speed(bench: Bench) -> list[Table]:
    rows = []
    for target in bench.targets:
        samples = capped_samples(target, bench.directory, bench.speed_rate, bench.speed_seconds)
        rates = window_rates(samples, bench.speed_window)
        if not rates:
            raise RuntimeError(
                f"--speed-seconds must be more than the {bench.speed_window:g}-s window"
            )
        high, low = max(rates), min(rates)
        bench.log(f"{target.name} speed: {len(rates)} windows, {low:.1f} to {high:.1f} items/s")
        met = high <= bench.speed_rate * (1 + TOLERANCE) and low >= bench.speed_rate * (
            1 - TOLERANCE
        )
        rows.append(
            [
                target.name,
                f"{bench.speed_rate:g}/s",
                f"{bench.speed_seconds:g} s",
                str(len(rates)),
                f"{high:.1f} ({high / bench.speed_rate - 1:+.1%})",
                f"{low:.1f} ({low / bench.speed_rate - 1:+.1%})",
                f"within ±{TOLERANCE:.0%}",
                "yes" if met else MISSED,
            ]
        )
    return [
        Table(
            "Rate cap set on a running run",
            [
                "database",
                "cap",
                "measured",
                "10-s windows",
                "highest rate",
                "lowest rate",
                "target",
                "met",
            ],
            rows,
            [
                f"A real `flask mtasks worker`, items of {ITEM * 1000:g} ms (about 1,000/s "
                "uncapped); `mtasks.set_speed(rate=..., ticker_delay=0.1)` while it runs, "
                f"then `tick_count` read every {POLL:g} s; rates over every "
                f"{bench.speed_window:g}-second window of the readings.",
            ],
        )
    ]
