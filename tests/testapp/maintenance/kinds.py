"""One task of each remaining collection kind, and tasks exercising callbacks."""

from __future__ import annotations

import datetime as dt
import typing as t
from enum import Enum

import pydantic
import sqlalchemy as sa

from flask_maintenance_tasks import Task, no_collection

from .. import Flag, Item, db

#: What callbacks and process() saw, per process (the in-process executor and
#: SimpleWorker run in the test's process).
EVENTS: list[t.Any] = []


class Colour(str, Enum):
    RED = "red"
    BLUE = "blue"


class ListTask(Task):
    collection = ["a", "b", "c", "d", "e"]

    def process(self, letter: str) -> None:
        EVENTS.append(letter)


class OnceTask(Task):
    collection = no_collection()

    def process(self) -> None:
        db.session.add(Flag(name="once", value="done"))


class SquaresTask(Task):
    """A custom enumerator: cursors are the last square's root."""

    class Parameters(pydantic.BaseModel):
        upto: int = 5

    def enumerator(self, cursor: int | None) -> t.Iterator[tuple[int, int]]:
        start = 1 if cursor is None else cursor + 1
        for n in range(start, self.params.upto + 1):
            yield n * n, n

    def process(self, square: int) -> None:
        EVENTS.append(square)


class ParamsTask(Task):
    """Parameters of many kinds, with a secret."""

    class Parameters(pydantic.BaseModel):
        content: str = pydantic.Field(min_length=1)
        mode: t.Literal["fast", "careful"] = "careful"
        limit: int = 10
        ids: list[int] = []
        enabled: bool = False
        colour: Colour = Colour.RED
        since: dt.date | None = None
        api_token: pydantic.SecretStr | None = None
        password: str | None = None

    collection = no_collection()

    def process(self) -> None:
        EVENTS.append(self.params.model_dump())


class CallbacksTask(Task):
    collection = [1, 2, 3]
    report_on = (KeyError,)

    def process(self, n: int) -> None:
        if n == 2:
            raise KeyError("reported, not fatal")
        EVENTS.append(("process", n))

    def after_start(self) -> None:
        EVENTS.append("start")

    def after_complete(self) -> None:
        EVENTS.append("complete")

    def after_pause(self) -> None:
        EVENTS.append("pause")

    def after_cancel(self) -> None:
        EVENTS.append("cancel")

    def after_error(self, error: BaseException) -> None:
        EVENTS.append(("error", str(error)))


class ExplodingCallbackTask(Task):
    collection = [1]

    def process(self, n: int) -> None:
        pass

    def after_complete(self) -> None:
        raise RuntimeError("after_complete went wrong")


class CountWithCustomCountTask(Task):
    def collection(self) -> t.Any:
        return sa.select(Item)

    def count(self) -> int:
        return 42

    def process(self, item: Item) -> None:
        item.counter += 1


class _HelperBase(Task):
    """Skipped by discovery: its name starts with an underscore."""


class Renamed(Task):
    name = "CustomName"
    collection = no_collection()

    def process(self) -> None:
        pass


class ForgetfulEnumeratorTask(Task):
    """A broken task: its enumerator ignores the cursor, so a resume starts over."""

    def enumerator(self, cursor: int | None) -> t.Iterator[tuple[str, int]]:
        yield from (("x", 0), ("y", 1), ("z", 2))

    def process(self, letter: str) -> None:
        EVENTS.append(letter)


class LeakyErrorTask(Task):
    """Fails with a message that quotes its secret arguments."""

    class Parameters(pydantic.BaseModel):
        api_key: pydantic.SecretStr
        password: str
        options: dict[str, t.Any] = {}

    collection = no_collection()

    def process(self) -> None:
        token = self.params.options.get("token")
        raise PermissionError(
            f"login refused for {self.params.password} with "
            f"{self.params.api_key.get_secret_value()} and {token}"
        )
