"""Row collections: a ``Select`` of columns walked by keyset, ``process(row)`` with rows.

Unit tests walk ``sources.source_of(task).iterate(cursor)`` with cursors
round-tripped through JSON; end-to-end tests run the tasks of
``tests.testapp.maintenance.rows`` with the testing helpers, interrupted,
skipping, retried, dry and previewed. No mocks: SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
import typing as t

import pytest
import sqlalchemy as sa

from flask_maintenance_tasks import Failure, Task, sources
from flask_maintenance_tasks.exceptions import ConfigurationError
from flask_maintenance_tasks.sources import RowsSource
from flask_maintenance_tasks.sources.base import DESCRIPTION_LIMIT
from flask_maintenance_tasks.testing import (
    retry_task_failures,
    run_task,
    run_task_interrupted,
)
from tests.support.records import counters, seed_items
from tests.testapp import Flag, Item, db
from tests.testapp.maintenance.rows import (
    CoreRowsTask,
    RowsByGroupTask,
    RowsCountTask,
    items,
)

pytestmark = pytest.mark.both_databases


def walk(task: Task, cursor: t.Any = None) -> list[tuple[t.Any, t.Any]]:
    pairs = sources.source_of(task).iterate(json.loads(json.dumps(cursor)))
    return [(item, json.loads(json.dumps(c))) for item, c in pairs]


def ids(pairs: list[tuple[t.Any, t.Any]]) -> list[int]:
    return [row.id for row, _ in pairs]


def make_bad(*item_ids: int) -> None:
    db.session.execute(sa.update(Item).where(Item.id.in_(item_ids)).values(title="bad"))
    db.session.commit()


def ledger(run_id: int) -> list[Failure]:
    db.session.remove()
    statement = sa.select(Failure).where(Failure.run_id == run_id).order_by(Failure.id)
    return list(db.session.scalars(statement))


# -- walking rows ---------------------------------------------------------------------


def test_a_select_of_attributes_yields_rows_with_the_primary_key_as_cursor(app: t.Any) -> None:
    seed_items(3)

    pairs = walk(RowsCountTask())

    assert type(sources.source_of(RowsCountTask())) is RowsSource
    assert all(isinstance(row, sa.Row) for row, _ in pairs)
    assert [(row.id, row.title, cursor) for row, cursor in pairs] == [
        (1, "item-1", 1),
        (2, "item-2", 2),
        (3, "item-3", 3),
    ]
    assert tuple(pairs[0][0]) == (1, "item-1")


def test_rows_resumed_after_any_cursor_yield_exactly_the_rest(app: t.Any) -> None:
    seed_items(23)
    everything = walk(RowsCountTask())

    assert ids(everything) == list(range(1, 24))
    for position, (_, cursor) in enumerate(everything):
        assert ids(walk(RowsCountTask(), cursor)) == ids(everything[position + 1 :])


def test_rows_are_fetched_batch_size_per_query(app: t.Any) -> None:
    seed_items(23)
    statements: list[str] = []

    def record(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", record)
    try:
        assert len(walk(RowsCountTask())) == 23
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", record)

    assert len(statements) == 4  # 7 + 7 + 7 + 2 rows
    assert all("items.counter" not in statement for statement in statements)


def test_changes_pending_in_the_session_are_flushed_before_a_page_as_session_execute_would(
    app: t.Any,
) -> None:
    seed_items(10)
    seen = []

    for row, _ in sources.source_of(RowsCountTask()).iterate(None):
        seen.append(row.id)
        if row.id == 1:
            db.session.add(Item(title="added"))  # pending, not flushed

    assert seen == list(range(1, 12))  # the second page, after 7, sees the added item


def test_a_two_column_cursor_with_a_repeating_leading_column_resumes_exactly(
    app: t.Any,
) -> None:
    seed_items(20)

    everything = walk(RowsByGroupTask())

    expected = sorted((n % 3, n) for n in range(1, 21))
    assert [tuple(cursor) for _, cursor in everything] == expected
    assert [(row.group, row.id) for row, _ in everything] == expected
    for position, (_, cursor) in enumerate(everything):
        assert ids(walk(RowsByGroupTask(), cursor)) == ids(everything[position + 1 :])


def test_core_table_columns_walk_with_their_where_clause(app: t.Any) -> None:
    seed_items(12)

    pairs = walk(CoreRowsTask())

    assert ids(pairs) == [n for n in range(1, 13) if n % 3 != 1]
    assert [cursor for _, cursor in pairs] == ids(pairs)
    assert ids(walk(CoreRowsTask(), 6)) == [8, 9, 11, 12]
    assert CoreRowsTask().count() == 8


def test_a_labelled_cursor_column_is_found_by_lineage_and_by_its_label(app: t.Any) -> None:
    class LabelledTask(Task):
        collection = sa.select(Item.title, Item.id.label("item_id"))
        batch_size = 2

    class ByLabelTask(LabelledTask):
        cursor_columns = ("item_id",)

    class ByTableColumnTask(LabelledTask):
        cursor_columns = (items.c.id,)

    seed_items(5)

    for task in (LabelledTask(), ByLabelTask(), ByTableColumnTask()):
        pairs = walk(task, 2)
        assert [(row.item_id, cursor) for row, cursor in pairs] == [(3, 3), (4, 4), (5, 5)]


def test_cursor_columns_by_name_resume_and_an_unselected_expression_is_missing(app: t.Any) -> None:
    class ByExpressionTask(Task):
        collection = sa.select(Flag.name, Flag.value)
        cursor_columns = (sa.cast(Flag.value, sa.String), Flag.name)

    seed = [{"name": f"f{n}", "value": f"v{n % 2}"} for n in range(6)]
    db.session.execute(sa.insert(Flag), seed)
    db.session.commit()

    with pytest.raises(ConfigurationError, match="missing: "):
        walk(ByExpressionTask())  # an expression that is not selected

    class ByValueTask(Task):
        collection = sa.select(Flag.value, Flag.name)
        cursor_columns = ("value", "name")
        batch_size = 4

    pairs = walk(ByValueTask())
    assert [cursor for _, cursor in pairs] == [
        ["v0", "f0"],
        ["v0", "f2"],
        ["v0", "f4"],
        ["v1", "f1"],
        ["v1", "f3"],
        ["v1", "f5"],
    ]
    assert [row.name for row, _ in walk(ByValueTask(), ["v0", "f4"])] == ["f1", "f3", "f5"]


stamps = sa.Table(
    "unit_row_stamps",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("at", sa.DateTime(), nullable=False),
)
EPOCH = dt.datetime(2024, 2, 29, 12, 0, 0, 123456)


@pytest.fixture
def stamped(app: t.Any) -> t.Iterator[list[tuple[dt.datetime, int]]]:
    """12 rows whose ``at`` repeats: a time cursor needs the id as tie-breaker."""
    stamps.metadata.create_all(db.engine)
    rows = [(EPOCH + dt.timedelta(minutes=n % 4), n) for n in range(1, 13)]
    db.session.execute(sa.insert(stamps), [{"id": n, "at": at} for at, n in rows])
    db.session.commit()
    yield sorted(rows)
    db.session.rollback()
    db.session.remove()
    stamps.metadata.drop_all(db.engine)


def test_a_datetime_cursor_is_encoded_for_json_and_resumes_exactly(
    stamped: list[tuple[dt.datetime, int]],
) -> None:
    class ByTimeTask(Task):
        collection = sa.select(stamps.c.id, stamps.c.at)
        cursor_columns = (stamps.c.at, "id")
        batch_size = 5

    everything = walk(ByTimeTask())

    assert [(row.at, row.id) for row, _ in everything] == stamped
    assert everything[0][1] == [EPOCH.isoformat(), 4]
    for position, (_, cursor) in enumerate(everything):
        rest = [(row.at, row.id) for row, _ in walk(ByTimeTask(), cursor)]
        assert rest == stamped[position + 1 :]


def test_a_join_needs_cursor_columns_and_walks_by_them(app: t.Any) -> None:
    class JoinTask(Task):
        collection = sa.select(Item.id, Flag.value).join(Flag, Flag.name == Item.title)
        batch_size = 2

    class JoinByIdTask(JoinTask):
        cursor_columns = (Item.id,)

    seed_items(5)
    db.session.execute(sa.insert(Flag), [{"name": f"item-{n}", "value": f"v{n}"} for n in (2, 4)])
    db.session.commit()

    with pytest.raises(ConfigurationError, match=r"^JoinTask#collection selects from several"):
        walk(JoinTask())
    assert [(row.id, row.value) for row, _ in walk(JoinByIdTask())] == [(2, "v2"), (4, "v4")]
    assert JoinByIdTask().count() == 2


@pytest.mark.parametrize(
    ("statement", "columns", "message"),
    [
        (sa.select(Item.title), None, "missing: items.id"),
        (sa.select(items.c.title), None, "missing: items.id"),
        (sa.select(Item.id), ("group", "id"), "missing: 'group'"),
        (sa.select(Item.id), (Item.group, Item.id), "missing: items.group"),
        (sa.select(Item.title), (Item.group, "id"), "missing: items.group, 'id'"),
    ],
)
def test_a_select_without_its_cursor_columns_is_refused_naming_them(
    app: t.Any, statement: t.Any, columns: t.Any, message: str
) -> None:
    class MissingTask(Task):
        collection = statement
        cursor_columns = columns

    with pytest.raises(
        ConfigurationError, match=f"^MissingTask#collection must select its .*{re.escape(message)}"
    ):
        sources.source_of(MissingTask())


@pytest.mark.parametrize("column", [42, None, Item])
def test_a_cursor_column_that_is_no_column_is_refused(app: t.Any, column: t.Any) -> None:
    class OddColumnsTask(RowsCountTask):
        cursor_columns = (column,)

    with pytest.raises(ConfigurationError, match=r"^OddColumnsTask.cursor_columns must hold"):
        sources.source_of(OddColumnsTask())


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        (sa.select(Item.id).order_by(Item.id), "cannot use ORDER BY"),
        (sa.select(Item.id).limit(3), "cannot use LIMIT or OFFSET"),
        (sa.select(Item.id, Item), "must select exactly one ORM entity"),
        (sa.select(sa.literal(1)), "must select exactly one ORM entity, e.g. sa.select(Post), or"),
    ],
)
def test_other_unusable_selects_of_columns_are_refused(
    app: t.Any, statement: t.Any, message: str
) -> None:
    class BadRowsTask(Task):
        collection = statement

    with pytest.raises(ConfigurationError, match=f"^BadRowsTask.*{re.escape(message)}"):
        sources.source_of(BadRowsTask())


def test_a_row_is_described_as_a_json_safe_dict_within_the_limit(app: t.Any) -> None:
    at = dt.datetime(2024, 2, 29, 12, 30)
    row = db.session.execute(
        sa.select(
            sa.literal(7).label("id"),
            sa.literal(at, sa.DateTime()).label("at"),
            sa.literal(decimal.Decimal("1.50"), sa.Numeric(5, 2)).label("price"),
            sa.literal(None, sa.String()).label("none"),
            sa.literal("x" * 5000).label("long"),
        )
    ).one()
    source = RowsSource(RowsCountTask(), RowsCountTask.collection)

    described = source.describe(row)

    assert set(described) == {"id", "at", "price", "none", "long"}
    assert described["id"] == 7 and described["none"] is None
    assert described["at"].startswith("2024-02-29")
    assert described["price"] in ("1.50", "1.5")
    assert described["long"].endswith(" [...]")
    assert len(json.dumps(described)) <= DESCRIPTION_LIMIT


def test_a_rows_collection_retries_only_failures_of_its_kind(app: t.Any) -> None:
    assert sources.retry_problem(RowsCountTask(), {"rows"}) is None
    problem = sources.retry_problem(RowsCountTask(), {"records"})
    assert problem is not None and "of kind records" in problem and "now of kind rows" in problem


# -- end to end ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "processed"),
    [
        ("RowsCountTask", range(1, 41)),
        ("RowsByGroupTask", range(1, 41)),
        ("CoreRowsTask", [n for n in range(1, 41) if n % 3 != 1]),
    ],
)
def test_an_interrupted_run_processes_every_row_exactly_once(
    app: t.Any, task: str, processed: t.Iterable[int]
) -> None:
    seed_items(40)

    run = run_task_interrupted(task, seed=7, probability=0.2)
    again = run_task_interrupted(task, every=3)

    done = set(processed)
    assert (run.status, run.tick_count, run.tick_total) == ("succeeded", len(done), len(done))
    assert again.status == "succeeded"
    assert counters() == [2 if n in done else 0 for n in range(1, 41)]


def test_skipped_rows_go_to_the_ledger_and_a_retry_processes_them(app: t.Any) -> None:
    seed_items(30)
    make_bad(4, 17, 30)

    run = run_task("SkipBadRowItemsTask")

    assert (run.status, run.failure_count) == ("succeeded", 3)
    failures = ledger(run.id)
    assert [(f.item_key, f.kind) for f in failures] == [(4, "rows"), (17, "rows"), (30, "rows")]
    assert failures[0].item == {"id": 4, "title": "bad", "group": 1}
    assert counters() == [0 if n in (4, 17, 30) else 1 for n in range(1, 31)]

    db.session.execute(sa.update(Item).where(Item.id.in_([4, 30])).values(title="fixed"))
    db.session.commit()
    retry = retry_task_failures(run.id)

    assert (retry.status, retry.tick_total, retry.failure_count) == ("succeeded", 3, 1)
    assert [(f.item_key, f.status) for f in ledger(run.id)] == [
        (4, "resolved"),
        (17, "failed_again"),
        (30, "resolved"),
    ]
    assert counters() == [0 if n == 17 else 1 for n in range(1, 31)]


def test_a_dry_run_of_rows_walks_them_all_and_writes_nothing(app: t.Any) -> None:
    seed_items(25)

    run = run_task_interrupted("RowsCountTask", every=6, dry_run=True)

    assert (run.status, run.tick_count, run.tick_total) == ("succeeded", 25, 25)
    assert run.changes["tables"]["items"]["updated"] == 25
    assert counters() == [0] * 25


def test_a_preview_of_rows_counts_and_describes_the_first_rows_masked(
    app: t.Any, mtasks: t.Any
) -> None:
    seed_items(12)

    preview = mtasks.preview("RowsCountTask")
    secret = mtasks.preview("RowsWithSecretTask")

    assert (preview.count, preview.count_kind) == (12, "exact")
    assert preview.items[:2] == [{"id": 1, "title": "item-1"}, {"id": 2, "title": "item-2"}]
    assert len(preview.items) == 10
    assert "ORDER BY items.id" in preview.sql and "items.counter" not in preview.sql
    assert secret.items[0] == {"id": 1, "secret_title": "[FILTERED]"}
    assert counters() == [0] * 12
