"""A tasks module for the dashboard's property tests: every shape a run form knows.

Used as ``tasks_package="tests.testapp.property_tasks"``, so that the other
tests' task lists stay as they are. Secrets sit at the top level (a
``SecretStr``, masked names) and at depth (a nested model's ``SecretStr`` and
masked name, a dict of models, free JSON that may hold ``{"password": ...}``).
"""

from __future__ import annotations

import datetime as dt
import enum
import typing as t

import pydantic
import sqlalchemy as sa

from flask_maintenance_tasks import Task, csv_collection, no_collection


class Shade(str, enum.Enum):
    LIGHT = "light"
    DARK = "dark"


class Account(pydantic.BaseModel):
    """A nested model: one field secret by its type, one by its name."""

    label: str = ""
    key: pydantic.SecretStr | None = None
    db_password: str = ""


class PropFormTask(Task):
    """Parameters of every shape the run form supports, secrets included."""

    allow_concurrent_runs = True

    class Parameters(pydantic.BaseModel):
        note: str = pydantic.Field(min_length=1)
        count: int = 0
        ratio: float = 0.5
        flag: bool = False
        maybe: bool | None = None
        mode: t.Literal["fast", "careful"] = "careful"
        level: t.Literal[1, 2, 3] = 2
        shade: Shade = Shade.LIGHT
        day: dt.date | None = None
        at_time: dt.time | None = None
        at: dt.datetime | None = None
        tags: list[str] = []
        ids: list[int] = []
        limits: dict[str, int] = {}
        extra: dict[str, t.Any] = {}
        items: list[dict[str, t.Any]] = []
        account: Account | None = None
        accounts: dict[str, Account] = {}
        api_key: pydantic.SecretStr | None = None
        password: str | None = None
        auth_token: str = ""

    collection = no_collection()

    def process(self) -> None:
        pass


class PropCSVTask(Task):
    """A CSV task with a parameter and a secret."""

    allow_concurrent_runs = True
    collection = csv_collection()

    class Parameters(pydantic.BaseModel):
        label: str = ""
        token: pydantic.SecretStr | None = None

    def process(self, row: t.Any) -> None:
        pass


class PropPlainTask(Task):
    """No parameters at all."""

    collection = no_collection()

    def process(self) -> None:
        pass


class PropNamedTask(Task):
    """A name of its own, with a dot and letters beyond ASCII."""

    name = "props.Réindexer"
    allow_concurrent_runs = True
    collection = no_collection()

    class Parameters(pydantic.BaseModel):
        scope: str = "all"
        secret_scope: str = ""

    def process(self) -> None:
        pass


class PropLedgerTask(Task):
    """Walks the items, writing HTML into each title, and its secret too in a dry run (which
    rolls it back: a secret written for real would be data any page may show); under
    ``skip``, an item titled ``bad`` or ``worse`` fails with the secret in its message.

    Run for real and as a dry run when the property world is built, so that the
    ledger's scrubbing and the dry run's sample of changes are tested end to end.
    """

    name = "PropLedgerTask"
    allow_concurrent_runs = True
    error_policy = "skip"

    class Parameters(pydantic.BaseModel):
        prefix: str = ""
        token: pydantic.SecretStr | None = None

    def collection(self) -> t.Any:
        from tests.testapp import Item

        return sa.select(Item).where(Item.title.startswith(self.params.prefix))

    def process(self, item: t.Any) -> None:
        token = self.params.token.get_secret_value() if self.params.token else ""
        title = item.title
        written = f"<script>alert('{item.id}')</script>"
        item.title = f"{written} {token}" if self.dry_run else written
        item.counter += 1
        if title == "bad":
            raise ValueError(f"item {item.id} is bad, token {token}")
        if title == "worse":
            raise KeyError(f"item {item.id} is worse, token {token}")
