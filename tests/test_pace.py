"""A run's pace: the bounded series of its recent throughput, written with each tick's
own UPDATE, carried on across slices, pauses and crashes, drawn on its card as a small
SVG with a text alternative, and carried by its JSON.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
import typing as t

import pytest
import sqlalchemy as sa
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_maintenance_tasks import pace
from flask_maintenance_tasks.models import runs_table
from flask_maintenance_tasks.web import sparkline
from tests.support.apps import FAST, configure
from tests.support.dashboard import Dashboard, add_run, text
from tests.support.records import counters, fresh_run, seed_items, trail
from tests.support.waiting import wait_until
from tests.support.workers import drain

#: The tick's UPDATE, as the statement benchmark recognises it.
TICK = "UPDATE maintenance_tasks_runs SET tick_count="


def series(*found: tuple[float, float, int, int], t0: int = 1_764_590_400) -> dict[str, t.Any]:
    """A stored series of ``(t, seconds, items, marks)`` points."""
    return {"v": 1, "t0": t0, "p": [list(point) for point in found]}


def stored_pace(run_id: int) -> list[pace.Point]:
    return pace.points(fresh_run(run_id).pace)


def gap_before(found: list[pace.Point], n: int) -> float:
    """Seconds between the end of point ``n - 1`` and the start of point ``n``."""
    return found[n].at - found[n].seconds - found[n - 1].at


# -- the series a slice keeps (no database) ------------------------------------------


def test_each_tick_with_items_adds_one_point_and_the_series_keeps_the_last_max_points() -> None:
    kept = pace.Series()
    for n in range(pace.MAX_POINTS + 25):
        kept.tick(1_764_590_400.0 + n, 1.0, 100 + n)
        kept.written()

    found = pace.points({"v": 1, "t0": kept.t0, "p": kept.points})
    assert len(found) == pace.MAX_POINTS
    assert [point.items for point in found[:2]] == [125, 126]
    assert found[-1].rate == 100 + pace.MAX_POINTS + 24


def test_a_tick_without_items_adds_no_point_and_its_time_and_wait_go_to_the_next() -> None:
    kept = pace.Series()
    kept.waited = 0.3  # the loop waited on the speed cap
    assert kept.tick(1000.0, 0.4, 0) is None
    kept.written()
    assert kept.points == []

    written = kept.tick(1000.6, 0.6, 5)
    kept.written()

    assert written == {"v": 1, "t0": 1000, "p": [[0.6, 1.0, 5, pace.THROTTLED]]}
    [point] = pace.points(written)
    assert (point.rate, point.throttled, point.interrupted) == (5.0, True, False)


def test_a_tick_that_is_not_committed_leaves_the_series_as_it_was() -> None:
    kept = pace.Series(series((1.0, 1.0, 10, 0)))
    kept.tick(1_764_590_403.0, 1.0, 10)  # fenced: written() never comes

    assert kept.points == [[1.0, 1.0, 10, 0]]


@pytest.mark.parametrize(
    ("after", "marks"),
    [
        ("pause", pace.INTERRUPTED),
        ("time_slice", pace.INTERRUPTED),
        ("recovery", pace.INTERRUPTED),
        ("database_locked", pace.INTERRUPTED),
        (None, pace.INTERRUPTED),  # a resume clears the reason
        ("throttle", pace.THROTTLED),
    ],
)
def test_a_series_carried_on_by_a_new_slice_marks_its_first_point(
    after: str | None, marks: int
) -> None:
    kept = pace.Series(series((1.0, 1.0, 10, 0)), after=after)

    written = kept.tick(1_764_590_460.0, 1.0, 10)
    kept.written()
    again = kept.tick(1_764_590_461.0, 1.0, 10)

    assert written is not None and again is not None
    assert [point[3] for point in again["p"]] == [0, marks, 0]
    assert written["p"][1][:3] == [60.0, 1.0, 10]


def test_a_new_series_starts_unmarked_whatever_stopped_the_run_before_it() -> None:
    written = pace.Series(None, after="pause").tick(1000.0, 1.0, 3)

    assert written == {"v": 1, "t0": 1000, "p": [[0.0, 1.0, 3, 0]]}


def test_a_full_series_is_a_few_kilobytes_of_json() -> None:
    """The size of what each tick writes once the series is full, as SQLAlchemy writes it."""
    kept = pace.Series()
    moment = 1_764_590_400.0
    for n in range(pace.MAX_POINTS):
        moment += 1.003 + n % 7 / 1000
        kept.tick(moment + 86_400 * 3, 1.004, 1234 + n % 50)  # three days into the run
        kept.waited = 0.1 if n % 5 == 0 else 0.0
        kept.written()
    written = kept.tick(moment + 86_400 * 3 + 1, 1.004, 1234)
    size = len(json.dumps(written).encode())

    print(f"a full series of {pace.MAX_POINTS} points: {size:,} bytes of JSON")
    assert size < 8 * 1024


def test_combined_adds_partitions_up_by_time_and_marks_a_time_nobody_worked() -> None:
    first = pace.points(series((1, 1, 10, 0), (2, 1, 10, 0), (6, 1, 10, pace.INTERRUPTED)))
    second = pace.points(series((1, 1, 30, 0), (2, 1, 30, pace.THROTTLED)))

    found = pace.combined([first, second, []])

    assert [round(point.rate) for point in found] == [40, 40, 10]
    assert [point.throttled for point in found] == [False, True, False]
    assert [point.interrupted for point in found] == [False, False, True]
    assert sum(point.items for point in found) == pytest.approx(90)
    assert pace.combined([first]) == first


def test_combined_stays_bounded_and_shares_a_long_point_pro_rata() -> None:
    long = pace.points(series((10_000, 10_000, 1_000_000, 0)))
    short = pace.points(series(*[(n, 1, 5, 0) for n in range(1, 300)]))

    found = pace.combined([long, short])

    assert len(found) <= pace.MAX_POINTS
    assert sum(point.items for point in found) == pytest.approx(1_000_000 + 299 * 5)


def test_the_text_alternative_says_the_latest_and_average_rates_and_the_marks() -> None:
    found = pace.points(
        series(
            (1, 1, 200, 0),
            (2, 1, 50, pace.THROTTLED),
            (3, 1, 50, pace.THROTTLED),
            (9, 1, 200, pace.INTERRUPTED),
            (10, 1, 100, pace.THROTTLED),
            (11, 2, 3, 0),
        )
    )

    assert pace.describe(found) == (
        "Pace: latest 1.5 items/s, average 86.1 items/s; throttled twice, interrupted once."
    )
    assert pace.describe([]) is None
    assert pace.rate_text(0.05) == "3 items/min"
    assert pace.rate_text(12_345.6) == "12,346 items/s"


def test_the_sparkline_draws_bands_for_throttled_points_and_dashes_after_interruptions() -> None:
    found = pace.points(
        series((1, 1, 10, 0), (2, 1, 5, pace.THROTTLED), (3, 1, 10, 0), (9, 1, 10, 2))
    )

    drawn = sparkline.draw(found)

    assert drawn is not None
    assert [segment.kind for segment in drawn.segments] == ["throttled", "steady", "interrupted"]
    assert drawn.segments[0].points == "2.0,2.0 80.7,20.0"
    assert [(band.x, band.width) for band in drawn.bands] == [(41.3, 78.7)]
    assert (drawn.throttled, drawn.interrupted) == (True, True)
    assert sparkline.draw([]) is None


# -- real runs ------------------------------------------------------------------------


@pytest.mark.both_databases
def test_a_run_adds_one_point_per_tick_with_the_ticks_own_update(
    app: Flask, mtasks: t.Any, db: t.Any
) -> None:
    seed_items(100)
    run = mtasks.run("CountItemsTask", arguments={"sleep": 0.01})
    statements: list[str] = []

    def record(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
        if "maintenance_tasks_runs" in statement:
            statements.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", record)
    try:
        drain(app)
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", record)

    found = stored_pace(run.id)
    ticks = [s for s in statements if s.startswith(TICK)]
    writes = [s for s in statements if "pace" in s.split("WHERE")[0] and " SET " in s]
    assert fresh_run(run.id).status == "succeeded"
    assert counters() == [1] * 100
    assert len(ticks) >= 4  # 1 s of work, a tick every 0.2 s
    # Each tick's UPDATE wrote its point, and nothing else wrote the series.
    assert len(found) == len(ticks)
    assert writes == ticks
    assert sum(point.items for point in found) == 100
    assert all(0 < point.rate < 150 for point in found)
    assert not any(point.throttled or point.interrupted for point in found)
    # The points follow each other in time: each starts where the one before ended.
    assert all(abs(gap_before(found, n)) < 0.05 for n in range(1, len(found)))


@pytest.mark.both_databases
def test_the_series_keeps_only_the_last_points(
    app: Flask, mtasks: t.Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pace, "MAX_POINTS", 3)
    seed_items(100)
    run = mtasks.run("CountItemsTask", arguments={"sleep": 0.01})

    drain(app)

    found = stored_pace(run.id)
    assert len(found) == 3
    assert sum(point.items for point in found) < 100
    assert found[-1].at == pytest.approx(time.time(), abs=5)


@pytest.mark.both_databases
def test_a_run_under_a_speed_cap_shows_throttled_points(
    app: Flask, mtasks: t.Any, db: t.Any
) -> None:
    seed_items(40)
    run = mtasks.run("CountItemsTask")
    mtasks.set_speed(run.id, rate=40)

    drain(app)

    found = stored_pace(run.id)
    assert fresh_run(run.id).status == "succeeded"
    assert len(found) >= 3
    # A tick is throttled when the cap made it wait. On a loaded machine the work horse
    # may lose the CPU for a moment and then run a tick behind the cap, with nothing to
    # wait for: most ticks, not every one, must show the cap.
    throttled = [point.throttled for point in found]
    assert sum(throttled) * 3 >= len(found) * 2, throttled
    assert pace.summary(found).average == pytest.approx(40, rel=0.35)  # type: ignore[union-attr]


@pytest.mark.both_databases
def test_each_slice_carries_the_series_on_and_marks_its_first_point_interrupted(
    app: Flask, mtasks: t.Any
) -> None:
    seed_items(40)
    configure(app, max_job_runtime=0.3)
    run = mtasks.run("CountItemsTask", arguments={"sleep": 0.02})

    drain(app)

    found = stored_pace(run.id)
    handed_on = [action for action, _, _ in trail(run.id)].count("interrupted")
    assert fresh_run(run.id).status == "succeeded"
    assert handed_on >= 2
    assert sum(point.interrupted for point in found) == handed_on
    assert not found[0].interrupted
    assert sum(point.items for point in found) == 40


def _under_way(run_id: int, ticks: int) -> None:
    wait_until(lambda: fresh_run(run_id).tick_count >= ticks, 30, "the run to make progress")


@pytest.mark.both_databases
def test_a_paused_and_resumed_run_shows_an_interrupted_gap(
    app: Flask, mtasks: t.Any, workers: t.Any
) -> None:
    seed_items(200)
    workers.start()
    run = mtasks.run("CountItemsTask", arguments={"sleep": 0.005})
    _under_way(run.id, 40)
    mtasks.pause(run.id)
    wait_until(lambda: fresh_run(run.id).status == "paused", 20, "the pause")
    paused = len(stored_pace(run.id))
    time.sleep(0.6)
    mtasks.resume(run.id)
    wait_until(lambda: fresh_run(run.id).status == "succeeded", 30, "the resumed run")

    found = stored_pace(run.id)
    assert [n for n, point in enumerate(found) if point.interrupted] == [paused]
    assert gap_before(found, paused) >= 0.5
    assert sum(point.items for point in found) == 200


@pytest.mark.slow
@pytest.mark.both_databases
@pytest.mark.parametrize(
    "settings", [{**FAST, "stuck_after": 2.0, "recovery_interval": 0.5}], indirect=False
)
def test_a_run_whose_worker_was_killed_shows_an_interrupted_gap_once_recovered(
    app: Flask, mtasks: t.Any, workers: t.Any, settings: dict[str, t.Any]
) -> None:
    seed_items(300)
    worker = workers.start()
    run = mtasks.run("CountItemsTask", arguments={"sleep": 0.005})
    _under_way(run.id, 40)
    horse = workers.horse_pid(worker)
    before = len(stored_pace(run.id))
    os.kill(horse, signal.SIGKILL)
    wait_until(lambda: fresh_run(run.id).status == "succeeded", 60, "the recovered run")

    found = stored_pace(run.id)
    interrupted = [n for n, point in enumerate(found) if point.interrupted]
    assert len(interrupted) == 1 and interrupted[0] >= before
    # Recovery takes a run its worker left silent for stuck_after (2 s).
    assert gap_before(found, interrupted[0]) >= 1.0
    assert sum(point.items for point in found) == 300 == sum(counters())


# -- the card and the JSON --------------------------------------------------------------


def test_the_card_draws_the_pace_with_its_text_alternative(app: Flask, db: t.Any) -> None:
    stored = series((1, 1, 200, 0), (2, 1, 190, pace.THROTTLED), (8, 1, 210, pace.INTERRUPTED))
    run_id = add_run(db.engine, "CountItemsTask", "running", tick_count=600, pace=stored)

    page = Dashboard(app).get("/tasks/CountItemsTask")

    body = page.get_data(as_text=True)
    label = "Pace: latest 210 items/s, average 200 items/s; throttled once, interrupted once."
    assert page.status_code == 200
    assert f'role="img" aria-labelledby="run-{run_id}-pace-title"' in body
    assert f'<title id="run-{run_id}-pace-title">{label}</title>' in body
    assert 'class="pace-band"' in body and 'class="pace-interrupted"' in body
    assert "style=" not in body.split(f'id="run-{run_id}-pace"')[1].split("</figure>")[0]
    assert label in text(page)


def test_the_pace_reads_in_the_readers_language(app: Flask, db: t.Any) -> None:
    stored = series((1, 1, 200, 0), (2, 1, 190, pace.THROTTLED), (8, 1, 210, pace.INTERRUPTED))
    run_id = add_run(db.engine, "CountItemsTask", "running", tick_count=600, pace=stored)

    page = app.test_client().get(
        "/maintenance_tasks/tasks/CountItemsTask", headers={"Accept-Language": "ja"}
    )

    body = page.get_data(as_text=True)
    label = "処理速度: 直近 210 件/秒、平均 200 件/秒。速度制限 1 回、中断 1 回。"
    assert f'<title id="run-{run_id}-pace-title">{label}</title>' in body
    assert "網掛け: 速度制限" in body and "破線: 中断" in body


def test_a_run_without_ticks_has_no_sparkline(app: Flask, db: t.Any) -> None:
    add_run(db.engine, "CountItemsTask", "enqueued")

    page = Dashboard(app).get("/tasks/CountItemsTask")

    assert page.status_code == 200
    assert "<svg" not in page.get_data(as_text=True)


def test_the_runs_json_carries_its_pace(app: Flask, db: t.Any, cli: t.Any) -> None:
    stored = series((1, 0.5, 100, 0), (2.5, 1, 150, pace.THROTTLED), t0=1_764_590_400)
    run_id = add_run(db.engine, "CountItemsTask", "running", tick_count=250, pace=stored)

    data = Dashboard(app).get(f"/runs/{run_id}.json").get_json()
    printed = json.loads(cli("status", str(run_id), "--json").output)

    assert data["pace"] == printed["pace"]
    assert data["pace"] == {
        "max_points": pace.MAX_POINTS,
        "latest_rate": 150.0,
        "average_rate": 166.667,
        "throttled": 1,
        "interrupted": 0,
        "points": [
            {
                "at": "2025-12-01T12:00:01.000+00:00",
                "seconds": 0.5,
                "items": 100.0,
                "rate": 200.0,
                "throttled": False,
                "interrupted": False,
            },
            {
                "at": "2025-12-01T12:00:02.500+00:00",
                "seconds": 1.0,
                "items": 150.0,
                "rate": 150.0,
                "throttled": True,
                "interrupted": False,
            },
        ],
    }


def test_status_prints_the_pace_in_words(
    app: Flask, db: t.Any, cli: t.Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = series((1, 0.5, 100, 0), (2.5, 1, 150, pace.THROTTLED), t0=1_764_590_400)
    run_id = add_run(db.engine, "CountItemsTask", "running", tick_count=250, pace=stored)
    without = add_run(db.engine, "CountItemsTask", "enqueued")

    printed = cli("status", str(run_id)).output
    assert "  Pace: latest 150 items/s, average 167 items/s; throttled once.\n" in printed
    assert "Pace:" not in cli("status", str(without)).output
    monkeypatch.setenv("LANGUAGE", "ja")
    printed = cli("status", str(run_id)).output
    assert "  処理速度: 直近 150 件/秒、平均 167 件/秒。速度制限 1 回。\n" in printed


def _partitioned_run(db: t.Any, first: t.Any, second: t.Any) -> int:
    run_id = add_run(
        db.engine, "PartitionedCountTask", "running", partitions=2, bounds=[{}, {}], tick_count=80
    )
    for n, stored in enumerate((first, second)):
        add_run(
            db.engine,
            "PartitionedCountTask",
            "running",
            parent_id=run_id,
            partition=n,
            bounds={"of": 2},
            pace=stored,
        )
    return run_id


def test_a_partitioned_run_shows_its_partitions_pace_added_up(app: Flask, db: t.Any) -> None:
    run_id = _partitioned_run(
        db, series((1, 1, 10, 0), (2, 1, 10, 0)), series((1, 1, 30, 0), (2, 1, 30, 0))
    )
    dashboard = Dashboard(app)

    page = dashboard.get("/tasks/PartitionedCountTask")
    data = dashboard.get(f"/runs/{run_id}.json").get_json()

    assert "Pace: latest 40 items/s, average 40 items/s." in text(page)
    assert [point["rate"] for point in data["pace"]["points"]] == [40.0, 40.0]


# -- what a hand-edited column may hold ----------------------------------------------------

_NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1e308, -1e308, 5e-324, 1e-4, 2**63]),
)
_ANY = st.one_of(_NUMBERS, st.booleans(), st.none(), st.text(max_size=8))
_POINT = st.one_of(
    st.lists(_ANY, max_size=6),
    st.tuples(_NUMBERS, _NUMBERS, _NUMBERS, st.integers(-2, 5)).map(list),
    _ANY,
    st.dictionaries(st.text(max_size=3), _ANY, max_size=3),
)
_STORED = st.one_of(
    st.fixed_dictionaries(
        {"v": _ANY, "t0": st.one_of(_NUMBERS, _ANY), "p": st.lists(_POINT, max_size=20)}
    ),
    st.recursive(_ANY, lambda inner: st.lists(inner, max_size=4), max_leaves=10),
    st.dictionaries(st.sampled_from(["v", "t0", "p", "x"]), _ANY, max_size=4),
)


def _strict_json(body: str) -> t.Any:
    """The body as JSON, refusing NaN and Infinity, which are no JSON."""

    def refuse(constant: str) -> t.NoReturn:
        raise AssertionError(f"{constant} in the JSON")

    return json.loads(body, parse_constant=refuse)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(own=_STORED, first=_STORED, second=_STORED)
def test_a_garbled_stored_series_is_drawn_or_left_out_never_an_error(
    app: Flask, db: t.Any, own: t.Any, first: t.Any, second: t.Any
) -> None:
    """NaN, infinities, negatives, wrong types and shapes: stored as a hand edit would."""
    with db.engine.begin() as connection:
        connection.execute(runs_table.delete())
    run_id = add_run(db.engine, "CountItemsTask", "running", pace=own)
    parent_id = _partitioned_run(db, first, second)
    dashboard = Dashboard(app)

    for task, shown in (("CountItemsTask", run_id), ("PartitionedCountTask", parent_id)):
        page = dashboard.get(f"/tasks/{task}")
        answer = dashboard.get(f"/runs/{shown}.json")

        assert page.status_code == 200
        assert answer.status_code == 200
        data = _strict_json(answer.get_data(as_text=True))["pace"]
        assert len(data["points"]) <= pace.MAX_POINTS
        assert all(point["seconds"] > 0 and point["rate"] >= 0 for point in data["points"])
        body = page.get_data(as_text=True)
        assert ("<svg" in body) == bool(data["points"])
        for figure in body.split('<figure class="pace"')[1:]:
            drawn = figure.split("</svg>")[0]
            assert "nan" not in drawn.lower() and "inf" not in drawn.lower()


def test_a_huge_stored_series_is_read_up_to_its_last_points(app: Flask, db: t.Any) -> None:
    stored = series(*[(n, 1, n % 97, n % 4) for n in range(100_000)])
    run_id = add_run(db.engine, "CountItemsTask", "running", pace=stored)
    dashboard = Dashboard(app)

    page = dashboard.get("/tasks/CountItemsTask")
    data = dashboard.get(f"/runs/{run_id}.json").get_json()

    assert page.status_code == 200
    assert len(data["pace"]["points"]) == pace.MAX_POINTS
    assert data["pace"]["points"][-1]["items"] == 99_999 % 97
    assert math.isfinite(data["pace"]["average_rate"])
