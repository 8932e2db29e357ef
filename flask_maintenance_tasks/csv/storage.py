"""Where the CSV files of runs live, so that every worker on every machine reads them.

``MAINTENANCE_TASKS_CSV_STORAGE`` picks the storage:

- ``"database"`` (the default): :class:`DatabaseStorage`, the app's own
  database, in chunks of 1 MiB;
- a directory path: :class:`DirectoryStorage`, for a directory every worker
  mounts (a relative path is taken from the app's instance folder);
- any object with the four methods of :class:`CSVStorage`, such as one
  written for object storage.

The storage is built once, by ``init_app``, and kept on the app's state;
:mod:`.uploads` stores and reads the files of runs through it.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import typing as t
import uuid
from pathlib import Path

import sqlalchemy as sa

from ..exceptions import ConfigurationError, CSVFileError
from ..i18n import lazy_gettext
from ..models import csv_chunks_table
from ..state import get_state
from ..store import quiet

if t.TYPE_CHECKING:
    from sqlalchemy.orm import Session

#: Bytes per chunk row of the database storage.
DEFAULT_CHUNK_SIZE = 1024 * 1024
#: Bytes per block when copying and reading.
BLOCK_SIZE = 64 * 1024


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

    def __init__(
        self,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        *,
        engine: sa.Engine | t.Callable[[], sa.Engine] | None = None,
    ):
        if chunk_size < 1:
            raise ConfigurationError("DatabaseStorage(chunk_size=...) must be at least 1 byte.")
        self.chunk_size = chunk_size
        self._engine = engine

    @property
    def engine(self) -> sa.Engine:
        """The engine given (or given by the callable), else the current app's engine.

        Its errors never quote the file's bytes (see :func:`~..store.quiet`).
        """
        if isinstance(self._engine, sa.Engine):
            return quiet(self._engine)
        if self._engine is not None:
            return quiet(self._engine())
        return quiet(get_state().db.engine)

    def save(self, name: str, stream: t.BinaryIO) -> str:
        key = f"{uuid.uuid4().hex}_{name}"[:255]
        position = 0
        with self.engine.begin() as connection:
            while True:
                data = read_exactly(stream, self.chunk_size)
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


def read_exactly(stream: t.BinaryIO, size: int) -> bytes:
    """Up to ``size`` bytes, fewer only at the end: ``read`` of a pipe may return less."""
    data = stream.read(size)
    if isinstance(data, str):
        raise CSVFileError(
            lazy_gettext("The CSV file was opened as text: open it in binary mode ('rb').")
        )
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


def build_storage(
    setting: t.Any, instance_path: str, engine: t.Callable[[], sa.Engine]
) -> CSVStorage:
    """The storage ``MAINTENANCE_TASKS_CSV_STORAGE`` names, built once by ``init_app``.

    :param instance_path: where a relative directory is taken from.
    :param engine: gives the app's engine, for the database storage.
    :raises ConfigurationError: the setting names no storage.
    """
    if isinstance(setting, str) and setting == "database":
        return DatabaseStorage(engine=engine)
    if isinstance(setting, (str, os.PathLike)) and str(setting):
        path = Path(setting)
        if not path.is_absolute():
            path = Path(instance_path) / path
        return DirectoryStorage(path)
    if isinstance(setting, CSVStorage):
        return setting
    raise ConfigurationError(
        f"MAINTENANCE_TASKS_CSV_STORAGE must be 'database', a directory path or an object with "
        f"save, open, size and delete methods; got {setting!r}."
    )
