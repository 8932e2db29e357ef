"""CSV tasks with real files: declaring, reading, checking, storing, resuming, downloading."""

from __future__ import annotations

import gzip
import io
import re
import typing as t
import zipfile
from pathlib import Path

import pytest
import sqlalchemy as sa
from werkzeug.datastructures import FileStorage

from flask_maintenance_tasks import CSVFileError, CSVFileTooLarge, csv_collection, csv_download
from flask_maintenance_tasks.csv import rows as reading
from flask_maintenance_tasks.csv.storage import DatabaseStorage, DirectoryStorage
from flask_maintenance_tasks.csv.uploads import stored_name
from flask_maintenance_tasks.exceptions import ConfigurationError
from flask_maintenance_tasks.models import CSVFile, csv_chunks_table
from flask_maintenance_tasks.state import get_state
from flask_maintenance_tasks.testing import _interrupting, run_task, run_task_interrupted
from flask_maintenance_tasks.worker import MaintenanceSimpleWorker
from tests.support.csv_files import items_csv, table_counts, write
from tests.support.records import counters, fresh_run
from tests.support.workers import drain
from tests.testapp import Item, db
from tests.testapp.maintenance.csv_tasks import ImportItemsInBatchesTask
from tests.testapp.maintenance.kinds import EVENTS

# Both databases: CSV files are stored in and read back from the database through runs.
pytestmark = pytest.mark.both_databases


def settings_of(app: t.Any) -> dict[str, t.Any]:
    """The live settings of the app, to change one for a test (the dataclass is frozen)."""
    return t.cast(dict[str, t.Any], app.extensions["maintenance_tasks"].settings.__dict__)


def imported() -> dict[int, str]:
    db.session.remove()
    return {row.id: row.title for row in db.session.execute(sa.select(Item.id, Item.title))}


def perform_one_job(app: t.Any) -> None:
    executor = app.extensions["maintenance_tasks"].executor
    worker = MaintenanceSimpleWorker([executor.queue()], connection=executor.connection)
    worker.work(burst=True, max_jobs=1, with_scheduler=False)


# -- declaring ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"in_batches": 0}, "at least 1"),
        ({"encoding": "utf-16"}, "not supported"),
        ({"encoding": "no-such-codec"}, "unknown encoding"),
        ({"skip_lines": "("}, "skip_lines"),
        ({"delimiter": ";;"}, "delimiter"),
        ({"lineterminator": "\r"}, "lineterminator"),
        ({"no_such_option": 1}, "no_such_option"),
    ],
)
def test_csv_collection_refuses_a_declaration_it_cannot_read_with(options, message):
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        csv_collection(**options)


# -- reading a stream -------------------------------------------------------------

MESSY = (
    b"\xef\xbb\xbf# exported 2026-11-24\r\n"
    b"id,name,notes\r\n"
    b"1,Ada,plain\r\n"
    b"\r\n"
    b'2,Grace,"two\r\nlines"\r\n'
    b"# a comment between rows\r\n"
    b'3,Linus,"a ""quoted"" word"\r\n'
    b"4,Guido,no line break at the end"
)


def test_rows_are_dicts_keyed_by_the_header_knowing_their_number_and_line():
    spec = csv_collection(skip_lines=r"^#")
    found = [row for row, _ in reading.rows(io.BytesIO(MESSY), spec)]
    assert found == [
        {"id": "1", "name": "Ada", "notes": "plain"},
        {"id": "2", "name": "Grace", "notes": "two\r\nlines"},
        {"id": "3", "name": "Linus", "notes": 'a "quoted" word'},
        {"id": "4", "name": "Guido", "notes": "no line break at the end"},
    ]
    assert [(row.number, row.line) for row in found] == [(1, 3), (2, 5), (3, 8), (4, 9)]


