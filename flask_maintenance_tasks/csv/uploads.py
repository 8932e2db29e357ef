"""The CSV files of runs: checked and stored when a run starts, read back by its slices.

A file is stored once, when its run is started, under the name
``<UTC timestamp>_<task name>.csv``; the run's :class:`~flask_maintenance_tasks.models.CSVFile`
row links the run to the key the storage returned. Every read goes through the
storage the app built at ``init_app`` (``state.csv_storage``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
import shutil
import tempfile
import typing as t
from datetime import datetime, timezone
from pathlib import Path

from .. import store
from ..exceptions import CSVFileError, CSVFileTooLarge
from ..i18n import lazy_gettext
from ..models import CSVFile, Run
from ..state import get_state
from . import rows as csv_rows
from .storage import BLOCK_SIZE, DatabaseStorage, read_exactly

if t.TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from ..state import State

#: An upload read from a stream is kept in memory up to this size, then on disk.
SPOOL_IN_MEMORY = 1024 * 1024


def stored_name(task_name: str, now: datetime | None = None) -> str:
    """``<UTC timestamp>_<task name>.csv``, e.g. ``20261124T093000Z_ImportPostsTask.csv``."""
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", task_name)
    return f"{moment:%Y%m%dT%H%M%SZ}_{safe}.csv"


#: The longest file name a :class:`~flask_maintenance_tasks.models.CSVFile` keeps (its column).
ORIGINAL_NAME_LENGTH = 255


def _kept_name(name: str) -> str:
    """The name a file was given, as its record keeps it: without NUL characters
    (PostgreSQL refuses them in text), cut to :data:`ORIGINAL_NAME_LENGTH`
    characters keeping its end (the extension)."""
    name = name.replace("\x00", "")
    if len(name) <= ORIGINAL_NAME_LENGTH:
        return name
    return "…" + name[-(ORIGINAL_NAME_LENGTH - 1) :]


@dataclasses.dataclass(frozen=True)
class StoredUpload:
    """A CSV file saved in the storage, not yet linked to a run."""

    storage_key: str
    filename: str
    original_filename: str | None
    size: int
    line_count: int

    def record(self) -> CSVFile:
        return CSVFile(
            storage_key=self.storage_key,
            filename=self.filename,
            original_filename=self.original_filename,
            size=self.size,
            line_count=self.line_count,
        )


@contextlib.contextmanager
def _source(csv_file: t.Any) -> t.Iterator[tuple[str, t.BinaryIO]]:
    """``(file name, binary stream)`` of a path, a file object or ``(name, file object)``."""
    if isinstance(csv_file, (str, os.PathLike)):
        path = Path(csv_file)
        if not path.is_file():
            raise CSVFileError(lazy_gettext("CSV file not found: %(path)s", path=csv_file))
        with open(path, "rb") as stream:
            yield path.name, stream
        return
    if isinstance(csv_file, tuple) and len(csv_file) == 2:
        name, stream = csv_file
    else:
        stream = csv_file
        name = getattr(csv_file, "filename", None) or os.path.basename(
            str(getattr(csv_file, "name", "") or "")
        )
    if not callable(getattr(stream, "read", None)):
        raise CSVFileError(
            lazy_gettext(
                "csv_file must be a path, a binary file object or (file name, binary file "
                "object), not %(type)s.",
                type=type(stream).__name__,
            )
        )
    yield str(name or "upload.csv"), stream


def _seekable(stream: t.Any) -> bool:
    try:
        return bool(stream.seekable())
    except (AttributeError, OSError, ValueError):
        return False


class _Counting(io.RawIOBase):
    """Reads a source for a storage, counting bytes and lines, refusing beyond a limit."""

    def __init__(self, source: t.BinaryIO, filename: str, limit: int) -> None:
        self._source = source
        self._filename = filename
        self._limit = limit
        self.size = 0
        self.newlines = 0
        self.last = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: t.Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._source.read(len(view))
        if not data:
            return 0
        if isinstance(data, str):
            raise CSVFileError(
                lazy_gettext(
                    "%(file)s was opened as text: open CSV files in binary mode ('rb').",
                    file=self._filename,
                )
            )
        self.size += len(data)
        if self.size > self._limit:
            raise CSVFileTooLarge(self._filename, self._limit)
        self.newlines += data.count(b"\n")
        self.last = data[-1:]
        view[: len(data)] = data
        return len(data)

    @property
    def line_count(self) -> int:
        return self.newlines + (1 if self.size and self.last != b"\n" else 0)


def _spooled(stream: t.BinaryIO, filename: str, limit: int) -> t.BinaryIO:
    """A seekable copy of a stream that cannot seek (standard input), within the limit."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115
    try:
        counting = _Counting(stream, filename, limit)
        shutil.copyfileobj(t.cast(t.BinaryIO, counting), spool, BLOCK_SIZE)
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return t.cast(t.BinaryIO, spool)


