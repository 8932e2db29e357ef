"""CSV files for the test app's CSV tasks, and what a refused one must leave behind."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from flask_maintenance_tasks.models import CSVFile, Run, csv_chunks_table
from tests.testapp import db


def items_csv(count: int, *, first: int = 1, pad: int = 0) -> str:
    """A header and ``count`` rows ``id,title``; ``pad`` lengthens each title."""
    lines = ["id,title"] + [f"{n},title {n}{'.' * pad}" for n in range(first, first + count)]
    return "\n".join(lines) + "\n"


def write(directory: Path, name: str, content: str | bytes) -> Path:
    path = directory / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def table_counts() -> tuple[int, int, int]:
    """Runs, CSV file records and stored chunks: what a refused upload must leave at zero."""
    db.session.remove()
    count = sa.select(sa.func.count())
    return (
        db.session.scalar(count.select_from(Run)),
        db.session.scalar(count.select_from(CSVFile)),
        db.session.scalar(count.select_from(csv_chunks_table)),
    )
