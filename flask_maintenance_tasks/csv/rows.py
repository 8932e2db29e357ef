"""CSV collections: the rows of a run's CSV file, streamed from a saved position.

A CSV task declares ``collection = csv_collection(...)``. Its run reads the
stored file as a stream, one line at a time, and never holds more of it than
one row (or one batch of rows with ``in_batches``). The cursor saved after
each row is a small JSON object::

    {"offset": 48213, "row": 1201, "line": 1202}

``offset`` is the byte offset at which the next row starts, ``row`` that
row's number (data rows count from 1, the header is not a row) and ``line``
the file's line number where it starts (the header is line 1). A resumed or
re-sliced run seeks straight to ``offset``: reaching row 900,000 costs one
seek, not 900,000 parsed rows. Because the position is a row, not a batch,
changing ``in_batches`` between two slices neither skips nor repeats a row
(``"of"`` records the batch size the position was written with).
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import io
import math
import re
import typing as t

from ..exceptions import ConfigurationError, CSVFileError, LazyNumber
from ..i18n import LazyString, lazy_gettext

#: Bytes read from the start of an upload to check it before a run starts.
PREFLIGHT_BYTES = 64 * 1024
#: A line longer than this is refused: CSV rows end with a line break, and a
#: file without any is not CSV (and would otherwise be read whole).
MAX_LINE_BYTES = 4 * 1024 * 1024

#: The JSON position of the next row; see the module's documentation.
Position = dict[str, int]

#: The refusal of a file without even a header.
_EMPTY: t.Final = lazy_gettext(
    "The CSV file is empty: it needs a header line naming the columns, then one line per row."
)

# Signatures of files that are often uploaded by mistake for a CSV file.
_SIGNATURES: tuple[tuple[bytes, LazyString], ...] = (
    (
        b"PK\x03\x04",
        lazy_gettext(
            "This is not a CSV file: it is an Excel workbook or another ZIP archive; "
            "export the sheet as CSV (UTF-8)."
        ),
    ),
    (
        b"\x1f\x8b",
        lazy_gettext("This is not a CSV file: it is gzip-compressed; decompress it first."),
    ),
    (
        b"\xd0\xcf\x11\xe0",
        lazy_gettext(
            "This is not a CSV file: it is an old-style Excel (.xls) or other Office file; "
            "export it as CSV."
        ),
    ),
    (b"%PDF-", lazy_gettext("This is not a CSV file: it is a PDF document.")),
    (
        b"\xff\xfe",
        lazy_gettext(
            'This is not a CSV file: it is UTF-16 text (Excel\'s "Unicode text"); '
            "save it as CSV UTF-8."
        ),
    ),
    (
        b"\xfe\xff",
        lazy_gettext("This is not a CSV file: it is UTF-16 text; save it as CSV UTF-8."),
    ),
)


@dataclasses.dataclass(frozen=True, eq=False)
class CSVCollection:
    """What ``csv_collection(...)`` declares; see :func:`csv_collection`."""

    in_batches: int | None
    skip_lines: re.Pattern[str] | None
    strip: bool
    encoding: str
    required_headers: tuple[str, ...]
    reader_options: t.Mapping[str, t.Any]

    def rows_count(self, line_count: int) -> int:
        """Rows (or batches) expected in a file of ``line_count`` lines: the header is one."""
        rows = max(line_count - 1, 0)
        return math.ceil(rows / self.in_batches) if self.in_batches else rows

    @property
    def encoding_name(self) -> str:
        """The encoding as people call it: ``UTF-8`` for ``utf-8-sig``."""
        name = codecs.lookup(self.encoding).name
        return "UTF-8" if name in ("utf-8", "utf-8-sig") else self.encoding


def _ascii_compatible(encoding: str) -> bool:
    # Lines are found by their b"\n" byte, so the encoding must write the
    # characters CSV relies on as their ASCII bytes (UTF-16 does not).
    sample = "\n\r\t ,;|\"'#=-_.:abcxyzABCXYZ0123456789"
    try:
        return sample.encode("ascii").decode(encoding) == sample
    except UnicodeDecodeError:
        return False


def csv_collection(
    in_batches: int | None = None,
    *,
    skip_lines: str | re.Pattern[str] | None = None,
    strip: bool = False,
    encoding: str = "utf-8-sig",
    required_headers: t.Iterable[str] = (),
    **csv_reader_options: t.Any,
) -> CSVCollection:
    """Declare a CSV task: ``collection = csv_collection()``.

    A run of the task needs a CSV file, given when the run is started. The
    file's first line is its header; ``process(row)`` gets each following row
    as a ``dict`` of header to value (a :class:`CSVRow`, which also knows its
    ``number`` and ``line``).

    :param in_batches: hand ``process`` lists of up to this many rows;
        progress then counts batches.
    :param skip_lines: a regular expression; lines it matches (``re.search``,
        line break excluded) are ignored, such as comments: ``r"^#"``. It is
        tried on the first line of each record, the header included.
    :param strip: trim spaces around every value and header name.
    :param encoding: the file's encoding; the default reads UTF-8 and drops a
        byte-order mark. It must write ASCII as ASCII (``latin-1``,
        ``cp1252`` and ``shift_jis`` do; UTF-16 does not).
    :param required_headers: column names the header must have, checked when
        the run is started.
    :param csv_reader_options: options of :func:`csv.reader`: ``delimiter``,
        ``quotechar``, ``escapechar``, ``doublequote``, ``skipinitialspace``,
        ``quoting``, ``strict`` or ``dialect``.

    Blank lines are skipped. A row with more or fewer fields than the header
    errors the run, naming the row and line.

    .. versionadded:: 0.1
    """
    if in_batches is not None and (
        isinstance(in_batches, bool) or not isinstance(in_batches, int) or in_batches < 1
    ):
        raise ConfigurationError(
            f"csv_collection(in_batches={in_batches!r}): give a number of rows of at least 1, "
            "or None for one row at a time."
        )
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ConfigurationError(f"csv_collection: unknown encoding {encoding!r}.") from None
    if not _ascii_compatible(encoding):
        raise ConfigurationError(
            f"csv_collection: the encoding {encoding!r} is not supported: CSV files are read "
            "line by line, which needs an encoding that writes ASCII as ASCII (UTF-8, latin-1, "
            "cp1252, ...). Convert the file to UTF-8 first."
        )
    if isinstance(skip_lines, str):
        try:
            pattern: re.Pattern[str] | None = re.compile(skip_lines)
        except re.error as exc:
            raise ConfigurationError(f"csv_collection(skip_lines={skip_lines!r}): {exc}") from None
    elif skip_lines is None or isinstance(skip_lines, re.Pattern):
        pattern = skip_lines
    else:
        raise ConfigurationError("csv_collection(skip_lines=...) takes a regular expression.")
    try:
        csv.reader([], **csv_reader_options)
    except (TypeError, csv.Error) as exc:
        raise ConfigurationError(f"csv_collection: {exc}") from None
    if "lineterminator" in csv_reader_options:
        raise ConfigurationError(
            "csv_collection: lineterminator is not read by csv.reader; lines end with \\n "
            "or \\r\\n."
        )
    return CSVCollection(
        in_batches=in_batches,
        skip_lines=pattern,
        strip=bool(strip),
        encoding=encoding,
        required_headers=tuple(str(name) for name in required_headers),
        reader_options=dict(csv_reader_options),
    )


class CSVRow(dict[str, t.Any]):
    """One row of a CSV file: a ``dict`` of header to value, which knows where it was.

    :attr:`number` is the row's number (the first row after the header is 1)
    and :attr:`line` the line of the file where it starts (the header is
    line 1); they differ when a quoted value spans lines or lines are skipped.
    """

    __slots__ = ("line", "number")

    def __init__(self, items: t.Iterable[tuple[str, t.Any]], number: int, line: int) -> None:
        super().__init__(items)
        self.number = number
        self.line = line

    def __repr__(self) -> str:
        return f"<CSVRow {self.number} (line {self.line}) {dict.__repr__(self)}>"


# -- reading ---------------------------------------------------------------


class _Records:
    """The records of a CSV byte stream, tracking the byte offset and line number.

    The stream is read one line at a time, decoded and handed to
    :func:`csv.reader`, which asks for a line only when it needs one: once a
    record comes back, ``offset`` is exactly where the next one starts.
    """

    def __init__(self, stream: t.BinaryIO, spec: CSVCollection, offset: int, line: int) -> None:
        self.stream = stream
        self.spec = spec
        #: Bytes consumed, from the start of the file.
        self.offset = offset
        #: Number of the next line to read.
        self.line = line
        #: First line of the record being read.
        self.record_line = line
        self._at_record_start = True
        self._decoder = codecs.getincrementaldecoder(spec.encoding)("strict")
        self._reader = csv.reader(self._lines(), **spec.reader_options)

    def where(self, row: int | None) -> LazyString:
        """``Row 12 (line 13)``, or ``The header (line 1)`` before the first row."""
        if row is None:
            return lazy_gettext("The header (line %(line)s)", line=LazyNumber(self.record_line))
        return lazy_gettext(
            "Row %(row)s (line %(line)s)", row=LazyNumber(row), line=LazyNumber(self.record_line)
        )

    def _lines(self) -> t.Iterator[str]:
        readline = self.stream.readline
        decode = self._decoder.decode
        skip = self.spec.skip_lines
        while True:
            raw = readline(MAX_LINE_BYTES + 1)
            if not raw:
                decode(b"", True)  # a multi-byte character cut by the end of the file
                return
            number = self.line
            if self._at_record_start:
                self.record_line = number
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                raise _LineTooLong(number)
            try:
                text = decode(raw)
            except UnicodeDecodeError as exc:
                raise _Undecodable(number, raw[exc.start : exc.start + 1]) from None
            self.offset += len(raw)
            self.line += 1
            if self._at_record_start and skip is not None and skip.search(text.rstrip("\r\n")):
                continue
            self._at_record_start = False
            yield text

    def next_record(self, row: int | None) -> list[str] | None:
        """The next non-blank record, or ``None`` at the end of the file.

        ``row`` is the number the record will have, for error messages.
        """
        while True:
            try:
                fields = next(self._reader)
            except StopIteration:
                return None
            except _LineTooLong as exc:
                self.record_line = exc.line
                raise CSVFileError(
                    lazy_gettext(
                        "%(where)s is longer than %(size)s MiB without a line break: "
                        "is this a CSV file?",
                        where=self.where(row),
                        size=MAX_LINE_BYTES // 2**20,
                    ),
                    row=row,
                    line=exc.line,
                ) from None
            except _Undecodable as exc:
                self.record_line = exc.line
                byte = exc.byte.hex() if exc.byte else "?"
                raise CSVFileError(
                    lazy_gettext(
                        "%(where)s is not valid %(encoding)s: byte 0x%(byte)s cannot be decoded. "
                        "Save the file as %(encoding)s, or declare its encoding with "
                        "csv_collection(encoding=...).",
                        where=self.where(row),
                        encoding=self.spec.encoding_name,
                        byte=byte,
                    ),
                    row=row,
                    line=exc.line,
                ) from None
            except UnicodeDecodeError:
                raise CSVFileError(
                    lazy_gettext(
                        "The file ends in the middle of a character: it is not valid %(encoding)s.",
                        encoding=self.spec.encoding_name,
                    ),
                    row=row,
                    line=self.line - 1,
                ) from None
            except csv.Error as exc:
                problem: str | LazyString = str(exc)
                if "new-line character seen in unquoted field" in str(exc):
                    # Old Mac files end lines with a lone \r, which is not a line break here.
                    problem = lazy_gettext(
                        "a carriage return (\\r) ends a line; lines must end with \\n or \\r\\n"
                    )
                raise CSVFileError(
                    lazy_gettext(
                        "%(where)s cannot be read as CSV: %(problem)s.",
                        where=self.where(row),
                        problem=problem,
                    ),
                    row=row,
                    line=self.record_line,
                ) from None
            finally:
                self._at_record_start = True
            if fields and (len(fields) > 1 or fields[0].strip()):
                return fields


def _width_message(where: LazyString, fields: int, width: int) -> LazyString:
    """``Row 3 (line 4) has 2 fields, but the header has 3 columns.``"""
    values = {"where": where, "fields": LazyNumber(fields), "width": LazyNumber(width)}
    if fields == 1 and width == 1:
        return lazy_gettext(
            "%(where)s has %(fields)s field, but the header has %(width)s column.", **values
        )
    if fields == 1:
        return lazy_gettext(
            "%(where)s has %(fields)s field, but the header has %(width)s columns.", **values
        )
    if width == 1:
        return lazy_gettext(
            "%(where)s has %(fields)s fields, but the header has %(width)s column.", **values
        )
    return lazy_gettext(
        "%(where)s has %(fields)s fields, but the header has %(width)s columns.", **values
    )


class _LineTooLong(Exception):
    def __init__(self, line: int) -> None:
        self.line = line


class _Undecodable(Exception):
    def __init__(self, line: int, byte: bytes) -> None:
        self.line = line
        self.byte = byte


def read_header(stream: t.BinaryIO, spec: CSVCollection) -> tuple[list[str], Position]:
    """The header of a file read from its start, and the position of its first row.

    :raises CSVFileError: an empty file, a blank or repeated column name, a
        missing required column.
    """
    records = _Records(stream, spec, 0, 1)
    header = records.next_record(None)
    if header is None:
        raise CSVFileError(_EMPTY)
    if spec.strip:
        header = [name.strip() for name in header]
    seen: dict[str, int] = {}
    for index, name in enumerate(header, 1):
        if not name.strip():
            raise CSVFileError(
                lazy_gettext(
                    "Column %(index)s of the CSV header has no name; every column needs one.",
                    index=index,
                ),
                line=records.record_line,
            )
        if name in seen:
            raise CSVFileError(
                lazy_gettext(
                    "The CSV header names the column %(name)s twice (columns %(first)s and "
                    "%(second)s); column names must be unique.",
                    name=repr(name),
                    first=seen[name],
                    second=index,
                ),
                line=records.record_line,
            )
        seen[name] = index
    missing = [name for name in spec.required_headers if name not in seen]
    if missing:
        names = ", ".join(repr(name) for name in missing)
        shown: str | LazyString = ", ".join(repr(name) for name in header[:20])
        if len(header) > 20:
            shown = lazy_gettext(
                "%(names)s and %(count)s more", names=shown, count=LazyNumber(len(header) - 20)
            )
        if len(missing) > 1:
            message = lazy_gettext(
                "The CSV file has no %(names)s columns, which the task requires; "
                "its header has %(header)s.",
                names=names,
                header=shown,
            )
        else:
            message = lazy_gettext(
                "The CSV file has no %(names)s column, which the task requires; "
                "its header has %(header)s.",
                names=names,
                header=shown,
            )
        raise CSVFileError(
            message,
            line=records.record_line,
        )
    return header, {"offset": records.offset, "row": 1, "line": records.line}


def _check_position(cursor: t.Any) -> Position:
    if isinstance(cursor, dict) and all(
        isinstance(cursor.get(key), int) for key in ("offset", "row", "line")
    ):
        return {key: int(cursor[key]) for key in ("offset", "row", "line")}
    raise ValueError(
        f"The saved cursor {cursor!r} is not a position in a CSV file; was the task's "
        "collection changed during the run?"
    )


def rows(
    stream: t.BinaryIO, spec: CSVCollection, cursor: t.Any = None, end: int | None = None
) -> t.Iterator[tuple[CSVRow, Position]]:
    """``(row, position of the next row)`` pairs, starting at ``cursor`` (a position).

    ``stream`` must be seekable and at its start: the header is read there,
    then the stream seeks to the cursor's offset. With ``end``, the
    ``offset`` of a position (from :func:`split_positions`, say), the walk
    stops before the first record starting at or after that byte: the rows
    of one part of the file.
    """
    header, start = read_header(stream, spec)
    if cursor is not None:
        start = _check_position(cursor)
        stream.seek(start["offset"])
    records = _Records(stream, spec, start["offset"], start["line"])
    next_record: t.Callable[[int | None], list[str] | None] = records.next_record
    if end is not None:
        # A bounded walk pays one call per row; the whole file's walk does not.
        def next_record(row: int | None, limit: int = end) -> list[str] | None:
            if records.offset >= limit:
                return None
            return records.next_record(row)

    width = len(header)
    strip = spec.strip
    number = start["row"]
    while True:
        fields = next_record(number)
        if fields is None:
            return
        if len(fields) != width:
            raise CSVFileError(
                _width_message(records.where(number), len(fields), width),
                row=number,
                line=records.record_line,
            )
        if strip:
            fields = [value.strip() if isinstance(value, str) else value for value in fields]
        row = CSVRow(zip(header, fields, strict=True), number, records.record_line)
        number += 1
        yield row, {"offset": records.offset, "row": number, "line": records.line}


def batches(
    stream: t.BinaryIO,
    spec: CSVCollection,
    size: int,
    cursor: t.Any = None,
    end: int | None = None,
) -> t.Iterator[tuple[list[CSVRow], Position]]:
    """Lists of up to ``size`` rows, each with the position after its last row.

    With ``end`` (see :func:`rows`), the last batch of the part may be short:
    a batch never reaches past ``end``, and the next part's batches start at
    its first row.
    """
    batch: list[CSVRow] = []
    position: Position | None = None
    for row, position in rows(stream, spec, cursor, end):
        batch.append(row)
        if len(batch) == size:
            yield batch, {**position, "of": size}
            batch = []
    if batch and position is not None:
        yield batch, {**position, "of": size}


def iterate(
    stream: t.BinaryIO, spec: CSVCollection, cursor: t.Any, end: int | None = None
) -> t.Iterator[tuple[t.Any, t.Any]]:
    """The items of a CSV collection over ``stream``: rows, or batches with ``in_batches``.

    ``end`` bounds the walk to one part of the file; see :func:`rows`.
    """
    if spec.in_batches:
        return batches(stream, spec, spec.in_batches, cursor, end)
    return rows(stream, spec, cursor, end)


def remaining(spec: CSVCollection, cursor: t.Any, line_count: int) -> int:
    """Rows (or batches) expected after ``cursor`` in a file of ``line_count`` lines."""
    lines_left = max(line_count - _check_position(cursor)["line"] + 1, 0)
    return math.ceil(lines_left / spec.in_batches) if spec.in_batches else lines_left


# -- parts of a file -------------------------------------------------------


def split_positions(
    stream: t.BinaryIO, spec: CSVCollection, targets: t.Sequence[int]
) -> list[Position]:
    """The positions of the first records starting at or after some byte offsets.

    For each of ``targets`` (byte offsets from the start of the file), the
    position of the first record whose start is at or after it, numbered as
    :func:`rows` numbers it: ``rows(stream, spec, position)`` starts there,
    and ``rows(..., end=position["offset"])`` stops just before it. A record
    starts where the previous one ends (the header's end for row 1): blank
    and skipped lines belong to the record after them, and a target within
    the header gives row 1's position. A target past the last record gives
    the end of the file, ``{"offset": size, "row": rows + 1, "line": last
    line + 1}``, before which every row is; targeting the file's size thus
    gives its exact number of rows, ``row - 1``.

    The file is read once, from its start to the last target's record,
    without holding more than one record; ``stream`` must be seekable and at
    its start. The positions come in the order of ``targets``.

    :raises CSVFileError: a bad header, or a record that cannot be read
        before the last target (a row of the wrong width is left to the walk
        of its part, which names it).
    """
    if not targets:
        return []
    _, start = read_header(stream, spec)
    stream.seek(start["offset"])
    records = _Records(stream, spec, start["offset"], start["line"])
    position = start
    at_end = False
    found: dict[int, Position] = {}
    for target in sorted(set(targets)):
        while not at_end and position["offset"] < target:
            row = position["row"]
            if records.next_record(row) is None:
                at_end = True
            else:
                row += 1
            position = {"offset": records.offset, "row": row, "line": records.line}
        found[target] = position
    return [dict(found[target]) for target in targets]


def split(stream: t.BinaryIO, spec: CSVCollection, parts: int, size: int) -> list[Position]:
    """The ``parts - 1`` positions cutting a file of ``size`` bytes into parts of equal bytes.

    They are :func:`split_positions` of ``size * i // parts`` for ``i`` from
    1 to ``parts - 1``, ascending. Part 1 runs from the first row (cursor
    ``None``) to the first position, part ``i`` from position ``i - 1`` to
    position ``i`` and the last part to the end of the file. A part is
    empty when its two ends are the same position, as when the file has
    fewer rows than parts or one row is larger than a part.
    """
    if isinstance(parts, bool) or not isinstance(parts, int) or parts < 1:
        raise ValueError(f"A CSV file is split into at least 1 part, not {parts!r}.")
    return split_positions(stream, spec, [size * i // parts for i in range(1, parts)])


def count_between(
    start: Position | None,
    end: Position | None,
    spec: CSVCollection,
    *,
    line_count: int | None = None,
) -> int:
    """Rows (or batches with ``in_batches``) from position ``start`` to position ``end``.

    ``None`` for ``start`` is the first row. The count is the difference of
    the two row numbers, exact; batches start again at each part's first
    row, so a part of ``n`` rows has ``ceil(n / in_batches)`` of them. Without
    an ``end`` (the last part, up to the end of the file), the count is
    estimated from the file's ``line_count`` as :func:`remaining` does, unless
    ``end`` is the end-of-file position of :func:`split_positions`, which is
    exact.

    :raises ValueError: ``end`` and ``line_count`` both missing.
    """
    first = 1 if start is None else _check_position(start)["row"]
    if end is None:
        if line_count is None:
            raise ValueError(
                "count_between(end=None) needs the file's line_count, or give the end-of-file "
                "position of split_positions(..., [size])."
            )
        if start is None:
            return spec.rows_count(line_count)
        return remaining(spec, start, line_count)
    count = max(_check_position(end)["row"] - first, 0)
    return math.ceil(count / spec.in_batches) if spec.in_batches else count


# -- the check at upload -----------------------------------------------------


def check_start(prefix: bytes, complete: bool, spec: CSVCollection) -> None:
    """Refuse a file whose first bytes show it cannot be read.

    ``prefix`` is the start of the file (:data:`PREFLIGHT_BYTES` of it, or
    all of it when ``complete``). It is checked as the run would read it:
    not text, not in the encoding, no header, a required column missing, a
    row of the wrong width.

    :raises CSVFileError: with a message saying what is wrong and where.
    """
    if not prefix.lstrip(b"\xef\xbb\xbf").strip():
        raise CSVFileError(_EMPTY)
    for signature, message in _SIGNATURES:
        if prefix.startswith(signature):
            raise CSVFileError(message)
    if b"\x00" in prefix:
        raise CSVFileError(
            lazy_gettext(
                "This is not a CSV file: it holds NUL bytes, which text never does "
                "(a binary file, or text in UTF-16?)."
            )
        )
    if not complete:
        cut = prefix.rfind(b"\n") + 1
        if cut:
            prefix = prefix[:cut]
    try:
        codecs.getincrementaldecoder(spec.encoding)("strict").decode(prefix, complete)
        decodable = True
    except UnicodeDecodeError as exc:
        if not complete and b"\n" not in prefix:
            # One line longer than the prefix: only its text can be checked.
            byte = prefix[exc.start : exc.start + 1].hex()
            raise CSVFileError(
                lazy_gettext(
                    "%(where)s is not valid %(encoding)s: byte 0x%(byte)s cannot be decoded. "
                    "Save the file as %(encoding)s, or declare its encoding with "
                    "csv_collection(encoding=...).",
                    where=lazy_gettext("The header (line %(line)s)", line=LazyNumber(1)),
                    encoding=spec.encoding_name,
                    byte=byte,
                ),
                line=1,
            ) from None
        decodable = False  # reading the rows below says which one is wrong
    if not complete and b"\n" not in prefix:
        return
    stream = io.BytesIO(prefix)
    found = rows(stream, spec)
    while True:
        try:
            next(found)
        except StopIteration:
            return
        except CSVFileError as error:
            # The prefix may end inside a row (a quoted value spanning lines):
            # a bad last row is not known to be wrong, the run reads it whole.
            at_end = stream.tell() >= len(prefix)
            if decodable and not complete and error.row is not None and at_end:
                return
            raise
