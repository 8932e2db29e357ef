"""Tasks publishing a status with ``self.status``, and one on a queue of its own."""

from __future__ import annotations

import datetime as dt
import time
import typing as t

import pydantic
import sqlalchemy as sa

from flask_maintenance_tasks import Task, throttle_on

from .. import Item

#: A value published under a masked key: it must never be shown in clear.
SECRET = "s3cr3t-published-value"


class PublishingTask(Task):
    """Counts items in ``self.status`` (exact across slices), with two steps and a secret."""

    class Parameters(pydantic.BaseModel):
        sleep: float = 0.0
        #: ``"set"`` or ``"datetime"`` publishes a value that is no JSON, ``"big"`` too much.
        bad: t.Literal["set", "datetime", "big"] | None = None
        #: Publish ``marked`` at once (``now=True``) at this item's id.
        now_at: int | None = None
        #: Raise at this item's id.
        fail_at: int | None = None

    def collection(self) -> t.Any:
        return sa.select(Item)

    def after_start(self) -> None:
        if "count" not in self.status:
            self.status.update(step="counting", step_total=2, count=0)

    def process(self, item: Item) -> None:
        item.counter += 1
        self.status["count"] += 1
        self.status.update(last_id=item.id, api_token=SECRET)
        if self.params.bad == "set" and item.id == 3:
            self.status["tags"] = {"a", "b"}
        elif self.params.bad == "datetime" and item.id == 3:
            self.status["seen_at"] = dt.datetime.now(dt.timezone.utc)
        elif self.params.bad == "big" and item.id == 3:
            self.status["blob"] = "x" * 20_000
        if self.params.now_at == item.id:
            self.status.update(now=True, marked=item.id)
        if self.params.fail_at == item.id:
            raise RuntimeError(f"failing at item {item.id}")
        if self.params.sleep:
            time.sleep(self.params.sleep)

    def after_complete(self) -> None:
        self.status.update(step="reporting", result=f"counted {self.status['count']}")


class SlowQueueTask(Task):
    """Every job of its runs goes to the ``slow`` queue."""

    queue = "slow"

    class Parameters(pydantic.BaseModel):
        sleep: float = 0.0
        #: Back off once, for a moment, after this many items.
        throttle_at: int | None = None

    def collection(self) -> t.Any:
        return sa.select(Item)

    def process(self, item: Item) -> None:
        item.counter += 1
        self.status["count"] = self.status.get("count", 0) + 1
        if self.params.sleep:
            time.sleep(self.params.sleep)

    @throttle_on(backoff=0.3)
    def once_at(self) -> bool:
        # The status remembers that it fired: a counter on self would reset each slice.
        limit = self.params.throttle_at
        if limit is None or self.status.get("throttled") or self.status.get("count", 0) < limit:
            return False
        self.status["throttled"] = True
        return True


class PublishEveryItemTask(Task):
    """Adds one to every item's counter and publishes its count and place at every item."""

    class Parameters(pydantic.BaseModel):
        sleep: float = 0.0

    def collection(self) -> t.Any:
        return sa.select(Item)

    def process(self, item: Item) -> None:
        item.counter += 1
        self.status.update(count=self.status.get("count", 0) + 1, last_id=item.id)
        if self.params.sleep:
            time.sleep(self.params.sleep)
