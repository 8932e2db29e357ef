"""Tasks of the dashboard tests: every kind of form field, and a hostile error."""

from __future__ import annotations

import datetime as dt
import typing as t

import pydantic

from flask_maintenance_tasks import Task, no_collection

#: What the dashboard tests use as hostile text: it must come out escaped.
HOSTILE = "<script>alert('pwned')</script>"


class Credentials(pydantic.BaseModel):
    user: str
    key: pydantic.SecretStr


class WebFormKindsTask(Task):
    """Parameters of the kinds the run form knows, one of each."""

    class Parameters(pydantic.BaseModel):
        note: str = pydantic.Field(description="What this run is for.")
        ratio: float = 0.5
        level: t.Literal[1, 2, 3] = 2
        at: dt.datetime | None = None
        at_time: dt.time | None = None
        strict: bool | None = None
        tags: list[str] = []
        limits: dict[str, int] = {}
        credentials: Credentials | None = None

    collection = no_collection()

    def process(self) -> None:
        pass


class WebNestedSecretsTask(Task):
    """JSON parameters that may hold a masked name at any depth."""

    class Parameters(pydantic.BaseModel):
        note: str = ""
        options: dict[str, t.Any] = {}
        servers: list[dict[str, str]] = []
        accounts: dict[str, Credentials] = {}

    collection = no_collection()

    def process(self) -> None:
        pass


class WebHostileErrorTask(Task):
    """Fails with a message that is also markup."""

    class Parameters(pydantic.BaseModel):
        message: str = HOSTILE

    collection = [1, 2]

    def process(self, n: int) -> None:
        if n == 2:
            raise ValueError(self.params.message)
