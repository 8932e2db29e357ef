"""What a task's collection yields, from where, and what its default count is.

End-to-end tests run real tasks of the test app through RQ; the others call
``sources.source_of(task).iterate(cursor)`` directly, with cursors round-tripped
through JSON as the runs table stores them.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import typing as t

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from flask_maintenance_tasks import Batch, Task, in_batches, no_collection, signals, sources
from flask_maintenance_tasks.exceptions import ConfigurationError
from tests.support.apps import FAST
from tests.support.records import counters, fresh_run, seed_items
from tests.support.workers import drain
from tests.testapp import Flag, Item
from tests.testapp.maintenance import kinds

# Both databases: keyset pagination: row-value comparisons, composite keys, datetime cursors.
pytestmark = pytest.mark.both_databases


def stored(cursor: t.Any) -> t.Any:
    """The cursor as read back from the runs table's JSON column."""
    return json.loads(json.dumps(cursor))


def walk(task: Task, cursor: t.Any = None) -> list[tuple[t.Any, t.Any]]:
    return [(item, stored(c)) for item, c in sources.source_of(task).iterate(cursor)]


def ids(pairs: list[tuple[t.Any, t.Any]]) -> list[int]:
    return [item.id for item, _ in pairs]


class AllItemsTask(Task):
    def collection(self) -> t.Any:
        return sa.select(Item)

    def process(self, item: Item) -> None:
        pass


class SmallPagesTask(AllItemsTask):
    batch_size = 5


class ByGroupTask(AllItemsTask):
    cursor_columns = (Item.group, Item.id)
    batch_size = 4


class ByGroupNamesTask(ByGroupTask):
    cursor_columns = ("group", "id")


class GroupOneInBatchesTask(Task):
    def collection(self) -> t.Any:
        return in_batches(sa.select(Item).where(Item.group == 1), of=3)

    def process(self, batch: Batch) -> None:
        pass


class ItemsInBatchesTask(Task):
    of = 10

    def collection(self) -> t.Any:
        return in_batches(sa.select(Item), of=self.of)

    def process(self, batch: Batch) -> None:
        pass


class SelectAttributeTask(Task):
    collection = sa.select(Item).where(Item.group == 2)

    def process(self, item: Item) -> None:
        pass


# -- end to end: real runs through RQ ------------------------------------------


def test_select_collection_run_processes_every_row_once(app: t.Any, mtasks: t.Any) -> None:
    seed_items(250)

    run = mtasks.run("CountItemsTask")
    drain(app)

    run = fresh_run(run.id)
    assert (run.status, run.tick_count, run.tick_total) == ("succeeded", 250, 250)
    assert run.cursor == 250
    assert counters() == [1] * 250


@pytest.mark.parametrize("settings", [{**FAST, "max_job_runtime": 0.05}])
def test_run_sliced_many_times_resumes_after_its_cursor_without_repeating(
    app: t.Any, mtasks: t.Any
) -> None:
    seed_items(40)
    interruptions: list[int] = []

    def interrupted(sender: t.Any, run: t.Any, payload: t.Any) -> None:
        interruptions.append(run.id)

    with signals.run_interrupted.connected_to(interrupted, sender=app):
        run = mtasks.run("CountItemsTask", arguments={"sleep": 0.005})
        drain(app)

    run = fresh_run(run.id)
    assert run.status == "succeeded", run.error_message
    assert len(interruptions) >= 2
    assert run.tick_count == 40
    assert counters() == [1] * 40


def test_in_batches_run_counts_batches_and_updates_every_row_once(
    app: t.Any, mtasks: t.Any
) -> None:
    seed_items(25)

    run = mtasks.run("CountItemsInBatchesTask", arguments={"of": 10})
    drain(app)

    run = fresh_run(run.id)
    assert (run.status, run.tick_count, run.tick_total) == ("succeeded", 3, 3)
    assert run.cursor == 25
    assert counters() == [1] * 25