def test_every_position_resumes_at_the_next_row_neither_skipping_nor_repeating():
    spec = csv_collection(skip_lines=r"^#")
    everything = list(reading.rows(io.BytesIO(MESSY), spec))
    for index, (_, position) in enumerate(everything):
        after = [row for row, _ in reading.rows(io.BytesIO(MESSY), spec, position)]
        assert after == [row for row, _ in everything[index + 1 :]]
        assert [row.number for row in after] == list(range(index + 2, len(everything) + 1))
    assert everything[-1][1] == {"offset": len(MESSY), "row": 5, "line": 10}


def test_a_cursor_that_is_not_a_csv_position_is_refused():
    spec = csv_collection()
    with pytest.raises(ValueError, match="not a position in a CSV file"):
        list(reading.rows(io.BytesIO(b"a\n1\n"), spec, 17))


# -- inputs ---------------------------------------------------------------------------


ORIGINAL_NAMES = {
    "str path": "items.csv",
    "Path": "items.csv",
    "binary file": "items.csv",
    "(name, file)": "upload.csv",
    "FileStorage": "form.csv",
}


def _inputs(path: Path) -> dict[str, t.Callable[[], t.Any]]:
    return {
        "str path": lambda: str(path),
        "Path": lambda: path,
        "binary file": lambda: open(path, "rb"),  # noqa: SIM115
        "(name, file)": lambda: ("upload.csv", io.BytesIO(path.read_bytes())),
        "FileStorage": lambda: FileStorage(io.BytesIO(path.read_bytes()), filename="form.csv"),
    }


@pytest.mark.parametrize("kind", list(ORIGINAL_NAMES))
def test_a_csv_task_imports_every_row_of_a_file_given_in_any_form(app, mtasks, tmp_path, kind):
    path = write(tmp_path, "items.csv", items_csv(25))
    csv_file = _inputs(path)[kind]()
    run = mtasks.run("ImportItemsTask", csv_file=csv_file)
    if hasattr(csv_file, "close"):
        csv_file.close()
    drain(app)

    run = fresh_run(run.id)
    assert run.status == "succeeded"
    assert run.tick_count == run.tick_total == 25
    assert imported() == {n: f"title {n}" for n in range(1, 26)}
    record = db.session.scalars(sa.select(CSVFile)).one()
    assert record.run_id == run.id
    assert re.fullmatch(r"\d{8}T\d{6}Z_ImportItemsTask\.csv", record.filename)
    assert record.original_filename == ORIGINAL_NAMES[kind]


def test_a_file_opened_as_text_is_refused_with_how_to_open_it(app, mtasks, tmp_path):
    path = write(tmp_path, "items.csv", items_csv(3))
    with open(path) as text, pytest.raises(CSVFileError, match=r"binary mode \('rb'\)"):
        mtasks.run("ImportItemsTask", csv_file=text)
    assert table_counts() == (0, 0, 0)


def test_a_csv_task_without_a_file_is_refused_and_nothing_is_written(app, mtasks):
    with pytest.raises(CSVFileError, match="ImportItemsTask is a CSV task: give it a CSV file"):
        mtasks.run("ImportItemsTask")
    assert table_counts() == (0, 0, 0)


def test_a_file_given_to_a_task_that_is_not_a_csv_task_is_refused(app, mtasks, tmp_path):
    path = write(tmp_path, "items.csv", items_csv(3))
    with pytest.raises(CSVFileError, match="CountItemsTask is not a CSV task"):
        mtasks.run("CountItemsTask", csv_file=path)
    assert table_counts() == (0, 0, 0)


def test_a_missing_path_is_refused(app, mtasks, tmp_path):
    with pytest.raises(CSVFileError, match="CSV file not found: .*nowhere.csv"):
        mtasks.run("ImportItemsTask", csv_file=tmp_path / "nowhere.csv")
    assert table_counts() == (0, 0, 0)


