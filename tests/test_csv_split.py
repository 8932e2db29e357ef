"""Parts of a CSV file: positions at byte targets, bounded walks and their counts (no database).

Cutting a file anywhere and walking the parts must give exactly the rows of
one walk of the whole file: the same values, row numbers, lines and
positions, none missing and none twice.
"""

from __future__ import annotations

import csv
import io
import math
import typing as t

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from flask_maintenance_tasks import CSVFileError, csv_collection
from flask_maintenance_tasks.csv import rows as reading
from flask_maintenance_tasks.csv.rows import CSVCollection, Position

#: One row as a walk gives it: values, number, line and the position after it.
Walked = tuple[dict[str, t.Any], int, int, Position]


def walk(
    data: bytes, spec: CSVCollection, cursor: Position | None, end: int | None
) -> list[Walked]:
    return [
        (dict(row), row.number, row.line, position)
        for row, position in reading.rows(io.BytesIO(data), spec, cursor, end)
    ]


def walk_batches(
    data: bytes, spec: CSVCollection, cursor: Position | None, end: int | None
) -> list[tuple[list[Walked], Position]]:
    assert spec.in_batches
    found = []
    for batch, position in reading.iterate(io.BytesIO(data), spec, cursor, end):
        found.append(([(dict(row), row.number, row.line, {}) for row in batch], position))
    return found


def end_of_file(data: bytes, rows: int) -> Position:
    """The end-of-file position, counted from the bytes alone."""
    lines = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    return {"offset": len(data), "row": rows + 1, "line": lines + 1}


def expected_positions(
    data: bytes, spec: CSVCollection, targets: t.Iterable[int]
) -> list[Position]:
    """The positions of the targets, found from the positions of a whole walk."""
    _, first = reading.read_header(io.BytesIO(data), spec)
    whole = walk(data, spec, None, None)
    starts = [first, *(position for *_, position in whole)]
    last = end_of_file(data, len(whole))
    return [next((p for p in starts if p["offset"] >= target), last) for target in targets]


def walk_parts(data: bytes, spec: CSVCollection, cuts: list[Position]) -> list[list[Walked]]:
    """The rows of each part between consecutive cuts (the first part from the header)."""
    starts: list[Position | None] = [None, *cuts]
    ends: list[int | None] = [cut["offset"] for cut in cuts] + [None]
    return [walk(data, spec, start, end) for start, end in zip(starts, ends, strict=True)]


def check_parts(data: bytes, spec: CSVCollection, cuts: list[Position]) -> None:
    """The parts between ``cuts`` hold the whole walk's rows, each once, numbered alike."""
    whole = walk(data, spec, None, None)
    parts = walk_parts(data, spec, cuts)
    assert [row for part in parts for row in part] == whole
    eof = reading.split_positions(io.BytesIO(data), spec, [len(data)])[0]
    assert eof["row"] == len(whole) + 1
    for start, end, part in zip([None, *cuts], [*cuts, eof], parts, strict=True):
        first_row = 1 if start is None else start["row"]
        if part:
            assert part[0][1] == first_row
        assert first_row + len(part) == end["row"]
        expected = math.ceil(len(part) / spec.in_batches) if spec.in_batches else len(part)
        assert reading.count_between(start, end, spec) == expected


# -- files written by hand ---------------------------------------------------------

FILES: dict[str, tuple[bytes, dict[str, t.Any]]] = {
    "quoted newlines": (
        b'id,text\n1,"a\nb"\n2,"x ""q"" y"\n3,"multi\n\nline, with comma"\n4,plain\n5,""\n',
        {},
    ),
    "crlf": (b'id,text\r\n1,"a\r\nb"\r\n2,c\r\n\r\n3,"d\r\n\r\n"\r\n4,e\r\n', {}),
    "blank lines": (b"\n\nid,v\n\n1,a\n\n\n2,b\n   \n3,c\n\n\n", {}),
    "comments": (
        b'# comment\nid,v\n# c\n1,a\n#x\n#y\n2,"b\n#not a comment"\n3,c\n# trailing\n',
        {"skip_lines": r"^#"},
    ),
    "bom": (b'\xef\xbb\xbfid,name\n1,\xc3\xa9t\xc3\xa9\n2,\xe2\x82\xac\n3,"\xe2\x82\xac\n"\n', {}),
    "semicolons": (b'id;v\n1;"a;b"\n2;"c\nd"\n3;e,f\n', {"delimiter": ";"}),
    "no final newline": (b'id,v\n1,a\n2,"b\nc"\n3,d', {}),
    "no final newline, quoted": (b'id,v\n1,a\n2,"b\nc"', {}),
    "header only": (b"id,v\n", {}),
    "header without newline": (b"id,v", {}),
    "header and blank lines": (b"id,v\n\n\n", {}),
    "escapes": (
        b'id,v\n1,a\\"b\n2,"c\\"\nd"\n 3 , x \n',
        {"escapechar": "\\", "doublequote": False, "strip": True},
    ),
    "latin-1": (b'id,v\n1,\xe9\n2,"\xe9\n\xe9"\n', {"encoding": "latin-1"}),
    "tabs, initial spaces": (
        b'id\tv\n1\t "a\tb"\n2\tc\n',
        {"delimiter": "\t", "skipinitialspace": True},
    ),
    "one column": (b'v\n1\n\n""\n2\n"3\n"\n', {}),
}