def test_multi_column_cursor_run_processes_each_selected_row_once(
    app: t.Any, mtasks: t.Any, db: t.Any
) -> None:
    seed_items(30)
    db.session.execute(sa.update(Item).where(Item.id == 5).values(title="skip"))
    db.session.commit()

    run = mtasks.run("CountByGroupTask")
    drain(app)

    run = fresh_run(run.id)
    assert (run.status, run.tick_count, run.tick_total) == ("succeeded", 29, 29)
    assert run.cursor == [2, 29]
    assert counters() == [0 if n == 5 else 1 for n in range(1, 31)]


def test_list_collection_run_processes_items_in_order(app: t.Any, mtasks: t.Any) -> None:
    run = mtasks.run("ListTask")
    drain(app)

    run = fresh_run(run.id)
    assert (run.status, run.tick_count, run.tick_total, run.cursor) == ("succeeded", 5, 5, 4)
    assert kinds.EVENTS == ["a", "b", "c", "d", "e"]


def test_no_collection_run_processes_once(app: t.Any, mtasks: t.Any, db: t.Any) -> None:
    run = mtasks.run("OnceTask")
    drain(app)

    run = fresh_run(run.id)
    assert (run.status, run.tick_count, run.tick_total) == ("succeeded", 1, 1)
    assert db.session.scalars(sa.select(Flag.value)).all() == ["done"]


def test_custom_enumerator_run_has_unknown_total(app: t.Any, mtasks: t.Any) -> None:
    run = mtasks.run("SquaresTask", arguments={"upto": 4})
    drain(app)

    run = fresh_run(run.id)
    assert (run.status, run.tick_count, run.tick_total, run.cursor) == ("succeeded", 4, None, 4)
    assert kinds.EVENTS == [1, 4, 9, 16]


def test_count_method_overrides_the_collection_size(app: t.Any, mtasks: t.Any) -> None:
    seed_items(3)

    run = mtasks.run("CountWithCustomCountTask")
    drain(app)

    run = fresh_run(run.id)
    assert (run.status, run.tick_count, run.tick_total) == ("succeeded", 3, 42)


def test_select_with_order_by_errors_the_run_with_a_clear_message(
    app: t.Any, mtasks: t.Any
) -> None:
    seed_items(3)

    run = mtasks.run("UnitOrderedItemsTask")
    drain(app)

    run = fresh_run(run.id)
    assert (run.status, run.error_class) == ("errored", "ConfigurationError")
    assert "UnitOrderedItemsTask#collection cannot use ORDER BY" in run.error_message
    assert counters() == [0, 0, 0]


# -- Select: keyset pagination -------------------------------------------------------


def test_select_yields_records_in_primary_key_order_with_their_id_as_cursor(app: t.Any) -> None:
    seed_items(4)

    pairs = walk(AllItemsTask())

    assert [(item.id, item.title, cursor) for item, cursor in pairs] == [
        (1, "item-1", 1),
        (2, "item-2", 2),
        (3, "item-3", 3),
        (4, "item-4", 4),
    ]


def test_select_resumed_after_any_cursor_yields_exactly_the_rest(app: t.Any) -> None:
    seed_items(23)
    everything = walk(SmallPagesTask())

    for position, (_, cursor) in enumerate(everything):
        assert ids(walk(SmallPagesTask(), cursor)) == ids(everything[position + 1 :])


def test_select_resumed_after_a_deleted_row_carries_on_after_it(app: t.Any, db: t.Any) -> None:
    seed_items(6)
    db.session.execute(sa.delete(Item).where(Item.id.in_([3, 4])))
    db.session.commit()

    assert ids(walk(AllItemsTask(), 3)) == [5, 6]


