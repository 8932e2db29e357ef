"""Tasks over the posts table, one of each kind of collection, and a CSV import."""

from __future__ import annotations

import datetime as dt
import time
import typing as t

import pydantic
import sqlalchemy as sa

from flask_maintenance_tasks import Task, csv_collection, in_batches, no_collection, throttle_on

from ..models import Post, SiteSetting, db


class BackfillWordCountTask(Task):
    """Fills ``word_count`` for posts that lack it: a backfill over a Select."""

    batch_size = 500

    def collection(self) -> t.Any:
        return sa.select(Post).where(Post.word_count.is_(None))

    def after_start(self) -> None:
        if "words" not in self.status:  # a resumed run carries on with its own figures
            self.status.update(step="counting words", step_total=2, words=0)

    def process(self, post: Post) -> None:
        post.word_count = len(post.content.split())
        post.touched += 1
        # Kept in the status, the total is exact however often the run is cut.
        self.status["words"] += post.word_count
        # Slow enough to watch in the demo, fast enough not to bore.
        time.sleep(0.001)

    def after_complete(self) -> None:
        self.status.update(step="done", result=f"{self.status['words']:,} words counted")


class CheckLinksTask(Task):
    """Asks an outside service about every post's links: partitions at work.

    Each post waits on the service (10 ms here), so one worker would take a
    while; ``partitions = 4`` cuts the posts into four ranges of ids that four
    workers walk side by side, one bar each on the run's card.
    """

    partitions = 4
    batch_size = 200

    def collection(self) -> t.Any:
        return sa.select(Post)

    def process(self, post: Post) -> None:
        time.sleep(0.01)  # the outside call
        post.touched += 1


class ArchiveOldPostsTask(Task):
    """Archives posts published before a date, one UPDATE per batch of 1,000."""

    class Parameters(pydantic.BaseModel):
        before: dt.date = dt.date(2020, 7, 1)

    def collection(self) -> t.Any:
        cutoff = dt.datetime.combine(self.params.before, dt.time())
        return in_batches(sa.select(Post).where(Post.published_at < cutoff), of=1000)

    def process(self, batch: t.Any) -> None:
        db.session.execute(
            batch.where(sa.update(Post).values(archived=True, touched=Post.touched + 1))
        )


class ThrottledTouchTask(Task):
    """Touches every post, backing off while the site says it is busy.

    ``flask --app sample_app shell`` then
    ``db.session.merge(SiteSetting(key="maintenance_busy", value="yes"))``
    makes it pause for 10 seconds at a time.
    """

    def collection(self) -> t.Any:
        return sa.select(Post)

    def process(self, post: Post) -> None:
        post.touched += 1

    @throttle_on(backoff=10)
    def site_is_busy(self) -> bool:
        setting = db.session.get(SiteSetting, "maintenance_busy")
        return setting is not None and setting.value == "yes"


class RenameAuthorTask(Task):
    """Renames an author on every post: a parameterised task."""

    class Parameters(pydantic.BaseModel):
        old_name: str = pydantic.Field(min_length=1)
        new_name: str = pydantic.Field(min_length=1, max_length=100)
        mode: t.Literal["dry-run", "apply"] = "apply"

    def collection(self) -> t.Any:
        return sa.select(Post).where(Post.author == self.params.old_name)

    def process(self, post: Post) -> None:
        if self.params.mode == "apply":
            post.author = self.params.new_name
            post.touched += 1


class RefreshStatisticsTask(Task):
    """Recomputes a site statistic once: a task without a collection."""

    collection = no_collection()

    def process(self) -> None:
        total = db.session.scalar(sa.select(sa.func.count()).select_from(Post))
        db.session.merge(SiteSetting(key="post_count", value=str(total)))


class PostsByMonthTask(Task):
    """Walks the months of a year with a custom enumerator; the cursor is the month."""

    class Parameters(pydantic.BaseModel):
        year: int = pydantic.Field(default=2020, ge=1970, le=2100)

    def enumerator(self, cursor: int | None) -> t.Iterator[tuple[tuple[int, int], int]]:
        for month in range((cursor or 0) + 1, 13):
            yield (self.params.year, month), month

    def count(self) -> int:
        return 12

    def process(self, year_month: tuple[int, int]) -> None:
        year, month = year_month
        start = dt.datetime(year, month, 1)
        end = dt.datetime(year + month // 12, month % 12 + 1, 1)
        total = db.session.scalar(
            sa.select(sa.func.count()).where(Post.published_at >= start, Post.published_at < end)
        )
        db.session.merge(SiteSetting(key=f"posts_{year}_{month:02d}", value=str(total)))


class FailingBackfillTask(Task):
    """Computes an excerpt of every post and fails on a post with no content.

    Seeded data has one such post: the run errors there, showing the post and
    the exception. Give the post some content and resume the run.
    """

    def collection(self) -> t.Any:
        return sa.select(Post)

    def process(self, post: Post) -> None:
        if not post.content:
            raise ValueError(f"Post {post.id} has no content to excerpt")
        post.touched += 1


class SkipEmptyPostsTask(Task):
    """Computes an excerpt of every post and skips, rather than stops at, a post with none.

    The skip error policy records the empty post in the run's failure ledger and
    goes on with the others (see the run's Failures page). Give the post some
    content, then click "Retry failed items": only that post is processed again.
    """

    error_policy = "skip"
    max_failure_rate = 0.05

    def collection(self) -> t.Any:
        return sa.select(Post)

    def process(self, post: Post) -> None:
        post.touched += 1
        if not post.content:
            raise ValueError(f"Post {post.id} has no content to excerpt")


class ImportPostsTask(Task):
    """Creates or updates posts from a CSV file, matched by id: a CSV task.

    Try it with the sample file (36 rows: 12 existing posts, 24 new ones)::

        flask --app sample_app mtasks run ImportPostsTask --csv sample_app/posts.csv --wait
    """

    collection = csv_collection(
        required_headers=("id", "title", "author", "content", "published_at"), strip=True
    )

    def process(self, row: dict[str, str]) -> None:
        post = db.session.get(Post, int(row["id"]))
        if post is None:
            post = Post(id=int(row["id"]), touched=0, archived=False)
            db.session.add(post)
        post.title = row["title"]
        post.author = row["author"]
        post.content = row["content"]
        post.published_at = dt.datetime.fromisoformat(row["published_at"])
        post.word_count = len(row["content"].split())
        post.touched += 1