@pytest.mark.parametrize("name", list(FILES))
def test_every_target_cuts_between_records(name: str) -> None:
    data, options = FILES[name]
    spec = csv_collection(**options)
    targets = list(range(len(data) + 3))
    positions = reading.split_positions(io.BytesIO(data), spec, targets)
    assert positions == expected_positions(data, spec, targets)
    whole = walk(data, spec, None, None)
    for target, position in zip(targets, positions, strict=True):
        assert reading.split_positions(io.BytesIO(data), spec, [target]) == [position]
        before = walk(data, spec, None, position["offset"])
        after = walk(data, spec, position, None)
        assert before + after == whole
        if after:
            assert after[0][1] == position["row"]
            assert all(row[3]["offset"] > target for row in after)
        else:
            assert position["row"] == len(whole) + 1
        check_parts(data, spec, [position])


@pytest.mark.parametrize("name", list(FILES))
@pytest.mark.parametrize("parts", [1, 2, 3, 8])
def test_equal_parts(name: str, parts: int) -> None:
    data, options = FILES[name]
    spec = csv_collection(**options)
    cuts = reading.split(io.BytesIO(data), spec, parts, len(data))
    assert len(cuts) == parts - 1
    assert cuts == expected_positions(data, spec, [len(data) * i // parts for i in range(1, parts)])
    check_parts(data, spec, cuts)


@pytest.mark.parametrize("name", list(FILES))
@pytest.mark.parametrize("parts", [1, 2, 3, 8])
def test_batches_restart_at_each_part(name: str, parts: int) -> None:
    data, options = FILES[name]
    spec = csv_collection(3, **options)
    cuts = reading.split(io.BytesIO(data), spec, parts, len(data))
    eof = reading.split_positions(io.BytesIO(data), spec, [len(data)])[0]
    whole = [(values, number, line, {}) for values, number, line, _ in walk(data, spec, None, None)]
    seen = []
    for start, end in zip([None, *cuts], [*cuts, eof], strict=True):
        found = walk_batches(data, spec, start, end["offset"])
        assert len(found) == reading.count_between(start, end, spec)
        for batch, position in found:
            assert 1 <= len(batch) <= 3
            assert position["of"] == 3
            assert batch[-1][1] + 1 == position["row"]
            seen.extend(batch)
        if found:
            assert found[0][0][0][1] == (1 if start is None else start["row"])
            assert found[-1][1]["row"] == end["row"] or found[-1][1]["offset"] < end["offset"]
    assert seen == whole


def test_many_rows_in_batches_across_parts() -> None:
    lines = ["id,text"] + [
        f'{i},"line {i}\nnext"' if i % 7 == 0 else f"{i},t{i}" for i in range(1, 101)
    ]
    data = ("\n".join(lines) + "\n").encode()
    spec = csv_collection(3)
    cuts = reading.split(io.BytesIO(data), spec, 8, len(data))
    numbers = []
    batch_count = 0
    for start, end in zip([None, *cuts], [*cuts, None], strict=True):
        for batch, _ in walk_batches(data, spec, start, None if end is None else end["offset"]):
            batch_count += 1
            numbers.extend(number for _, number, _, _ in batch)
    assert numbers == list(range(1, 101))
    assert sorted(int(values["id"]) for values, *_ in walk(data, spec, None, None)) == numbers
    eof = reading.split_positions(io.BytesIO(data), spec, [len(data)])[0]
    assert batch_count == sum(
        reading.count_between(start, end, spec)
        for start, end in zip([None, *cuts], [*cuts, eof], strict=True)
    )
    assert batch_count > math.ceil(100 / 3)  # each of the 8 parts ends a batch


def test_targets_in_any_order_and_repeated() -> None:
    data, options = FILES["quoted newlines"]
    spec = csv_collection(**options)
    targets = [30, 0, 30, 10_000, 12]
    assert reading.split_positions(io.BytesIO(data), spec, targets) == expected_positions(
        data, spec, targets
    )
    assert reading.split_positions(io.BytesIO(data), spec, []) == []


def test_split_refuses_no_parts() -> None:
    with pytest.raises(ValueError, match="at least 1 part"):
        reading.split(io.BytesIO(b"a\n1\n"), csv_collection(), 0, 4)


def test_split_reports_a_file_it_cannot_read() -> None:
    with pytest.raises(CSVFileError, match="empty"):
        reading.split_positions(io.BytesIO(b""), csv_collection(), [0])
    with pytest.raises(CSVFileError, match="not valid UTF-8"):
        reading.split_positions(io.BytesIO(b"a\n1\n\xff\n2\n"), csv_collection(), [6])


def test_count_between() -> None:
    spec = csv_collection()
    batched = csv_collection(4)
    start = {"offset": 10, "row": 5, "line": 7}
    end = {"offset": 90, "row": 15, "line": 30}
    assert reading.count_between(start, end, spec) == 10
    assert reading.count_between(None, end, spec) == 14
    assert reading.count_between(start, end, batched) == 3
    assert reading.count_between(start, start, batched) == 0
    # The last part without its end-of-file position: estimated from the line count.
    assert reading.count_between(start, None, spec, line_count=20) == 14
    assert reading.count_between(None, None, batched, line_count=11) == 3
    with pytest.raises(ValueError, match="line_count"):
        reading.count_between(start, None, spec)


def test_a_bounded_walk_stops_before_its_end_without_reading_further() -> None:
    data = b'id,v\n1,a\n2,b\n3,"unterminated\n'
    spec = csv_collection(strict=True)
    cut = reading.split_positions(io.BytesIO(data), spec, [12])[0]
    assert cut == {"offset": 13, "row": 3, "line": 4}
    assert [number for _, number, _, _ in walk(data, spec, None, cut["offset"])] == [1, 2]
    with pytest.raises(CSVFileError, match="Row 3"):
        walk(data, spec, cut, None)


# -- random files --------------------------------------------------------------------

FIELD_CHARACTERS = ["a", "b", " ", ",", ";", "\t", '"', "\n", "\r", "\\", "#", "é", "€"]


@st.composite
def csv_files(draw: st.DrawFn) -> tuple[bytes, dict[str, t.Any]]:
    """A CSV file written by :mod:`csv` with blank and comment lines added, and its options."""
    delimiter = draw(st.sampled_from([",", ";", "\t"]))
    escaped = draw(st.booleans())
    terminator = draw(st.sampled_from(["\n", "\r\n"]))
    width = draw(st.integers(1, 3))
    field = st.text(alphabet=FIELD_CHARACTERS, max_size=5)
    records = draw(st.lists(st.lists(field, min_size=width, max_size=width), max_size=10))
    quoting = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))
    options: dict[str, t.Any] = {"delimiter": delimiter}
    if escaped:
        options.update(escapechar="\\", doublequote=False)
    if draw(st.booleans()):
        options["skip_lines"] = r"^#"
    options["strip"] = draw(st.booleans())
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=terminator, quoting=quoting, **_writer(options))
    writer.writerow([f"c{i}" for i in range(width)])
    for record in records:
        for _ in range(draw(st.integers(0, 2))):
            out.write(draw(st.sampled_from(["", "# note", "  "])) + terminator)
        writer.writerow(record)
    text = out.getvalue()
    if draw(st.booleans()):
        text = text.removesuffix(terminator)
    data = text.encode()
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    return data, options


