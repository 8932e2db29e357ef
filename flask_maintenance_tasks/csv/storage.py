"""Where the CSV files of runs live, so that every worker on every machine reads them.

``MAINTENANCE_TASKS_CSV_STORAGE`` picks the storage:

- ``"database"`` (the default): :class:`DatabaseStorage`, the app's own
  database, in chunks of 1 MiB;
- a directory path: :class:`DirectoryStorage`, for a directory every worker
  mounts (a relative path is taken from the app's instance folder);
- any object with the four methods of :class:`CSVStorage`, such as one
  written for object storage.

A file is stored once, when its run is started, under the name
``<UTC timestamp>_<task name>.csv``; the run's :class:`~.models.CSVFile`
row links the run to what the storage returned.
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
import uuid
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

from .. import store
from ..exceptions import ConfigurationError, CSVFileError, CSVFileTooLarge
from ..models import CSVFile, Run, csv_chunks_table
from . import rows as csv_rows

if t.TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from ..state import State

#: Bytes per chunk row of the database storage.
DEFAULT_CHUNK_SIZE = 1024 * 1024
#: Bytes per block when copying and downloading.
BLOCK_SIZE = 64 * 1024
#: An upload read from a stream is kept in memory up to this size, then on disk.
SPOOL_IN_MEMORY = 1024 * 1024


@t.runtime_checkable
class CSVStorage(t.Protocol):
    """Where CSV files are kept: implement these four methods for any other store.

    Keys are strings chosen by :meth:`save`, at most 1,024 characters.
    Every method may be called from any worker process on any machine.

    .. versionadded:: 0.1
    """

    def save(self, name: str, stream: t.BinaryIO) -> str:
        """Store the bytes read from ``stream`` (``read(n)`` until ``b""``) and return a key.

        ``name`` is ``<UTC timestamp>_<task name>.csv``; a storage may use it
        in the key. If reading ``stream`` raises, let the exception through
        and leave nothing stored.
        """
        ...

    def open(self, key: str) -> t.BinaryIO:
        """The stored bytes as a readable, seekable binary stream."""
        ...

    def size(self, key: str) -> int:
        """The stored size in bytes; raise ``FileNotFoundError`` if there is no such key."""
        ...

    def delete(self, key: str) -> None:
        """Remove the stored bytes; no error if they are already gone."""
        ...


# -- the database storage -----------------------------------------------------


class DatabaseStorage:
    """Keeps CSV files in the app's database, in the ``maintenance_tasks_csv_chunks`` table.

    A file is written in one transaction, as rows of ``chunk_size`` bytes
    each keyed by the offset of their first byte. Reading at an offset
    fetches the one chunk holding it, so a run resumed deep into a large
    file does not read what lies before. A run reads its chunks in its own
    transaction (through the app's session), so that SQLite never makes the
    read wait for the run's uncommitted writes; any other reader (a download)
    reads each chunk in a short transaction of its own.

    :param chunk_size: bytes per chunk row. Only writes use it: files written
        with another size stay readable.

    .. versionadded:: 0.1
    """

    def __init__(self, chunk_size: int = DEFAULT_CHUNK_SIZE, *, engine: sa.Engine | None = None):
        if chunk_size < 1:
            raise ConfigurationError("DatabaseStorage(chunk_size=...) must be at least 1 byte.")
        self.chunk_size = chunk_size
        self._engine = engine

    @property
    def engine(self) -> sa.Engine:
        """The engine given, or the current app's database engine."""
        if self._engine is not None:
            return self._engine
        from ..state import get_state

        return get_state().db.engine

    def save(self, name: str, stream: t.BinaryIO) -> str:
        key = f"{uuid.uuid4().hex}_{name}"[:255]
        position = 0
        with self.engine.begin() as connection:
            while True:
                data = _read_exactly(stream, self.chunk_size)
                if not data:
                    break
                connection.execute(
                    csv_chunks_table.insert(),
                    {"storage_key": key, "start_byte": position, "data": data},
                )
                position += len(data)
        return key

    def open(self, key: str, *, session: Session | None = None) -> t.BinaryIO:
        """The file as a seekable stream; ``session``: read in that session's transaction."""
        connect = _in_session(session) if session is not None else _own_connection(self.engine)
        raw = _ChunkReader(connect, key, self._size(key, connect))
        return t.cast(t.BinaryIO, io.BufferedReader(raw, buffer_size=BLOCK_SIZE))

    def size(self, key: str) -> int:
        return self._size(key, _own_connection(self.engine))

    def _size(self, key: str, connect: _Connect) -> int:
        chunks = csv_chunks_table.c
        with connect() as connection:
            last = connection.execute(
                sa.select(chunks.start_byte, sa.func.length(chunks.data))
                .where(chunks.storage_key == key)
                .order_by(chunks.start_byte.desc())
                .limit(1)
            ).first()
        if last is None:
            raise FileNotFoundError(f"No CSV file is stored in the database under {key!r}.")
        return int(last[0]) + int(last[1])

    def delete(self, key: str) -> None:
        chunks = csv_chunks_table.c
        with self.engine.begin() as connection:
            connection.execute(csv_chunks_table.delete().where(chunks.storage_key == key))

    def __repr__(self) -> str:
        return f"DatabaseStorage(chunk_size={self.chunk_size})"


def _read_exactly(stream: t.BinaryIO, size: int) -> bytes:
    """Up to ``size`` bytes, fewer only at the end: ``read`` of a pipe may return less."""
    data = stream.read(size)
    if isinstance(data, str):
        raise CSVFileError("The CSV file was opened as text: open it in binary mode ('rb').")
    if not data or len(data) == size:
        return data
    parts = [data]
    missing = size - len(data)
    while missing:
        more = stream.read(missing)
        if not more:
            break
        parts.append(more)
        missing -= len(more)
    return b"".join(parts)


_Connect = t.Callable[[], t.ContextManager[sa.Connection]]


def _own_connection(engine: sa.Engine) -> _Connect:
    """Each use, a connection of its own, in a transaction closed at once."""
    return engine.connect


def _in_session(session: Session) -> _Connect:
    """Each use, the connection of the session's current transaction, left open."""

    @contextlib.contextmanager
    def connect() -> t.Iterator[sa.Connection]:
        yield session.connection()

    return connect


class _ChunkReader(io.RawIOBase):
    """A seekable raw stream over the chunk rows of one file."""

    def __init__(self, connect: _Connect, key: str, size: int) -> None:
        self._connect = connect
        self._key = key
        self._size = size
        self._position = 0
        self._chunk_start = 0
        self._chunk = b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            position = offset
        elif whence == io.SEEK_CUR:
            position = self._position + offset
        elif whence == io.SEEK_END:
            position = self._size + offset
        else:
            raise ValueError(f"invalid whence ({whence})")
        if position < 0:
            raise OSError(f"negative seek position {position}")
        self._position = position
        return position

    def readinto(self, buffer: t.Any) -> int:
        if self._position >= self._size:
            return 0
        offset = self._position - self._chunk_start
        if not 0 <= offset < len(self._chunk):
            self._load(self._position)
            offset = self._position - self._chunk_start
        view = memoryview(buffer).cast("B")
        count = min(len(view), len(self._chunk) - offset)
        view[:count] = memoryview(self._chunk)[offset : offset + count]
        self._position += count
        return count

    def _load(self, position: int) -> None:
        chunks = csv_chunks_table.c
        with self._connect() as connection:
            found = connection.execute(
                sa.select(chunks.start_byte, chunks.data)
                .where(chunks.storage_key == self._key, chunks.start_byte <= position)
                .order_by(chunks.start_byte.desc())
                .limit(1)
            ).first()
        if found is None or not found[0] <= position < found[0] + len(found[1]):
            raise OSError(f"The CSV file {self._key!r} has no stored bytes at offset {position}.")
        self._chunk_start = int(found[0])
        self._chunk = bytes(found[1])


# -- the directory storage ---------------------------------------------------


class DirectoryStorage:
    """Keeps CSV files as files in one directory, which every worker must see.

    The key is the file's name in the directory: ``<UTC timestamp>_<task
    name>.csv``, with ``-2``, ``-3``... added when two files would share a
    name. A file appears whole or not at all (it is written beside its final
    name, then renamed).

    .. versionadded:: 0.1
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def save(self, name: str, stream: t.BinaryIO) -> str:
        self.path.mkdir(parents=True, exist_ok=True)
        partial = self.path / f".{uuid.uuid4().hex}.partial"
        try:
            with open(partial, "xb") as out:
                shutil.copyfileobj(stream, out, BLOCK_SIZE)
            key = self._reserve(name)
            os.replace(partial, self.path / key)
        finally:
            partial.unlink(missing_ok=True)
        return key

    def _reserve(self, name: str) -> str:
        stem, suffix = os.path.splitext(name)
        for attempt in range(1, 10_000):
            candidate = name if attempt == 1 else f"{stem}-{attempt}{suffix}"
            try:
                os.close(os.open(self.path / candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                continue
            return candidate
        raise FileExistsError(f"No free name for {name} in {self.path}.")

    def _path(self, key: str) -> Path:
        if not key or key.startswith(".") or os.sep in key or (os.altsep and os.altsep in key):
            raise ValueError(f"{key!r} is not a key of the CSV directory storage.")
        return self.path / key

    def open(self, key: str) -> t.BinaryIO:
        return open(self._path(key), "rb")

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def __repr__(self) -> str:
        return f"DirectoryStorage({str(self.path)!r})"


def storage_for(state: State) -> CSVStorage:
    """The storage ``MAINTENANCE_TASKS_CSV_STORAGE`` names for the app of ``state``."""
    setting = state.settings.csv_storage
    if setting == "database":
        return DatabaseStorage(engine=state.db.engine)
    if isinstance(setting, (str, os.PathLike)):
        path = Path(setting)
        if not path.is_absolute():
            path = Path(state.app.instance_path) / path
        return DirectoryStorage(path)
    if isinstance(setting, CSVStorage):
        return setting
    raise ConfigurationError(
        f"MAINTENANCE_TASKS_CSV_STORAGE must be 'database', a directory path or an object with "
        f"save, open, size and delete methods; got {setting!r}."
    )


# -- uploads -------------------------------------------------------------------


def stored_name(task_name: str, now: datetime | None = None) -> str:
    """``<UTC timestamp>_<task name>.csv``, e.g. ``20261124T093000Z_ImportPostsTask.csv``."""
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", task_name)
    return f"{moment:%Y%m%dT%H%M%SZ}_{safe}.csv"


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
            raise CSVFileError(f"CSV file not found: {csv_file}")
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
            "csv_file must be a path, a binary file object or (file name, binary file object), "
            f"not {type(stream).__name__}."
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
                f"{self._filename} was opened as text: open CSV files in binary mode ('rb')."
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
    storage = storage_for(state)
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
        head = _read_exactly(source, csv_rows.PREFLIGHT_BYTES + 1)
        try:
            csv_rows.check_start(head, len(head) <= csv_rows.PREFLIGHT_BYTES, spec)
        except CSVFileError as error:
            raise CSVFileError(f"{original}: {error}", row=error.row, line=error.line) from None
        source.seek(start)
        name = stored_name(task_name)
        counting = _Counting(source, original, limit)
        key = storage.save(name, t.cast(t.BinaryIO, io.BufferedReader(counting, BLOCK_SIZE)))
    return StoredUpload(key, name, original, counting.size, counting.line_count)


def discard(state: State, upload: StoredUpload) -> None:
    """Remove a saved upload whose run could not be created."""
    storage_for(state).delete(upload.storage_key)


# -- reading a run's file ------------------------------------------------------


def csv_file_of(state: State, run: Run | int) -> CSVFile | None:
    """The :class:`~.models.CSVFile` of a run, or ``None`` for a run without one."""
    run_id = run if isinstance(run, int) else run.id
    with store.open_session(state.db) as session:
        return session.scalars(sa.select(CSVFile).where(CSVFile.run_id == run_id)).first()


def open_for_run(state: State, run: Run, session: Session) -> tuple[CSVFile, t.BinaryIO]:
    """The run's CSV file record and its stored bytes, opened at the start.

    ``session`` is the run's own (the app's session in the job): the
    database storage reads its chunks in that session's transactions.
    """
    record = csv_file_of(state, run)
    if record is None:
        raise CSVFileError(
            f"Run #{run.id} of {run.task_name} has no CSV file: it was started without one, "
            "or its file was deleted."
        )
    storage = storage_for(state)
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
    from ..state import get_state

    state = get_state()
    record = csv_file_of(state, run)
    if record is None:
        return None
    stream = storage_for(state).open(record.storage_key)
    return CSVDownload(record.filename, record.size, _Blocks(stream))