def store_upload(
    state: State, task_name: str, spec: csv_rows.CSVCollection, csv_file: t.Any
) -> StoredUpload:
    """Check a CSV file given to a run of ``task_name`` and save it in the storage.

    The size is checked first (before anything is read when it is known),
    then the first :data:`~.csv_rows.PREFLIGHT_BYTES` as the run will read
    them; only then is the file copied to the storage.

    :raises CSVFileTooLarge: beyond ``MAINTENANCE_TASKS_MAX_CSV_BYTES``.
    :raises CSVFileError: the file cannot be read, or its start shows it is
        not a CSV file the task can read. Nothing is stored.
    """
    limit = state.settings.max_csv_bytes
    storage = state.csv_storage
    with _source(csv_file) as (original, source), contextlib.ExitStack() as stack:
        if _seekable(source):
            start = source.tell()
            size = source.seek(0, io.SEEK_END) - start
            source.seek(start)
            if size > limit:
                raise CSVFileTooLarge(original, limit, size)
        else:
            source = stack.enter_context(_spooled(source, original, limit))
            start = 0
        head = read_exactly(source, csv_rows.PREFLIGHT_BYTES + 1)
        try:
            csv_rows.check_start(head, len(head) <= csv_rows.PREFLIGHT_BYTES, spec)
        except CSVFileError as error:
            raise CSVFileError(
                lazy_gettext("%(file)s: %(error)s", file=original, error=error),
                row=error.row,
                line=error.line,
            ) from None
        source.seek(start)
        name = stored_name(task_name)
        counting = _Counting(source, original, limit)
        key = storage.save(name, t.cast(t.BinaryIO, io.BufferedReader(counting, BLOCK_SIZE)))
    return StoredUpload(key, name, _kept_name(original), counting.size, counting.line_count)


def discard(state: State, upload: StoredUpload) -> None:
    """Remove a saved upload whose run could not be created."""
    state.csv_storage.delete(upload.storage_key)


# -- reading a run's file ------------------------------------------------------


def csv_file_of(state: State, run: Run | int) -> CSVFile | None:
    """The :class:`~.models.CSVFile` of a run, or ``None`` for a run without one."""
    # A partition reads the file of its run.
    run_id = run if isinstance(run, int) else (run.parent_id or run.id)
    with store.open_session(state.db) as session:
        return store.csv_file_of(session, run_id)


def open_for_run(state: State, run: Run, session: Session) -> tuple[CSVFile, t.BinaryIO]:
    """The run's CSV file record and its stored bytes, opened at the start.

    ``session`` is the run's own (the app's session in the job): the
    database storage reads its chunks in that session's transactions.
    """
    record = csv_file_of(state, run)
    if record is None:
        raise CSVFileError(
            lazy_gettext(
                "Run #%(id)s of %(task)s has no CSV file: it was started without one, "
                "or its file was deleted.",
                id=run.id,
                task=run.task_name,
            )
        )
    storage = state.csv_storage
    if isinstance(storage, DatabaseStorage):
        return record, storage.open(record.storage_key, session=session)
    return record, storage.open(record.storage_key)


class CSVDownload(t.NamedTuple):
    """A run's CSV file, ready to send: its name, its size and its bytes, block by block."""

    filename: str
    size: int
    chunks: t.Iterator[bytes]


class _Blocks:
    """The blocks of an open stream; closes it at the end, or on :meth:`close`."""

    def __init__(self, stream: t.BinaryIO) -> None:
        self._stream: t.BinaryIO | None = stream

    def __iter__(self) -> _Blocks:
        return self

    def __next__(self) -> bytes:
        if self._stream is None:
            raise StopIteration
        data = self._stream.read(BLOCK_SIZE)
        if not data:
            self.close()
            raise StopIteration
        return data

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


def csv_download(run: Run | int) -> CSVDownload | None:
    """The CSV file of a run, to send as a download, or ``None`` if the run has none.

    ``chunks`` reads the storage block by block as it is iterated (never
    the whole file at once) and needs no app context, so it can be the body
    of a streamed response. It closes the file when exhausted; call its
    ``close()`` if you stop early (WSGI servers do so for response bodies)::

        found = csv_download(run)
        if found is None:
            abort(404)
        return Response(found.chunks, mimetype="text/csv", headers={
            "Content-Disposition": f'attachment; filename="{found.filename}"',
            "Content-Length": str(found.size),
        })

    :raises FileNotFoundError: the run has a file, but the storage lost it.

    .. versionadded:: 0.1
    """
    state = get_state()
    record = csv_file_of(state, run)
    if record is None:
        return None
    stream = state.csv_storage.open(record.storage_key)
    return CSVDownload(record.filename, record.size, _Blocks(stream))