def _writer(options: dict[str, t.Any]) -> dict[str, t.Any]:
    keys = ("delimiter", "escapechar", "doublequote")
    return {key: value for key, value in options.items() if key in keys}


def whole_walk_or_skip(data: bytes, spec: CSVCollection) -> list[Walked]:
    try:
        return walk(data, spec, None, None)
    except CSVFileError:
        assume(False)
        raise


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(csv_files(), st.data())
def test_random_files_cut_at_random_targets(
    written: tuple[bytes, dict[str, t.Any]], data_: st.DataObject
) -> None:
    data, options = written
    spec = csv_collection(**options)
    whole_walk_or_skip(data, spec)
    targets = data_.draw(st.lists(st.integers(0, len(data) + 2), max_size=6))
    positions = reading.split_positions(io.BytesIO(data), spec, targets)
    assert positions == expected_positions(data, spec, targets)
    cuts = sorted(positions, key=lambda position: position["offset"])
    check_parts(data, spec, cuts)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(csv_files(), st.integers(1, 8), st.integers(1, 4))
def test_random_files_in_equal_parts_and_batches(
    written: tuple[bytes, dict[str, t.Any]], parts: int, size: int
) -> None:
    data, options = written
    spec = csv_collection(size, **options)
    whole = whole_walk_or_skip(data, spec)
    cuts = reading.split(io.BytesIO(data), spec, parts, len(data))
    check_parts(data, spec, cuts)
    eof = reading.split_positions(io.BytesIO(data), spec, [len(data)])[0]
    seen = []
    for start, end in zip([None, *cuts], [*cuts, eof], strict=True):
        found = walk_batches(data, spec, start, end["offset"])
        assert len(found) == reading.count_between(start, end, spec)
        assert all(1 <= len(batch) <= size for batch, _ in found)
        seen.extend(row for batch, _ in found for row in batch)
    assert seen == [(values, number, line, {}) for values, number, line, _ in whole]
