"""The sample blog's models."""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped, mapped_column

db = SQLAlchemy()


class Post(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "posts"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(sa.String(200))
    content: Mapped[str] = mapped_column(sa.Text, default="")
    author: Mapped[str] = mapped_column(sa.String(100), default="")
    published_at: Mapped[datetime] = mapped_column(sa.DateTime)
    #: Filled by the backfill; None until then.
    word_count: Mapped[int | None] = mapped_column(sa.Integer)
    #: Set by the in_batches task.
    archived: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    #: How many times a task touched the post (a task should touch each once).
    touched: Mapped[int] = mapped_column(sa.Integer, default=0)


class SiteSetting(db.Model):  # type: ignore[name-defined,misc]
    """Key/value switches, e.g. ``maintenance_busy`` read by the throttled task."""

    __tablename__ = "site_settings"

    key: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    value: Mapped[str] = mapped_column(sa.String(500), default="")


def seed(count: int) -> None:
    """Replace every post with ``count`` generated ones; one is deliberately broken."""
    db.session.execute(sa.delete(Post))
    start = datetime(2020, 1, 1, tzinfo=timezone.utc).replace(tzinfo=None)
    rows = []
    for n in range(1, count + 1):
        rows.append(
            {
                "id": n,
                "title": f"Post number {n}",
                "content": " ".join(["lorem"] * (n % 40 + 1)),
                "author": ["ada", "grace", "linus", "guido"][n % 4],
                "published_at": start.replace(day=1 + n % 28, month=1 + n % 12),
                "word_count": None,
                "archived": False,
                "touched": 0,
            }
        )
    # One post the FailingBackfillTask chokes on: give it content, then resume.
    if rows:
        rows[len(rows) // 2]["content"] = ""
    db.session.execute(sa.insert(Post), rows)
    db.session.commit()