def test_a_collection_method_returning_csv_collection_makes_a_csv_task(app, tmp_path):
    path = write(tmp_path, "pipes.csv", "a|b\n1|2\n3|4\n")
    run = run_task("CSVByMethodTask", {"delimiter": "|"}, csv_file=path)
    assert run.status == "succeeded"
    assert EVENTS == [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}]


def test_reader_options_encoding_comments_and_strip_are_applied(app, tmp_path):
    content = "# Export of 24/11/2026\nnom ; ville\n Zoé ; Orléans \n# fin\nAndré;Besançon\n"
    path = write(tmp_path, "villes.csv", content.encode("latin-1"))
    run = run_task("SemicolonLatin1Task", csv_file=path)
    assert run.status == "succeeded", run.error_message
    assert EVENTS == [{"nom": "Zoé", "ville": "Orléans"}, {"nom": "André", "ville": "Besançon"}]


# -- batches, counts -------------------------------------------------------------------


def test_in_batches_hands_lists_of_rows_and_progress_counts_batches(app, tmp_path):
    path = write(tmp_path, "items.csv", items_csv(25))
    run = run_task("ImportItemsInBatchesTask", csv_file=path)
    assert run.status == "succeeded"
    assert EVENTS == [list(range(1, 11)), list(range(11, 21)), list(range(21, 26))]
    assert run.tick_count == run.tick_total == 3
    assert counters() == [1] * 25


def test_count_is_a_line_count_exact_unless_a_quoted_value_spans_lines(app, tmp_path):
    exact = write(tmp_path, "exact.csv", 'id,title\n1,"a, b"\n2,c\n3,d')
    assert run_task("ImportItemsTask", csv_file=exact).tick_total == 3
    spanning = write(tmp_path, "spanning.csv", 'id,title\n4,"two\nlines"\n5,e\n')
    run = run_task("ImportItemsTask", csv_file=spanning)
    # Documented: each extra line of a quoted value counts as a row.
    assert (run.tick_count, run.tick_total) == (2, 3)


# -- bad files -----------------------------------------------------------------------------


def _xlsx() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("xl/workbook.xml", "<workbook/>")
    return buffer.getvalue()