def test_select_fetches_batch_size_rows_per_query(app: t.Any, db: t.Any) -> None:
    seed_items(23)
    statements: list[str] = []

    def record(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", record)
    try:
        pairs = walk(SmallPagesTask())
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", record)

    assert len(pairs) == 23
    assert len(statements) == 5  # 5 + 5 + 5 + 5 + 3 rows


def test_select_keeps_its_where_clause(app: t.Any) -> None:
    seed_items(9)

    assert ids(walk(SelectAttributeTask())) == [2, 5, 8]


def test_multi_column_cursor_orders_by_the_columns_and_yields_lists(app: t.Any) -> None:
    seed_items(7)

    pairs = walk(ByGroupTask())

    assert [cursor for _, cursor in pairs] == [
        [0, 3],
        [0, 6],
        [1, 1],
        [1, 4],
        [1, 7],
        [2, 2],
        [2, 5],
    ]
    assert [item.id for item, _ in pairs] == [3, 6, 1, 4, 7, 2, 5]


def test_multi_column_cursor_resumes_by_row_value_comparison(app: t.Any) -> None:
    seed_items(20)
    everything = walk(ByGroupTask())

    for position, (_, cursor) in enumerate(everything):
        assert ids(walk(ByGroupTask(), cursor)) == ids(everything[position + 1 :])


def test_cursor_columns_by_name_and_by_attribute_walk_alike(app: t.Any) -> None:
    seed_items(10)

    assert walk(ByGroupNamesTask(), [1, 4]) == walk(ByGroupTask(), [1, 4])
    assert ids(walk(ByGroupNamesTask(), [1, 4])) == [7, 10, 2, 5, 8]


def test_cursor_not_matching_cursor_columns_is_refused(app: t.Any) -> None:
    seed_items(3)

    with pytest.raises(ValueError, match="does not match cursor_columns"):
        walk(ByGroupTask(), 2)


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        (sa.select(Item).order_by(Item.id), "cannot use ORDER BY"),
        (sa.select(Item).limit(10), "cannot use LIMIT or OFFSET"),
        (sa.select(Item).offset(10), "cannot use LIMIT or OFFSET"),
        (sa.select(Item.title), "must select its cursor_columns (default: the primary key)"),
        (sa.select(Item, Flag), "must select exactly one ORM entity"),
        (sa.select(sa.literal(1)), "must select exactly one ORM entity"),
    ],
)
def test_unusable_select_is_rejected_with_a_clear_error(
    app: t.Any, statement: t.Any, message: str
) -> None:
    class BadSelectTask(Task):
        collection = statement

    with pytest.raises(ConfigurationError, match=f"^BadSelectTask.*{re.escape(message)}"):
        sources.source_of(BadSelectTask()).iterate(None)
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        BadSelectTask().count()


@pytest.mark.parametrize("column", ["nope", "__table__", 42, Flag.name])
def test_cursor_column_that_is_not_a_column_of_the_entity_is_rejected(
    app: t.Any, column: t.Any
) -> None:
    class BadColumnsTask(AllItemsTask):
        cursor_columns = (column, "id")

    with pytest.raises(ConfigurationError, match="BadColumnsTask.cursor_columns"):
        sources.source_of(BadColumnsTask()).iterate(None)


# -- in_batches --------------------------------------------------------------------


def test_in_batches_yields_batches_of_primary_keys_with_the_last_as_cursor(app: t.Any) -> None:
    seed_items(25)

    pairs = walk(ItemsInBatchesTask())

    assert [(batch.ids, cursor) for batch, cursor in pairs] == [
        (list(range(1, 11)), 10),
        (list(range(11, 21)), 20),
        (list(range(21, 26)), 25),
    ]
    assert [len(batch) for batch, _ in pairs] == [10, 10, 5]


def test_in_batches_resumed_after_a_cursor_starts_with_the_next_batch(app: t.Any) -> None:
    seed_items(25)

    pairs = walk(ItemsInBatchesTask(), 10)

    assert [batch.ids for batch, _ in pairs] == [list(range(11, 21)), list(range(21, 26))]


def test_in_batches_keeps_the_where_clause_of_its_select(app: t.Any) -> None:
    seed_items(12)

    pairs = walk(GroupOneInBatchesTask())

    assert [(batch.ids, cursor) for batch, cursor in pairs] == [([1, 4, 7], 7), ([10], 10)]


def test_batch_where_restricts_an_update_to_the_batch(app: t.Any, db: t.Any) -> None:
    seed_items(25)
    batch, _ = walk(ItemsInBatchesTask(), 10)[0]

    db.session.execute(batch.where(sa.update(Item).values(counter=Item.counter + 1)))
    db.session.commit()

    assert counters() == [0] * 10 + [1] * 10 + [0] * 5


