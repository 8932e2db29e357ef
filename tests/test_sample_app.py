"""The sample app's tasks, tested the way an app's own tests would: with the testing kit."""

from __future__ import annotations

import typing as t
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_maintenance_tasks import InvalidArguments, Run
from flask_maintenance_tasks.testing import resume_task, retry_task_failures, run_task
from sample_app import create_app
from sample_app.models import Post, SiteSetting, db, seed

# Both databases: the sample app's tasks run their own SQL (dates, upserts, batches).
pytestmark = pytest.mark.both_databases

POSTS = 120


@pytest.fixture
def app(database_url: str, monkeypatch: pytest.MonkeyPatch) -> t.Iterator[Flask]:
    """The sample app on the suite's database (this ``app`` feeds the kit's fixtures)."""
    monkeypatch.setenv("SAMPLE_APP_DATABASE_URL", database_url)
    monkeypatch.delenv("MAINTENANCE_TASKS_REDIS_URL", raising=False)
    app = create_app({"TESTING": True})
    with app.app_context():
        db.drop_all()
        db.create_all()
        seed(POSTS)
        yield app
        db.session.remove()
        db.drop_all()
        for engine in db.engines.values():
            engine.dispose()


def _touched() -> list[int]:
    db.session.remove()
    return list(db.session.scalars(sa.select(Post.touched).order_by(Post.id)))


def test_the_backfill_survives_an_interruption_after_every_seven_posts(mtasks_run_interrupted):
    run = mtasks_run_interrupted("BackfillWordCountTask", every=7)
    assert run.status == "succeeded"
    assert run.tick_count == POSTS
    assert db.session.scalar(sa.select(sa.func.count()).where(Post.word_count.is_(None))) == 0
    assert _touched() == [1] * POSTS
    words = db.session.scalar(sa.select(sa.func.sum(Post.word_count)))
    assert run.published["words"] == words  # exact across every interruption
    assert run.published["step"] == "done"


def test_the_link_check_walks_its_four_partitions_once_each(mtasks_run_interrupted):
    run = mtasks_run_interrupted("CheckLinksTask", every=7)
    assert (run.status, run.partitions, run.tick_count) == ("succeeded", 4, POSTS)
    assert _touched() == [1] * POSTS
    parts = db.session.scalars(
        sa.select(Run).where(Run.parent_id == run.id).order_by(Run.partition)
    ).all()
    assert [(part.status, part.tick_count) for part in parts] == [("succeeded", POSTS // 4)] * 4


def test_archiving_touches_only_old_posts_once(mtasks_run):
    run = mtasks_run("ArchiveOldPostsTask", {"before": "2020-04-01"})
    assert run.status == "succeeded"
    posts = db.session.execute(sa.select(Post.published_at, Post.archived, Post.touched)).all()
    old = [p for p in posts if p.published_at.month < 4]
    assert old and all(p.archived and p.touched == 1 for p in old)
    assert not any(p.archived or p.touched for p in posts if p.published_at.month >= 4)


def test_renaming_an_author_validates_its_parameters(mtasks_run):
    with pytest.raises(InvalidArguments, match="new_name"):
        mtasks_run("RenameAuthorTask", {"old_name": "ada", "new_name": ""})
    assert mtasks_run("RenameAuthorTask", {"old_name": "ada", "new_name": "lovelace"}).tick_count
    authors = set(db.session.scalars(sa.select(Post.author)))
    assert "ada" not in authors and "lovelace" in authors


def test_the_statistics_task_runs_once(mtasks_run):
    run = mtasks_run("RefreshStatisticsTask")
    assert (run.status, run.tick_count) == ("succeeded", 1)
    assert db.session.get(SiteSetting, "post_count").value == str(POSTS)


def test_the_monthly_enumerator_resumes_from_its_month(mtasks_run_interrupted):
    run = mtasks_run_interrupted("PostsByMonthTask", {"year": 2020}, seed=3, probability=0.5)
    assert (run.status, run.tick_count, run.cursor) == ("succeeded", 12, 12)
    counts = [int(db.session.get(SiteSetting, f"posts_2020_{m:02d}").value) for m in range(1, 13)]
    assert sum(counts) == POSTS


def test_the_failing_backfill_shows_the_bad_post_and_finishes_once_it_is_fixed(app):
    run = run_task("FailingBackfillTask")
    assert run.status == "errored"
    bad = run.errored_element["id"]
    assert run.error_message == f"Post {bad} has no content to excerpt"
    db.session.execute(sa.update(Post).where(Post.id == bad).values(content="now written"))
    db.session.commit()
    assert resume_task(run.id).status == "succeeded"
    assert _touched() == [1] * POSTS


def test_the_skipping_excerpt_records_the_bad_post_and_a_retry_resolves_it(app):
    run = run_task("SkipEmptyPostsTask")
    assert (run.status, run.failure_count) == ("succeeded", 1)
    [failure] = app.extensions["maintenance_tasks"].extension.failures(run.id)
    assert failure.message == f"Post {failure.item_key} has no content to excerpt"
    # The bad post's touch was undone with it; every other post was touched once.
    assert _touched().count(0) == 1 and _touched().count(1) == POSTS - 1
    db.session.execute(
        sa.update(Post).where(Post.id == failure.item_key).values(content="now written")
    )
    db.session.commit()
    retry = retry_task_failures(run.id)
    assert (retry.status, retry.tick_count) == ("succeeded", 1)
    assert _touched() == [1] * POSTS


def test_the_throttled_task_runs_when_the_site_is_quiet(mtasks_run):
    db.session.add(SiteSetting(key="maintenance_busy", value="no"))
    db.session.commit()
    assert mtasks_run("ThrottledTouchTask").status == "succeeded"
    assert _touched() == [1] * POSTS


def test_the_sample_csv_updates_twelve_posts_and_creates_twenty_four(app: Flask) -> None:
    sample_csv = Path(__file__).resolve().parent.parent / "sample_app" / "posts.csv"
    db.session.execute(sa.delete(Post))
    db.session.commit()
    seed(20)
    run = run_task("ImportPostsTask", csv_file=sample_csv)
    assert run.status == "succeeded", run.error_message
    assert run.tick_count == run.tick_total == 36
    posts = {post.id: post for post in db.session.scalars(sa.select(Post))}
    assert len(posts) == 20 + 24
    assert posts[1].title == "Notes on databases, part 1"
    assert posts[4].title == '"Backfills" in practice'
    assert posts[13].title == "Post number 13"  # not in the file
    assert posts[5024].word_count == len(posts[5024].content.split())
    assert {post.touched for post in posts.values() if post.id <= 12 or post.id > 20} == {1}