BAD_FILES: dict[str, tuple[bytes, str]] = {
    "empty": (b"", "items.csv: The CSV file is empty"),
    "blank lines only": (b"\xef\xbb\xbf\n\r\n  \n", "The CSV file is empty"),
    "not UTF-8": (
        "id,title\n1,caf\u00e9\n".encode("latin-1"),
        "Row 1 (line 2) is not valid UTF-8: byte 0xe9 cannot be decoded",
    ),
    "header not UTF-8": (
        "id,t\u00eftle\n1,x\n".encode("cp1252"),
        "The header (line 1) is not valid UTF-8: byte 0xef",
    ),
    "missing required header": (
        b"id,name\n1,x\n",
        "The CSV file has no 'title' column, which the task requires; its header has 'id', 'name'",
    ),
    "ragged row": (
        b"id,title\n1,a\n2,b,extra\n",
        "Row 2 (line 3) has 3 fields, but the header has 2",
    ),
    "short row": (b"id,title\n1\n", "Row 1 (line 2) has 1 field, but the header has 2 columns"),
    "repeated column": (b"id,title,id\n1,a,1\n", "names the column 'id' twice (columns 1 and 3)"),
    "unnamed column": (b"id,,title\n1,a,b\n", "Column 2 of the CSV header has no name"),
    "old Mac line endings": (
        b"id,title\r1,a\r2,b\r",
        r"The header (line 1) cannot be read as CSV: a carriage return (\r) ends a line",
    ),
    "binary": (bytes(range(256)) * 4, "it holds NUL bytes"),
    "Excel workbook": (_xlsx(), "it is an Excel workbook or another ZIP archive"),
    "gzip": (gzip.compress(b"id,title\n1,a\n"), "it is gzip-compressed; decompress it first"),
    "UTF-16": ("id,title\n1,a\n".encode("utf-16"), "UTF-16"),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_a_bad_file_is_refused_before_the_run_starts_saying_what_is_wrong(
    app, mtasks, tmp_path, kind
):
    content, message = BAD_FILES[kind]
    path = write(tmp_path, "items.csv", content)
    with pytest.raises(CSVFileError) as refused:
        mtasks.run("ImportItemsTask", csv_file=path)
    assert message in str(refused.value)
    assert str(refused.value).startswith("items.csv: ")
    assert table_counts() == (0, 0, 0)


def test_a_declared_encoding_reads_what_utf_8_refuses(app, tmp_path):
    content = "nom;ville\nZo\u00e9;Orl\u00e9ans\n".encode("latin-1")
    path = write(tmp_path, "villes.csv", content)
    with pytest.raises(CSVFileError, match="not valid UTF-8"):
        run_task("CSVByMethodTask", {"delimiter": ";"}, csv_file=path)
    assert run_task("SemicolonLatin1Task", csv_file=path).status == "succeeded"


def test_too_large_a_file_is_refused_before_it_is_read_and_nothing_is_written(
    app, mtasks, tmp_path
):
    settings_of(app)["max_csv_bytes"] = 1000
    path = write(tmp_path, "items.csv", items_csv(200))
    with pytest.raises(CSVFileTooLarge) as refused:
        mtasks.run("ImportItemsTask", csv_file=path)
    assert refused.value.limit == 1000
    assert refused.value.size == path.stat().st_size
    assert "items.csv is too large: the limit is 1,000 bytes" in str(refused.value)
    assert table_counts() == (0, 0, 0)


class _Pipe(io.RawIOBase):
    """A stream that cannot seek, like a pipe or a socket."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: t.Any) -> int:
        return self._data.readinto(buffer)


def test_too_large_a_stream_is_refused_once_past_the_limit(app, mtasks):
    settings_of(app)["max_csv_bytes"] = 1000
    with pytest.raises(CSVFileTooLarge, match="limit is 1,000 bytes .* has more than that"):
        mtasks.run("ImportItemsTask", csv_file=("piped.csv", _Pipe(items_csv(200).encode())))
    assert table_counts() == (0, 0, 0)
    run = mtasks.run("ImportItemsTask", csv_file=("piped.csv", _Pipe(items_csv(20).encode())))
    drain(app)
    assert fresh_run(run.id).status == "succeeded"


def test_a_bad_row_past_the_checked_start_errors_the_run_naming_it(app, mtasks, tmp_path):
    settings_of(app)["ticker_delay"] = 0.05  # some ticks commit before row 1,100
    rows = items_csv(1400, pad=85).splitlines(keepends=True)  # titles fit in 100 characters
    rows[1100] = "1100,bad,row\n"  # line 1,101 holds row 1,100
    path = write(tmp_path, "items.csv", "".join(rows))
    assert path.stat().st_size > 2 * reading.PREFLIGHT_BYTES

    run = mtasks.run("ImportItemsTask", csv_file=path)
    drain(app)
    run = fresh_run(run.id)
    assert run.status == "errored"
    assert run.error_class == "CSVFileError"
    assert run.error_message == "Row 1,100 (line 1,101) has 3 fields, but the header has 2 columns."
    assert run.errored_element is None
    # Every committed tick is imported once, nothing beyond the last one.
    done = run.cursor["row"] - 1
    assert 0 < done < 1100
    assert run.tick_count == done
    assert counters() == [1] * done


def test_text_that_is_not_utf_8_deep_in_the_file_errors_the_run_naming_the_row(app, tmp_path):
    good = items_csv(1000, pad=80).encode()
    assert len(good) > reading.PREFLIGHT_BYTES
    path = write(tmp_path, "items.csv", good + "1001,Andr\u00e9\n".encode("cp1252"))
    run = run_task("ImportItemsTask", csv_file=path)
    assert run.status == "errored"
    assert run.error_message.startswith(
        "Row 1,001 (line 1,002) is not valid UTF-8: byte 0xe9 cannot be decoded."
    )


def test_an_error_in_process_names_the_csv_row_it_was_processing(app, tmp_path):
    path = write(tmp_path, "items.csv", "id,title\n1,a\n2,b\nthree,c\n4,d\n")
    run = run_task("ImportItemsTask", csv_file=path)
    assert run.status == "errored"
    assert run.error_message == "invalid literal for int() with base 10: 'three'"
    assert run.errored_element == {
        "class": "CSV row",
        "row": 3,
        "line": 4,
        "values": {"id": "three", "title": "c"},
    }
    run = run_task("ImportItemsInBatchesTask", csv_file=path)
    assert run.errored_element == {"class": "CSV rows", "rows": [1, 4], "line": 2}


# -- resuming -------------------------------------------------------------------------------


def test_a_run_interrupted_again_and_again_imports_every_row_once(app, tmp_path):
    get_state(app).csv_storage = DatabaseStorage(chunk_size=256)
    path = write(tmp_path, "items.csv", items_csv(1500))
    run = run_task_interrupted("ImportItemsTask", csv_file=path, every=125)
    assert run.status == "succeeded"
    assert run.tick_count == run.tick_total == 1500
    assert counters() == [1] * 1500
    assert db.session.scalar(sa.select(sa.func.count()).select_from(csv_chunks_table)) > 50


def test_changing_in_batches_between_two_runs_neither_skips_nor_repeats_a_row(
    app, mtasks, tmp_path, monkeypatch
):
    path = write(tmp_path, "items.csv", items_csv(95))
    batches = 0

    def after_three_batches() -> bool:
        nonlocal batches
        batches += 1
        return batches == 3

    with _interrupting(ImportItemsInBatchesTask, after_three_batches):
        run = mtasks.run("ImportItemsInBatchesTask", csv_file=path)
        perform_one_job(app)
    assert fresh_run(run.id).status == "interrupted"
    mtasks.pause(run.id)
    perform_one_job(app)
    paused = fresh_run(run.id)
    assert paused.status == "paused"
    assert paused.cursor["row"] == 31 and paused.tick_total == 10

    monkeypatch.setattr(
        ImportItemsInBatchesTask,
        "collection",
        csv_collection(in_batches=7, required_headers=("id", "title")),
    )
    mtasks.resume(run.id)
    drain(app)

    run = fresh_run(run.id)
    assert run.status == "succeeded"
    assert EVENTS[:3] == [list(range(1, 11)), list(range(11, 21)), list(range(21, 31))]
    assert EVENTS[3:] == [list(range(n, min(n + 7, 96))) for n in range(31, 96, 7)]
    assert counters() == [1] * 95
    # Three batches of ten, then ten of seven: the total follows the new size.
    assert run.tick_count == run.tick_total == 13


def test_a_run_reads_its_chunks_while_its_own_tick_holds_many_writes(app, tmp_path):
    # SQLite locks the whole file once a writer spills its page cache: a
    # chunk read on another connection would then wait for the tick's commit.
    settings_of(app)["ticker_delay"] = 60.0
    get_state(app).csv_storage = DatabaseStorage(chunk_size=2048)
    if db.engine.dialect.name == "sqlite":
        sa.event.listen(db.engine, "connect", lambda dbapi, _: dbapi.execute("PRAGMA cache_size=2"))
        db.engine.dispose()
    path = write(tmp_path, "items.csv", items_csv(1500, pad=60))
    run = run_task("ImportItemsInBatchesTask", csv_file=path)
    assert run.status == "succeeded", run.error_message
    assert counters() == [1] * 1500


def test_reading_a_csv_file_costs_no_statement_per_row(app, mtasks, tmp_path):
    path = write(tmp_path, "rows.csv", items_csv(20_000))  # about 320 KB: one chunk
    run = mtasks.run("RecordRowsTask", csv_file=path)
    statements: list[str] = []

    def record(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
        statements.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", record)
    try:
        drain(app)
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", record)
    assert fresh_run(run.id).status == "succeeded"
    assert len(EVENTS) == 20_000
    # The file record (to count, then to open it), its size, and its one chunk.
    assert sum("maintenance_tasks_csv" in statement for statement in statements) == 4
    assert len(statements) < 50


def test_the_database_storage_reads_at_an_offset_without_reading_earlier_chunks(app):
    storage = DatabaseStorage(chunk_size=100)
    content = bytes(range(256)) * 40
    key = storage.save("x.csv", io.BytesIO(content))
    statements: list[str] = []

    def record(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
        if "maintenance_tasks_csv_chunks" in statement:
            statements.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", record)
    try:
        with storage.open(key) as stream:
            stream.seek(9_950)
            assert stream.read(100) == content[9_950:10_050]
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", record)
    # The size, then the chunk at 9,900 and the one at 10,000: never the 99 before.
    assert len(statements) == 3
    assert storage.size(key) == len(content)
    storage.delete(key)
    with pytest.raises(FileNotFoundError):
        storage.size(key)


# -- downloading --------------------------------------------------------------------------


def test_csv_download_streams_the_stored_file_under_its_stored_name(app, mtasks, tmp_path):
    get_state(app).csv_storage = DatabaseStorage(chunk_size=4096)
    content = items_csv(3000).encode()
    run = mtasks.run("ImportItemsTask", csv_file=write(tmp_path, "mine.csv", content))
    download = csv_download(run)
    assert download is not None
    assert re.fullmatch(r"\d{8}T\d{6}Z_ImportItemsTask\.csv", download.filename)
    assert download.size == len(content)
    blocks = list(download.chunks)
    assert b"".join(blocks) == content
    assert max(len(block) for block in blocks) <= 64 * 1024
    assert csv_download(run.id).filename == download.filename


def test_status_shows_the_run_s_csv_file(app, mtasks, tmp_path):
    run = mtasks.run("ImportItemsTask", csv_file=write(tmp_path, "mine.csv", items_csv(2)))
    result = app.test_cli_runner().invoke(args=["mtasks", "status", str(run.id)])
    assert result.exit_code == 0, result.output
    assert re.search(
        r"  CSV file: \d{8}T\d{6}Z_ImportItemsTask\.csv \(29 bytes, given as mine\.csv\)\n",
        result.output,
    )


def test_csv_download_of_a_run_without_a_file_is_none(app, mtasks):
    run = mtasks.run("ListTask")
    assert csv_download(run) is None


def test_the_directory_storage_never_overwrites_a_file_and_keeps_to_its_directory(tmp_path):
    storage = DirectoryStorage(tmp_path / "files")
    first = storage.save("20261124T083005Z_T.csv", io.BytesIO(b"a\n1\n"))
    second = storage.save("20261124T083005Z_T.csv", io.BytesIO(b"a\n2\n"))
    assert (first, second) == ("20261124T083005Z_T.csv", "20261124T083005Z_T-2.csv")
    with storage.open(second) as stream:
        assert stream.read() == b"a\n2\n"
    assert {p.name for p in (tmp_path / "files").iterdir()} == {first, second}
    for key in ("../outside.csv", ".hidden", ""):
        with pytest.raises(ValueError, match="is not a key"):
            storage.open(key)
    storage.delete(first)
    storage.delete(first)
    assert storage.size(second) == 4


def test_stored_names_are_the_utc_time_and_the_task_name():
    import datetime as dt

    moment = dt.datetime(2026, 11, 24, 10, 30, 5, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert stored_name("billing.ImportTask", moment) == "20261124T083005Z_billing.ImportTask.csv"