def test_batch_select_reads_the_batch_records(app: t.Any, db: t.Any) -> None:
    seed_items(25)
    batch, _ = walk(ItemsInBatchesTask())[2]

    titles = db.session.scalars(batch.select().order_by(Item.id)).all()

    assert [item.title for item in titles] == [f"item-{n}" for n in range(21, 26)]


def test_in_batches_of_a_select_of_primary_keys_is_accepted(app: t.Any) -> None:
    class IdsInBatchesTask(Task):
        collection = in_batches(sa.select(Item.id).where(Item.group == 0), of=2)

    seed_items(9)

    assert [batch.ids for batch, _ in walk(IdsInBatchesTask())] == [[3, 6], [9]]


def test_in_batches_of_an_ordered_select_is_rejected(app: t.Any) -> None:
    class OrderedBatchesTask(Task):
        collection = in_batches(sa.select(Item).order_by(Item.title))

    with pytest.raises(ConfigurationError, match="OrderedBatchesTask#collection cannot use ORDER"):
        sources.source_of(OrderedBatchesTask()).iterate(None)


@pytest.mark.parametrize("size", [0, -1])
def test_in_batches_of_less_than_one_row_is_rejected(size: int) -> None:
    with pytest.raises(ConfigurationError, match="batch size must be at least 1"):
        in_batches(sa.select(Item), of=size)


# -- composite primary keys and datetime cursors -------------------------------


class _PairsBase(DeclarativeBase):
    pass


class Pair(_PairsBase):
    __tablename__ = "unit_pairs"

    a: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    b: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    at: Mapped[dt.datetime] = mapped_column(sa.DateTime())
    done: Mapped[bool] = mapped_column(default=False)
    note: Mapped[str | None] = mapped_column(sa.String(20))


class PairsTask(Task):
    collection = sa.select(Pair)
    batch_size = 3


class PairsByTimeTask(PairsTask):
    cursor_columns = ("at", "a", "b")


class PairsByNoteTask(PairsTask):
    cursor_columns = ("note", "a", "b")


class PairsInBatchesTask(Task):
    collection = in_batches(sa.select(Pair), of=5)


EPOCH = dt.datetime(2024, 2, 29, 12, 0, 0, 123456)


@pytest.fixture
def pairs(app: t.Any, db: t.Any) -> t.Iterator[list[tuple[int, int]]]:
    """12 rows keyed (a, b); ``at`` repeats, so a time cursor needs the key as tie-breaker."""
    _PairsBase.metadata.create_all(db.engine)
    keys = [(a, b) for a in range(1, 5) for b in range(1, 4)]
    db.session.execute(
        sa.insert(Pair),
        [{"a": a, "b": b, "at": EPOCH + dt.timedelta(minutes=(a * b) % 4)} for a, b in keys],
    )
    db.session.commit()
    yield keys
    db.session.rollback()
    db.session.remove()
    _PairsBase.metadata.drop_all(db.engine)


def test_composite_primary_key_yields_list_cursors_and_resumes(pairs: list[t.Any]) -> None:
    everything = walk(PairsTask())

    assert [cursor for _, cursor in everything] == [[a, b] for a, b in pairs]
    for position, (_, cursor) in enumerate(everything):
        rest = [(p.a, p.b) for p, _ in walk(PairsTask(), cursor)]
        assert rest == pairs[position + 1 :]


def test_datetime_cursor_survives_json_and_resumes_exactly(pairs: list[t.Any]) -> None:
    expected = sorted(((EPOCH + dt.timedelta(minutes=(a * b) % 4), a, b) for a, b in pairs))

    everything = walk(PairsByTimeTask())

    assert [(p.at, p.a, p.b) for p, _ in everything] == expected
    assert everything[0][1] == [EPOCH.isoformat(), 2, 2]
    for position, (_, cursor) in enumerate(everything):
        rest = [(p.at, p.a, p.b) for p, _ in walk(PairsByTimeTask(), cursor)]
        assert rest == expected[position + 1 :]


def test_batch_of_composite_keys_restricts_an_update_to_its_rows(
    pairs: list[t.Any], db: t.Any
) -> None:
    batches = walk(PairsInBatchesTask())
    first, cursor = batches[0]

    db.session.execute(first.where(sa.update(Pair).values(done=True)))
    db.session.commit()

    assert first.ids == pairs[:5]
    assert cursor == [2, 2]
    assert [len(batch) for batch, _ in batches] == [5, 5, 2]
    done = db.session.execute(sa.select(Pair.a, Pair.b).where(Pair.done)).all()
    assert sorted(tuple(row) for row in done) == pairs[:5]


def test_null_in_a_cursor_column_stops_the_walk_with_a_clear_error(pairs: list[t.Any]) -> None:
    with pytest.raises(ValueError, match="cannot contain NULL"):
        walk(PairsByNoteTask())


# -- lists, no collection, custom enumerators (no database) ---------------------------


class LettersTask(Task):
    collection = ["a", "b", "c", "d"]


class LettersTupleTask(Task):
    def collection(self) -> t.Any:
        return ("a", "b", "c")


class OnceOnlyTask(Task):
    collection = no_collection()


class CountdownTask(Task):
    """Has both; the enumerator wins."""

    collection = ["never", "used"]

    def enumerator(self, cursor: t.Any) -> t.Iterator[tuple[str, int]]:
        start = 3 if cursor is None else cursor - 1
        for n in range(start, 0, -1):
            yield f"t-{n}", n


def test_list_collection_yields_items_with_their_index_as_cursor() -> None:
    assert walk(LettersTask()) == [("a", 0), ("b", 1), ("c", 2), ("d", 3)]


def test_list_collection_resumed_after_a_cursor_skips_what_was_done() -> None:
    assert walk(LettersTask(), 1) == [("c", 2), ("d", 3)]
    assert walk(LettersTask(), 3) == []


def test_tuple_returned_by_a_collection_method_is_walked_like_a_list() -> None:
    assert walk(LettersTupleTask(), 0) == [("b", 1), ("c", 2)]


def test_no_collection_yields_one_item_only_when_not_yet_done() -> None:
    assert walk(OnceOnlyTask()) == [(sources.NO_ITEM, 0)]
    assert walk(OnceOnlyTask(), 0) == []


def test_custom_enumerator_wins_over_collection_and_gets_the_cursor() -> None:
    assert walk(CountdownTask()) == [("t-3", 3), ("t-2", 2), ("t-1", 1)]
    assert walk(CountdownTask(), 2) == [("t-1", 1)]


def test_default_count_of_a_list_is_its_length() -> None:
    assert LettersTask().count() == 4
    assert LettersTupleTask().count() == 3


def test_default_count_without_a_collection_is_one() -> None:
    assert OnceOnlyTask().count() == 1


def test_default_count_of_a_custom_enumerator_is_unknown() -> None:
    assert CountdownTask().count() is None


def test_default_count_of_a_select_is_its_row_count(app: t.Any) -> None:
    seed_items(10)

    assert AllItemsTask().count() == 10
    assert SelectAttributeTask().count() == 3


@pytest.mark.parametrize(("rows", "batches"), [(0, 0), (1, 1), (20, 2), (21, 3)])
def test_default_count_of_in_batches_is_the_number_of_batches(
    app: t.Any, rows: int, batches: int
) -> None:
    if rows:
        seed_items(rows)

    assert ItemsInBatchesTask().count() == batches


def test_unsupported_collection_is_rejected_naming_the_task_and_the_type() -> None:
    class WordTask(Task):
        collection = "not a collection"

    with pytest.raises(ConfigurationError, match=r"^WordTask#collection must be .* got str\.$"):
        sources.source_of(WordTask()).iterate(None)


def test_task_without_collection_or_enumerator_is_rejected() -> None:
    class EmptyTask(Task):
        pass

    with pytest.raises(ConfigurationError, match="EmptyTask must define collection"):
        sources.source_of(EmptyTask()).iterate(None)
