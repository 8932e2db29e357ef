"""Properties of the dashboard under every way of opening it (Hypothesis).

Generated requests go to every route of the blueprint: any method, odd path
segments, query strings, form fields of every parameter shape, file parts,
headers, CSRF tokens valid or not, bodies that lie about their length. They
are sent by callers from here or elsewhere, through a proxy or not, logged in
or not, to one app per way of opening the dashboard (``tests.support.ways``,
which also says what each way lets each caller do). For every request:

- the answer is not a 5xx, and nothing is raised;
- no secret is in the answer (headers included): neither the secret values of
  the runs made beforehand (``SecretStr`` fields and masked names, at the top
  and at depth; the failed items of a run that failed for real, whose messages
  held its secret; the sample of changes of a dry run, whose values held it)
  nor the request's own secret, which it puts only where the contract masks a
  value;
- a caller who may not view a task sees nothing of its runs; a caller who may
  do nothing gets no dashboard page, nor a 404 telling what exists;
- the extension's tables and the RQ queue are unchanged unless the request was
  a POST carrying this session's CSRF token that the way authorizes for this
  caller, and then only runs of the task it names changed;
- the body is read only when the way authorizes the request, and a body
  claiming more than any limit is refused (413) without being read.

After a request that changed something, the pages showing the change are read
back and checked the same way; then the tables and the queue are put back, so
that every example starts from the same runs. A worker runs only while the
world is built (a run of PropLedgerTask for real and a dry run of it, for
their failed items and changes); a run started by a request stays enqueued.
The number of requests sent is printed at the end (``-s``).
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import io
import json
import os
import time
import typing as t
import urllib.parse
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask, got_request_exception, request, request_started, session
from flask_wtf.csrf import generate_csrf
from hypothesis import Phase, example, given, settings
from hypothesis import strategies as st
from redis import Redis

from flask_maintenance_tasks.models import runs_table
from tests.support.apps import FAST, close_app, empty_tables
from tests.support.dashboard import add_run
from tests.support.records import Snapshot, restore, seed_items, snapshot
from tests.support.services import RedisServer
from tests.support.ways import PROXY_HEADERS, Caller, Way, every_way
from tests.support.workers import drain

TASKS_PACKAGE = "tests.testapp.property_tasks"
FORM = "PropFormTask"
CSV = "PropCSVTask"
PLAIN = "PropPlainTask"
NAMED = "props.Réindexer"
#: A task with runs, gone from the code.
GONE = "PropGoneTask"
#: A task run for real and as a dry run when the world is built: failed items, changes.
LEDGER = "PropLedgerTask"
TASK_NAMES = (FORM, CSV, PLAIN, NAMED, GONE, LEDGER)
WAYS = every_way(hidden_task=CSV)
#: The way that lets everybody do everything.
OPEN = next(way for way in WAYS if way.name == "allow-anonymous")
#: Generated examples per way, and per database for the property on both (after
#: the usual requests, see ``usual_requests``): the module runs in about 25 seconds
#: on two cores, within the suite's time budget. ``MTASKS_PROPERTY_EXAMPLES``
#: multiplies both, for a longer search.
_SCALE = float(os.environ.get("MTASKS_PROPERTY_EXAMPLES", "1"))
EXAMPLES = int(35 * _SCALE)
DATABASE_EXAMPLES = int(20 * _SCALE)
#: A Content-Length beyond any sane limit of a dashboard request (1 TiB).
HUGE = 2**40
SETTINGS = {**FAST, "runs_per_page": 3, "max_csv_bytes": 64 * 1024}

#: Requests sent, by way; requests that changed runs, by way; answers, by status.
SENT: collections.Counter[str] = collections.Counter()
CHANGED: collections.Counter[str] = collections.Counter()
STATUSES: collections.Counter[int] = collections.Counter()


# -- what the runs made beforehand hold ------------------------------------------


def _marker() -> str:
    """A value no generated request can hold."""
    return uuid.uuid4().hex


#: Secret values stored in the runs made beforehand, each with where it is.
SECRETS: dict[str, str] = {}
#: Per task, a value its runs show to whoever may view the task.
VISIBLE = {name: _marker() for name in TASK_NAMES}
#: The secret of every generated request: only where the contract masks a value.
REQUEST_SECRET = "rq" + _marker()


def _secret(where: str) -> str:
    value = _marker()
    SECRETS[value] = where
    return value


def _form_arguments(n: int) -> dict[str, t.Any]:
    """Arguments of a run of PropFormTask, with secrets at the top and at depth."""
    at = f"run {n} of {FORM}:"
    return {
        "note": f"note {VISIBLE[FORM]}",
        "count": 2**70,
        "tags": ["a", "b"],
        "extra": {
            "nested": {"password": _secret(f"{at} extra.nested.password")},
            "rows": [{"api_token": _secret(f"{at} extra.rows.0.api_token")}, {"plain": 1}],
        },
        "items": [{"client_secret": _secret(f"{at} items.0.client_secret")}],
        "account": {
            "label": "main",
            "key": _secret(f"{at} account.key (SecretStr)"),
            "db_password": _secret(f"{at} account.db_password"),
        },
        "accounts": {"eu": {"key": _secret(f"{at} accounts.eu.key (SecretStr)")}},
        "api_key": _secret(f"{at} api_key (SecretStr)"),
        "password": _secret(f"{at} password"),
        "auth_token": _secret(f"{at} auth_token"),
    }


def _seed() -> list[tuple[int, str]]:
    """Runs of every task in several statuses (in the app context); ``(id, task)`` of each."""
    from tests.testapp import db, mtasks
    from tests.testapp.property_tasks import PropFormTask

    engine = db.engine
    stuck = datetime.now(timezone.utc) - timedelta(days=2)
    runs = []
    statuses = ("enqueued", "running", "pausing", "paused", "interrupted", "cancelling")
    for n, status in enumerate((*statuses, "cancelled", "succeeded", "errored")):
        params = PropFormTask.validate_arguments(_form_arguments(n))
        fields: dict[str, t.Any] = {"arguments": PropFormTask.dump_arguments(params)}
        if status in ("running", "pausing", "cancelling"):
            fields["updated_at"] = stuck  # the force buttons show
        if status == "errored":
            fields |= {"error_class": "ValueError", "error_message": f"bad {VISIBLE[FORM]}"}
        runs.append((add_run(engine, FORM, status, **fields), FORM))
    for status in ("paused", "succeeded"):
        content = f"id,title\n1,{VISIBLE[CSV]}\n".encode()
        arguments = {"label": VISIBLE[CSV], "token": _secret(f"{status} {CSV}: token")}
        run = mtasks.run(CSV, arguments, csv_file=("items.csv", io.BytesIO(content)))
        with engine.begin() as connection:
            connection.execute(
                runs_table.update().where(runs_table.c.id == run.id).values(status=status)
            )
        runs.append((run.id, CSV))
    runs.append((add_run(engine, PLAIN, "succeeded", arguments={}), PLAIN))
    named = {"scope": VISIBLE[NAMED], "secret_scope": _secret(f"{NAMED}: secret_scope")}
    runs.append((add_run(engine, NAMED, "paused", arguments=named), NAMED))
    for status in ("paused", "errored"):
        gone = {
            "note": VISIBLE[GONE],
            "password": _secret(f"{status} {GONE}: password"),
            "nested": [{"api_token": _secret(f"{status} {GONE}: nested.0.api_token")}],
        }
        runs.append((add_run(engine, GONE, status, arguments=gone), GONE))
    return runs


def _run_ledger_task(app: Flask) -> list[tuple[int, str]]:
    """A run of PropLedgerTask for real and a dry run of it, each done by a real worker (in
    the app context): items fail with the run's secret in their messages, which the ledger
    scrubs, and the dry run's sample of changes holds HTML and the secret, scrubbed too."""
    from tests.testapp import db, mtasks

    seed_items(8)
    with db.engine.begin() as connection:
        from tests.testapp import Item

        connection.execute(sa.update(Item).where(Item.id.in_([2, 5])).values(title="bad"))
        connection.execute(sa.update(Item).where(Item.id == 7).values(title="worse"))
    runs = []
    for dry in (False, True):
        what = "dry run" if dry else "run"
        arguments = {"prefix": "", "token": _secret(f"{what} of {LEDGER}: token")}
        run = mtasks.run(LEDGER, arguments, metadata={"note": VISIBLE[LEDGER]}, dry_run=dry)
        drain(app)
        runs.append((run.id, LEDGER))
    return runs


# -- the world: one app per way, on one database and one Redis -------------------


@dataclasses.dataclass(frozen=True)
class Session:
    """A session cookie holding a CSRF secret, its token, and a token of another session."""

    cookie: str
    token: str
    other_token: str


def _session(app: Flask) -> Session:
    made = []
    for _ in range(2):
        with app.test_request_context():
            token = generate_csrf()
            serializer = app.session_interface.get_signing_serializer(app)
            made.append((serializer.dumps(dict(session)), token))
    return Session(cookie=made[0][0], token=made[0][1], other_token=made[1][1])


@dataclasses.dataclass(repr=False)
class World:
    apps: dict[str, Flask]
    sessions: dict[str, Session]
    engine: sa.Engine
    redis: Redis
    #: The tables as every example starts from them.
    baseline: Snapshot
    #: ``(id, task name)`` of the runs made beforehand.
    runs: list[tuple[int, str]]
    #: Set by signals during a request: what Flask matched (endpoint, view
    #: arguments), and what the app raised (Flask answered it with a 500).
    matched: list[tuple[str | None, dict[str, t.Any]]]
    raised: list[BaseException]

    def _repr_pretty_(self, printer: t.Any, cycle: bool) -> None:
        printer.text("<the module's world>")  # how Hypothesis shows a failing example


@pytest.fixture(scope="module")
def database_url(request: pytest.FixtureRequest, sqlite_directory: Path) -> t.Iterator[str]:
    """The module's database, shared by the app of every way (overrides conftest's)."""
    if getattr(request, "param", "sqlite") == "postgresql":
        yield t.cast(str, request.getfixturevalue("postgresql_url"))
        return
    path = sqlite_directory / f"properties-{uuid.uuid4().hex}.db"
    yield f"sqlite:///{path}"
    for file in sqlite_directory.glob(f"{path.name}*"):
        file.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def world(database_url: str, redis_server: RedisServer) -> t.Iterator[World]:
    from tests.testapp import db

    if not redis_server.running:
        redis_server.start()
    redis = Redis.from_url(redis_server.url)
    redis.flushdb()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MTASKS_TEST_DATABASE_URL", database_url)
        env.setenv("MTASKS_TEST_REDIS_URL", redis_server.url)
        env.setenv("MTASKS_TEST_SETTINGS", json.dumps(SETTINGS))
        apps = {way.name: way.build(tasks_package=TASKS_PACKAGE) for way in WAYS}
    matched: list[tuple[str | None, dict[str, t.Any]]] = []
    raised: list[BaseException] = []

    def record_match(sender: Flask, **extra: t.Any) -> None:
        rule = request.url_rule
        matched.append((rule.endpoint if rule else None, dict(request.view_args or {})))

    def record_exception(sender: Flask, exception: BaseException, **extra: t.Any) -> None:
        raised.append(exception)

    try:
        first = apps[WAYS[0].name]
        empty_tables(first)
        with first.app_context():
            runs = _seed()
            engine = db.engine
        redis.flushdb()  # the CSV runs' jobs
        with pytest.MonkeyPatch.context() as env, first.app_context():
            env.setenv("MTASKS_TEST_DATABASE_URL", database_url)
            env.setenv("MTASKS_TEST_REDIS_URL", redis_server.url)
            env.setenv("MTASKS_TEST_SETTINGS", json.dumps(SETTINGS))
            runs += _run_ledger_task(first)
        redis.flushdb()
        for app in apps.values():
            request_started.connect(record_match, app)
            got_request_exception.connect(record_exception, app)
        yield World(
            apps=apps,
            sessions={name: _session(app) for name, app in apps.items()},
            engine=engine,
            redis=redis,
            baseline=snapshot(engine),
            runs=runs,
            matched=matched,
            raised=raised,
        )
    finally:
        for app in apps.values():
            request_started.disconnect(record_match, app)
            got_request_exception.disconnect(record_exception, app)
            close_app(app)
        redis.flushdb()
        redis.close()


@pytest.fixture(scope="module", autouse=True)
def _print_counts() -> t.Iterator[None]:
    started = time.monotonic()
    yield
    print(
        f"\n{__name__}: {sum(SENT.values())} requests in {time.monotonic() - started:.1f} s, "
        f"{sum(CHANGED.values())} of which changed runs; by way: {dict(SENT)}; "
        f"changes by way: {dict(CHANGED)}; statuses: {dict(sorted(STATUSES.items()))}"
    )


# -- generated requests --------------------------------------------------------------


class Token(enum.Enum):
    """A CSRF token of the world: this session's, or another session's."""

    VALID = "valid"
    OTHER = "other-session"


@dataclasses.dataclass(frozen=True)
class RunId:
    """The id of the ``index``-th run made beforehand."""

    index: int


Text = str | bytes | Token | RunId


@dataclasses.dataclass(frozen=True)
class File:
    name: str
    content: bytes
    content_type: str = "text/csv"


@dataclasses.dataclass(frozen=True)
class Probe:
    """A generated request, before the world's tokens and run ids are filled in."""

    method: str
    #: Path segments under the prefix, already quoted (some keep raw slashes).
    path: tuple[str | RunId, ...]
    query: tuple[tuple[str, Text], ...] | str = ()
    fields: tuple[tuple[str, Text], ...] = ()
    files: tuple[tuple[str, File], ...] = ()
    #: ``form``, ``multipart``, ``broken-multipart``, or the Content-Type of ``raw``.
    encoding: str = "form"
    raw: bytes = b""
    headers: tuple[tuple[str, Text], ...] = ()
    cookie: bool = True
    #: A Content-Length sent instead of the body's own.
    claimed_length: int | None = None
    caller: Caller = Caller()

    @property
    def sends_valid_token(self) -> bool:
        values = [v for k, v in (*self.fields, *self.headers) if k in ("csrf_token", "X-CSRFToken")]
        return self.cookie and Token.VALID in values


MASKED_KEYS = ("password", "Password", "db_password", "api_token", "TOKEN", "client_secret")
OTHER_KEYS = ("label", "key", "note", "a", "rows", "plain", "ĸéy", "")
#: Hostile text of every kind (besides generated text).
NASTY = ("", " ", "\x00", "<script>alert(1)</script>", "{{ 7*7 }}", "%s%n", "\u202e\ufeff")
NASTY += ("../../etc/passwd", "true", "null", "[]", "{}", "-0", "1e400", "NaN", "9" * 30, "١٢٣")
BIG_NUMBERS = (2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30, -(10**30))


def _deep(depth: int, kind: str) -> str:
    if kind == "list":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


deep_json = st.builds(
    _deep, st.sampled_from([20, 900, 1100, 5000, 100_000]), st.sampled_from(["list", "dict"])
)
#: More digits than Python converts to an int (4300), in JSON.
LONG_NUMBER = "9" * 5000
long_numbers = st.sampled_from([LONG_NUMBER, f"[{LONG_NUMBER}]", f'{{"a": -{LONG_NUMBER}}}'])
long_text = st.builds(
    lambda c, n: c * n, st.sampled_from("a9[{é\x00,"), st.sampled_from([300, 70_000])
)
invalid_utf8 = st.binary(max_size=6).map(lambda b: b"\xff\xc3(" + b)
big_integer = st.one_of(
    st.sampled_from(BIG_NUMBERS), st.integers(min_value=-(2**80), max_value=2**80)
).map(str)
hostile = st.one_of(st.text(max_size=20), st.sampled_from(NASTY), long_text, invalid_utf8)


def _is_masked(key: str, node: t.Any) -> bool:
    """Whether the contract masks ``key`` under ``node`` (a task's tree of secret fields)."""
    here = node.get(key, node.get("*")) if isinstance(node, dict) else None
    return here is True or any(p in key.lower() for p in ("password", "secret", "token"))


@st.composite
def json_with_secrets(draw: st.DrawFn, node: t.Any, depth: int = 0) -> t.Any:
    """A JSON value whose masked keys (by name, or by the secret tree ``node``) hold
    :data:`REQUEST_SECRET`."""
    if depth >= 3 or (depth and draw(st.integers(0, 3)) == 0):
        return draw(
            st.one_of(
                st.none(),
                st.booleans(),
                st.integers(),
                st.sampled_from(BIG_NUMBERS),
                st.floats(allow_nan=False, allow_infinity=False),
                st.text(max_size=10),
            )
        )
    if draw(st.integers(0, 3)) == 0:
        size = draw(st.integers(0, 3))
        return [draw(json_with_secrets(node, depth + 1)) for _ in range(size)]
    keys = list(MASKED_KEYS + OTHER_KEYS)
    if isinstance(node, dict):
        keys += [k for k in node if k != "*"]
    value = {}
    for _ in range(draw(st.integers(0, 4))):
        key = draw(st.sampled_from(keys) | st.sampled_from(MASKED_KEYS) | st.text(max_size=6))
        if _is_masked(key, node):
            value[key] = REQUEST_SECRET
        else:
            child = node.get(key, node.get("*", {})) if isinstance(node, dict) else {}
            value[key] = draw(json_with_secrets(child, depth + 1))
    return value


def _dumps(value: t.Any) -> str:
    return json.dumps(value, ensure_ascii=False)


#: The fields of each task's form by shape, as the task module declares them;
#: a ``json`` field carries its tree of secret fields.
FIELDS: dict[str, dict[str, t.Any]] = {
    FORM: {
        "note": "text",
        "count": "int",
        "ratio": "float",
        "flag": "bool",
        "maybe": "optional-bool",
        "mode": ("choice", ["fast", "careful"]),
        "level": ("choice", ["1", "2", "3"]),
        "shade": ("choice", ["light", "dark"]),
        "day": "date",
        "at_time": "time",
        "at": "datetime",
        "tags": "list",
        "ids": "int-list",
        "limits": ("json", {}),
        "extra": ("json", {}),
        "items": ("json", {}),
        "account": ("json", {"key": True}),
        "accounts": ("json", {"*": {"key": True}}),
        "api_key": "secret",
        "password": "secret",
        "auth_token": "secret",
    },
    CSV: {"label": "text", "token": "secret"},
    NAMED: {"scope": "text", "secret_scope": "secret"},
    LEDGER: {"prefix": "text", "token": "secret"},
}


def _values(spec: t.Any) -> tuple[st.SearchStrategy[Text], st.SearchStrategy[Text]]:
    """Text a field of ``spec`` accepts (mostly), and text that may break it."""
    kind, extra = spec if isinstance(spec, tuple) else (spec, None)
    worse: st.SearchStrategy[Text] = hostile
    valid: st.SearchStrategy[Text]
    if kind == "text":
        valid = st.text(min_size=1, max_size=30)
    elif kind == "int":
        valid, worse = st.integers(-5, 5).map(str) | big_integer, long_numbers | hostile
    elif kind == "float":
        valid = st.floats().map(repr) | st.sampled_from(["inf", "1e999", "0x1p3"])
    elif kind == "bool":
        valid = st.sampled_from(["true", "on", "1", "yes", "false", "", "TRUE"])
    elif kind == "optional-bool":
        valid = st.sampled_from(["", "true", "false", "yes", "no", "maybe"])
    elif kind == "choice":
        valid = st.sampled_from([*extra, ""])
    elif kind == "date":
        valid = st.dates().map(lambda d: d.isoformat())
    elif kind == "time":
        valid = st.times().map(lambda d: d.isoformat())
    elif kind == "datetime":
        valid = st.datetimes(timezones=st.none() | st.timezones()).map(lambda d: d.isoformat())
    elif kind in ("list", "int-list"):
        item = st.text(max_size=8) if kind == "list" else big_integer
        valid = st.lists(item, max_size=4).map(", ".join) | st.lists(item, max_size=4).map(_dumps)
        worse = st.lists(json_with_secrets({}), max_size=3).map(_dumps) | deep_json | hostile
        worse |= long_numbers
    elif kind == "json":
        valid, worse = json_with_secrets(extra).map(_dumps), deep_json | long_numbers | hostile
    else:
        assert kind == "secret", kind
        valid = st.just(REQUEST_SECRET)
    return valid, worse


#: For each field of each task: (text it accepts, any text).
FIELD_VALUES = {
    task: {name: _values(spec) for name, spec in fields.items()} for task, fields in FIELDS.items()
}


@st.composite
def form_fields(draw: st.DrawFn, task: str) -> list[tuple[str, Text]]:
    """Fields of the run form of ``task``; half the forms hold only values a field accepts."""
    clean = draw(st.booleans())
    fields: list[tuple[str, Text]] = []
    for name, (valid, worse) in FIELD_VALUES.get(task, {}).items():
        if name == "note" or draw(st.integers(0, 9)) < 4:
            fields.append((name, draw(valid if clean else st.one_of(valid, valid, worse))))
    if draw(st.integers(0, 3)) == 0:
        fields.append(("_partitions", draw(partitions_text if clean else any_partitions)))
    if not clean and draw(st.booleans()):
        name = draw(st.sampled_from([*FIELDS[FORM], "csrf_token"]) | st.text(max_size=10))
        fields.append((name, draw(hostile)))
    return fields


#: The run form's "Partitions" field (not a parameter): numbers in and out of range...
partitions_text = st.integers(-2, 18).map(str) | st.sampled_from(["", " 2 ", "01", "+3"])
#: ...and anything: huge or unicode digits, fractions, hostile text.
any_partitions = st.one_of(
    partitions_text,
    big_integer.map(str),
    st.sampled_from([LONG_NUMBER, "-" + LONG_NUMBER, "１２", "٣", "2.0", "1e1", "0x2", "²"]),
    hostile,
)


#: Names of real tasks, the form task most often.
real_names = st.sampled_from([FORM] * 4 + [CSV] * 2 + [PLAIN, NAMED, GONE, LEDGER])
#: Names of real tasks, half the time, and of none.
task_names = st.one_of(
    real_names,
    real_names,
    st.sampled_from(["props", f"{FORM}/runs", "..", ".", "%", "", "a\x00b", "N" * 3000]),
    st.text(min_size=1, max_size=15),
)


@st.composite
def segment(draw: st.DrawFn, name: str) -> str:
    """A path segment for ``name``: quoted whole, slashes too, or with its slashes raw."""
    return urllib.parse.quote(name, safe=draw(st.sampled_from(["", "", "", "/"])))


run_ids = st.one_of(
    st.integers(0, 16).map(RunId),
    st.integers(0, 16).map(RunId),
    st.sampled_from(["0", "99999", LONG_NUMBER, *[str(n) for n in BIG_NUMBERS if n > 0]]),
    st.integers(min_value=0, max_value=2**72).map(str),
    st.sampled_from(["-1", "1.5", "0x10", "１２", "007", "", "%00"]),
)


@st.composite
def cursor_query(draw: st.DrawFn) -> list[tuple[str, Text]]:
    if draw(st.booleans()):
        return []
    return [("cursor", draw(st.one_of(run_ids, st.integers(-5, 5).map(str), hostile)))]


@st.composite
def callers(draw: st.DrawFn) -> Caller:
    address = draw(
        st.sampled_from(["127.0.0.1", "127.0.0.1", "::1", "127.8.0.1", "203.0.113.7", "10.0.0.9"])
    )
    proxy = None
    if draw(st.integers(0, 3)) == 0:
        header = draw(st.sampled_from(PROXY_HEADERS))
        value = draw(st.sampled_from(["127.0.0.1", "203.0.113.9", "for=127.0.0.1", "unknown"]))
        proxy = (header, value)
    return Caller(remote_addr=address, proxy=proxy, logged_in=draw(st.integers(0, 3)) > 0)


header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40
)
csv_contents = st.one_of(
    st.text(max_size=5).map(lambda s: f"id,title\n1,x\n2,{s}\n".encode()),
    st.sampled_from([b"", b"\x00\xff\xfe", b'"unclosed,\n', b"a;b\r\n1", b"x," * 40_000]),
    st.binary(max_size=200),
)
#: The routes a request is aimed at, as often as each is drawn.
ROUTES = ("index", "task", "task", "task", "start", "start", "start", "start", "start")
ROUTES += ("control", "control", "control", "json", "csv", "runs", "static", "stray")
ROUTES += ("failures", "failures", "failures_csv", "retry", "retry")
ROUTES += ("preview", "preview", "dry", "for_real", "for_real", "run_page")
#: The routes of a run's failed items (see ``_run_ledger_task``), and the POST among them.
FAILURE_VIEWS = ("run_failures", "run_failures_csv", "retry_failures")
#: The views that change runs (with this session's token, when authorized).
ACTING_VIEWS = ("start_run", "control", "retry_failures", "run_for_real")
#: The acting views by run id: a run one may not view answers as a missing one.
BY_RUN_ID = ("retry_failures", "run_for_real")

#: What the runs page's filters are given: real values, or anything.
RUN_STATUSES = ("enqueued", "running", "paused", "succeeded", "errored", "cancelled")


@st.composite
def runs_filters(draw: st.DrawFn) -> list[tuple[str, Text]]:
    """The runs page's query: some of its filters, with real or hostile values, and a cursor."""
    query: list[tuple[str, Text]] = []
    for name, real in (("task", TASK_NAMES), ("status", RUN_STATUSES), ("who", ("ada", "x"))):
        if draw(st.booleans()):
            query.append((name, draw(st.sampled_from(real) | hostile)))
    return query + draw(cursor_query())


@st.composite
def failures_filters(draw: st.DrawFn) -> list[tuple[str, Text]]:
    """A failures page's query: error class, status and keyset, real values or anything."""
    query: list[tuple[str, Text]] = []
    real = (
        ("class", ("ValueError", "KeyError")),
        ("status", ("unresolved", "resolved", "failed_again", "gone")),
        ("after", ("0", "1", "2", "-1", LONG_NUMBER)),
    )
    for name, values in real:
        if draw(st.booleans()):
            query.append((name, draw(st.sampled_from(values) | big_integer | hostile)))
    return query


@st.composite
def probes(draw: st.DrawFn, routes: tuple[str, ...] = ROUTES) -> Probe:
    """A request to some route of the dashboard, as a browser, htmx or anybody might send it.

    Half the requests are as the dashboard's own pages send them (the method of
    the route, a real task, this session's token, a plain body), with generated
    values; the others vary everything.
    """
    route = draw(st.sampled_from(routes))
    usual = draw(st.booleans())
    natural = "POST" if route in ("start", "dry", "control", "retry", "for_real") else "GET"
    methods = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"]
    method = natural if usual else draw(st.sampled_from([natural, *methods]))
    task = draw(real_names if usual else task_names)
    path: tuple[str | RunId, ...]
    query: list[tuple[str, Text]] = []
    fields: list[tuple[str, Text]] = []
    files: list[tuple[str, File]] = []
    if route == "index":
        path = ("",)
        if draw(st.booleans()):
            query = [("q", draw(st.sampled_from(TASK_NAMES) | hostile))]
    elif route == "task":
        path = ("tasks", draw(segment(task)))
        query = draw(cursor_query()) + draw(form_fields(task))
    elif route == "preview":
        path = ("tasks", draw(segment(task)), "preview")
        query = draw(form_fields(task))
    elif route in ("start", "dry"):
        path = ("tasks", draw(segment(task)), "runs")
        fields = draw(form_fields(task))
        if route == "dry":
            fields.append(
                ("_dry_run", "1" if usual else draw(st.sampled_from(["1", "0"]) | hostile))
            )
        if task == CSV or not draw(st.integers(0, 9)):
            name = draw(st.sampled_from(["items.csv", "", "../x.csv", "a\x00.csv", "é" * 300]))
            kind = draw(st.sampled_from(["text/csv", ""]))
            files.append(("csv_file", File(name, draw(csv_contents), kind)))
    elif route == "control":
        action = draw(st.sampled_from(["pause", "resume", "cancel", "cancel", "delete"]))
        path = ("tasks", draw(segment(task)), "runs", draw(run_ids), action)
        query = draw(cursor_query())
    elif route == "json":
        path = ("runs", draw(run_ids), ".json")
    elif route == "run_page":
        path = ("runs", draw(run_ids))
    elif route == "csv":
        path = ("runs", draw(run_ids), "csv")
    elif route in ("failures", "failures_csv"):
        path = ("runs", draw(run_ids), "failures" if route == "failures" else "failures.csv")
        query = draw(failures_filters())
    elif route == "retry":
        path = ("runs", draw(run_ids), "retry-failures")
        query = draw(cursor_query())
    elif route == "for_real":
        path = ("runs", draw(run_ids), "run-for-real")
        query = draw(cursor_query())
    elif route == "runs":
        path = ("runs",)
        query = draw(runs_filters())
    elif route == "static":
        name = draw(st.sampled_from(["dashboard.css", "htmx.min.js", "../../web/views.py", "x"]))
        path = ("static", "maintenance_tasks", name)
    else:
        path = tuple(draw(st.lists(st.text(max_size=8).map(urllib.parse.quote), max_size=4)))

    headers: list[tuple[str, Text]] = []
    htmx = draw(st.booleans())
    if htmx:
        headers.append(("HX-Request", "true" if usual else draw(st.sampled_from(["true", "1"]))))
    token = "valid" if usual else draw(st.sampled_from(["valid", "none", "garbage", "other"]))
    value: Text = {"valid": Token.VALID, "other": Token.OTHER}.get(token) or draw(header_text)
    if token == "none":
        pass
    elif (usual and not htmx) or (not usual and draw(st.booleans())):
        fields.append(("csrf_token", value))  # what a form sends
    else:
        headers.append(("X-CSRFToken", value))  # what htmx sends
    for _ in range(draw(st.integers(0, 2))):
        name = draw(st.sampled_from(["Accept", "HX-Target", "HX-Current-URL", "Origin", "Referer"]))
        headers.append((name, draw(header_text)))

    encoding, raw, claimed, query_text = "form", b"", None, None
    if files:
        encoding = (
            "multipart" if usual else draw(st.sampled_from(["multipart", "broken-multipart"]))
        )
    if not usual:
        if not files and draw(st.booleans()):
            types = ["application/json", "text/plain", "multipart/form-data", "garbage/;;", ""]
            types += ["multipart", "broken-multipart", "application/x-www-form-urlencoded; x=y"]
            encoding = draw(st.sampled_from(types))
            raw = draw(st.binary(max_size=100) | deep_json.map(str.encode))
        if draw(st.booleans()):
            claimed = draw(st.sampled_from([0, 1, HUGE, 2**63]))
        if draw(st.booleans()):
            query_text = "&%ZZ=%FF&q=%C3" + draw(header_text)
    return Probe(
        method=method,
        path=path,
        query=tuple(query) if query_text is None else query_text,
        fields=tuple(fields),
        files=tuple(files),
        encoding=encoding,
        raw=raw,
        headers=tuple(headers),
        cookie=usual or draw(st.booleans()),
        claimed_length=claimed,
        caller=draw(callers()),
    )


# -- sending ---------------------------------------------------------------------


@dataclasses.dataclass
class Sent:
    """A request as sent, and what came back."""

    way: Way
    caller: Caller
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    status: int
    data: bytes
    #: Headers and body, as text.
    answer: str
    #: The app read (some of) the body.
    read: bool
    #: The endpoint Flask matched, and its arguments.
    endpoint: str | None
    view_args: dict[str, t.Any]
    raised: list[BaseException]

    def __str__(self) -> str:
        body = self.body[:300] + (b"..." if len(self.body) > 300 else b"")
        return (
            f"[{self.way.name}, {self.caller}] {self.method} {self.url[:400]} "
            f"headers={self.headers} body={body!r} -> {self.status}"
        )

    @property
    def view(self) -> str | None:
        """The dashboard view the request reached (``None``: no route, or not the dashboard)."""
        if self.endpoint is None or "maintenance_tasks." not in self.endpoint:
            return None
        return self.endpoint.rsplit(".", 1)[-1]


def _multipart(
    fields: list[tuple[str, str | bytes]], files: t.Sequence[tuple[str, File]], broken: bool
) -> tuple[bytes, str]:
    boundary = "----property" + uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in fields:
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        out.write((value.encode() if isinstance(value, str) else value) + b"\r\n")
    for name, file in files:
        out.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{file.name}"\r\n'.encode()
        )
        if file.content_type:
            out.write(f"Content-Type: {file.content_type}\r\n".encode())
        out.write(b"\r\n" + file.content + b"\r\n")
    if not broken:
        out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def send(world: World, way: Way, probe: Probe) -> Sent:
    """Fill in the world's tokens and run ids, and send the request to the way's app."""

    def fill(value: Text) -> str | bytes:
        if isinstance(value, Token):
            found = world.sessions[way.name]
            return found.token if value is Token.VALID else found.other_token
        if isinstance(value, RunId):
            return str(world.runs[value.index % len(world.runs)][0])
        return value

    path = way.prefix + "/" + "/".join(str(fill(p)) for p in probe.path)
    path = path.replace("/.json", ".json")
    if isinstance(probe.query, str):
        query = probe.query
    else:
        query = urllib.parse.urlencode([(k, fill(v)) for k, v in probe.query])
    fields = [(k, fill(v)) for k, v in probe.fields]
    headers = {**probe.caller.headers()}
    for name, value in probe.headers:
        filled = fill(value)
        headers[name] = filled.decode("latin-1") if isinstance(filled, bytes) else filled
    if probe.cookie:
        headers["Cookie"] = f"session={world.sessions[way.name].cookie}"
    if probe.encoding == "form":
        body = urllib.parse.urlencode(fields).encode()
        content_type = "application/x-www-form-urlencoded"
    elif probe.encoding in ("multipart", "broken-multipart"):
        body, content_type = _multipart(fields, probe.files, probe.encoding != "multipart")
    else:
        body, content_type = probe.raw, probe.encoding
    if probe.method in ("GET", "HEAD", "OPTIONS") and not probe.raw:
        body, content_type = b"", ""
    overrides = {}
    if probe.claimed_length is not None:
        overrides["CONTENT_LENGTH"] = str(probe.claimed_length)
    return exchange(
        world, way, probe.caller, probe.method, path, query, headers, body, content_type, overrides
    )


def exchange(
    world: World,
    way: Way,
    caller: Caller,
    method: str,
    path: str,
    query: str,
    headers: dict[str, str],
    body: bytes = b"",
    content_type: str = "",
    environ_overrides: dict[str, str] | None = None,
) -> Sent:
    stream = io.BytesIO(body)
    world.matched.clear()
    world.raised.clear()
    url = path + ("?" + query if query else "")
    SENT[way.name] += 1
    try:
        # Cookies are sent as they are given (no cookie jar): every request of a
        # way carries the same session, whatever an earlier answer set.
        response = (
            world.apps[way.name]
            .test_client(use_cookies=False)
            .open(
                path,
                method=method,
                query_string=query,
                headers=headers,
                input_stream=stream,
                content_length=len(body),
                content_type=content_type or None,
                environ_base=caller.environ(),
                environ_overrides=environ_overrides or {},
            )
        )
    except Exception as exc:  # the app let it out (debug or testing): a 5xx elsewhere
        raise ServerError(f"[{way.name}, {caller}] {method} {url[:300]} raised {exc!r}") from exc
    data = response.get_data()
    response.close()
    STATUSES[response.status_code] += 1
    endpoint, view_args = world.matched[0] if world.matched else (None, {})
    return Sent(
        way=way,
        caller=caller,
        method=method,
        url=url,
        headers=headers,
        body=body,
        status=response.status_code,
        data=data,
        answer=str(response.headers) + "\n" + data.decode("utf-8", "replace"),
        read=stream.tell() > 0,
        endpoint=endpoint,
        view_args=view_args,
        raised=list(world.raised),
    )


# -- checking ---------------------------------------------------------------------


class Problem(AssertionError):
    """Something a property found wrong. Each kind is a class of its own, so that
    Hypothesis reports an example of each kind, not only of the first it meets."""


class ServerError(Problem):
    """A 5xx, or an exception out of the app."""


class Leak(Problem):
    """A secret in the answer."""


class Shown(Problem):
    """Runs of a task shown to a caller who may not view it."""


class NotRefused(Problem):
    """An answer other than a refusal to a caller who may do nothing, or may not view."""


class BodyRead(Problem):
    """A body read though the request is not authorized, or claims more than any limit."""


class Changed(Problem):
    """Runs or the queue changed by a request not allowed to change them."""


Problems = list[tuple[type[Problem], str]]


def _asks(world: World, sent: Sent) -> tuple[str, str | None] | None:
    """What the request needs ``authorize`` to allow: ``(action, task name)``."""
    args = sent.view_args
    if sent.view == "index":
        return "view", None
    if sent.view in ("task", "task_preview"):
        return "view", args["name"]
    if sent.view == "start_run":
        return "run", args["name"]
    if sent.view == "control":
        return args["action"], args["name"]
    if sent.view in ("run_page", "run_json", "run_csv", "run_failures", "run_failures_csv"):
        return "view", dict(world.runs).get(args["run_id"])
    if sent.view == "retry_failures":
        return "retry_failures", dict(world.runs).get(args["run_id"])
    if sent.view == "run_for_real":
        return "run", dict(world.runs).get(args["run_id"])
    return None


def answer_problems(world: World, sent: Sent) -> Problems:
    """What is wrong with an answer: a 5xx, a secret, what the caller may not see."""
    way, caller = sent.way, sent.caller
    problems: Problems = []
    if sent.status >= 500:
        problems.append((ServerError, f"{sent.status} ({sent.raised!r:.300})"))
    leaked = [f"{SECRETS[s]} ({s})" for s in SECRETS if s in sent.answer]
    if leaked:
        problems.append((Leak, f"stored secrets in the answer: {leaked}"))
    if REQUEST_SECRET in sent.answer:
        problems.append((Leak, f"the request's secret ({REQUEST_SECRET}) is in the answer"))
    hidden = [n for n in TASK_NAMES if not way.may(caller, "view", n) and VISIBLE[n] in sent.answer]
    if hidden:
        problems.append((Shown, f"runs of {hidden}, which the caller may not view, are shown"))
    if sent.view is None or sent.view == "static":
        return problems
    # Flask answers OPTIONS from the URL map alone: no data, nothing asked of the app.
    automatic_options = sent.method == "OPTIONS" and not sent.data
    refused = 400 <= sent.status < 500 and sent.status != 404
    asks = _asks(world, sent)
    if not way.opens_to(caller) and not refused and not automatic_options:
        problems.append((NotRefused, "the way is closed to the caller, yet no refusal"))
    elif asks and asks[0] == "view" and sent.method in ("GET", "HEAD") and not refused:
        # A run known by its id alone that one may not view answers as a missing one.
        by_id = ("run_page", "run_json", "run_csv", "run_failures", "run_failures_csv")
        hidden_run = sent.status == 404 and sent.view in by_id
        if not way.may(caller, "view", asks[1]) and not hidden_run:
            what = asks[1] or "the dashboard"
            problems.append((NotRefused, f"the caller may not view {what}, yet no refusal"))
    return problems


def _changed_tasks(before: Snapshot, after: Snapshot) -> set[str]:
    """The tasks whose runs were added, removed or changed."""
    old = {row["id"]: row for row in before["maintenance_tasks_runs"]}
    new = {row["id"]: row for row in after["maintenance_tasks_runs"]}
    changed = [i for i in old.keys() | new.keys() if old.get(i) != new.get(i)]
    return {(old.get(i) or new[i])["task_name"] for i in changed}


def check(world: World, way: Way, probe: Probe) -> None:
    """Send ``probe``, check everything, and put back whatever it changed, pass or fail."""
    sent = send(world, way, probe)
    after = snapshot(world.engine)
    queued = world.redis.keys("*")
    changed = after != world.baseline or bool(queued)
    try:
        problems = answer_problems(world, sent) + request_problems(world, probe, sent)
        if changed:
            CHANGED[way.name] += 1
            problems += change_problems(world, probe, sent, after, queued)
        if problems:
            kind = problems[0][0]
            raise kind(f"{sent}\n- " + "\n- ".join(text for _, text in problems))
    finally:
        if changed:
            restore(world.engine, world.baseline)
            world.redis.flushdb()


def _authorized(world: World, sent: Sent, *, viewing: bool = False) -> bool:
    """Whether the request is an action the way authorizes for its caller (and, with
    ``viewing``, lets the caller see the task's runs, which the answer may show)."""
    asks = _asks(world, sent)
    if not (sent.method == "POST" and sent.view in ACTING_VIEWS and asks):
        return False
    may = sent.way.may
    # A retry is by run id: a run one may not view answers as a missing one, body unread.
    viewing = viewing or sent.view in BY_RUN_ID
    return may(sent.caller, *asks) and (not viewing or may(sent.caller, "view", asks[1]))


def request_problems(world: World, probe: Probe, sent: Sent) -> Problems:
    """What is wrong with how the body was handled."""
    problems: Problems = []
    huge = (probe.claimed_length or 0) >= HUGE
    if sent.read and not _authorized(world, sent):
        problems.append((BodyRead, "the body was read, yet the request is not authorized"))
    if sent.read and huge:
        problems.append((BodyRead, f"a body claiming {probe.claimed_length} bytes was read"))
    if huge and sent.method == "POST" and sent.view in ACTING_VIEWS:
        header_token = probe.cookie and ("X-CSRFToken", Token.VALID) in probe.headers
        if _authorized(world, sent, viewing=True) and header_token and sent.status != 413:
            problems.append((BodyRead, "a body beyond any limit, all else in order, is not a 413"))
        elif not 400 <= sent.status < 500:
            problems.append((BodyRead, "a body beyond any limit is not refused"))
    return problems


def change_problems(
    world: World, probe: Probe, sent: Sent, after: Snapshot, queued: list[bytes]
) -> Problems:
    """What is wrong with a change: unauthorized, or beyond the task; and the pages showing it."""
    written = _new_events(world.baseline, after)
    secret = [value for value in (*SECRETS, REQUEST_SECRET) if value in repr(written)]
    if secret:
        return [(Leak, f"a secret went into the audit trail: {written}")]
    if _only_a_download(world, sent, after, queued):
        return []
    if not (_authorized(world, sent) and probe.sends_valid_token):
        return [(Changed, f"the runs or the queue changed (queue: {queued})")]
    asks = _asks(world, sent)
    assert asks is not None
    touched = _changed_tasks(world.baseline, after)
    if not touched <= {asks[1]}:
        return [(Changed, f"runs of {touched} changed")]
    return _read_back(world, sent, asks[1], after)


def _new_events(before: Snapshot, after: Snapshot) -> list[dict[str, t.Any]]:
    """The rows the request added to the audit trail."""
    known = {row["id"] for row in before["maintenance_tasks_events"]}
    return [row for row in after["maintenance_tasks_events"] if row["id"] not in known]


def _only_a_download(world: World, sent: Sent, after: Snapshot, queued: list[bytes]) -> bool:
    """A CSV file given to a viewer: the one change a GET makes is its ``csv_downloaded`` event."""
    if sent.status != 200 or sent.method != "GET" or queued:
        return False
    written = _new_events(world.baseline, after)
    rest = {name: rows for name, rows in after.items() if name != "maintenance_tasks_events"}
    unchanged = rest == {n: r for n, r in world.baseline.items() if n != "maintenance_tasks_events"}
    return (
        unchanged
        and sent.view == "run_csv"
        and len(written) == 1
        and written[0]["action"] == "csv_downloaded"
        and sent.way.may(sent.caller, "view", written[0]["task_name"])
    )


def _read_back(world: World, sent: Sent, task: str | None, after: Snapshot) -> Problems:
    """Read the pages showing what changed (pages, fragments, JSON), and check each."""
    way, caller = sent.way, sent.caller
    headers = {**caller.headers(), "Cookie": f"session={world.sessions[way.name].cookie}"}
    before = {row["id"]: row for row in world.baseline["maintenance_tasks_runs"]}
    changed = [r["id"] for r in after["maintenance_tasks_runs"] if before.get(r["id"]) != r]
    paths = [way.prefix + "/", way.prefix + "/tasks/" + urllib.parse.quote(task or "", safe="")]
    paths += [f"{way.prefix}/runs/{run_id}.json" for run_id in changed]
    if sent.view in BY_RUN_ID:
        paths += [f"{way.prefix}/runs/{sent.view_args['run_id']}/failures"]
    problems: Problems = []
    for path in paths:
        for extra in ({}, {"HX-Request": "true"}):
            shown = exchange(world, way, caller, "GET", path, "", {**headers, **extra})
            problems += [(k, f"read back {shown}: {p}") for k, p in answer_problems(world, shown)]
    return problems


# -- the properties -----------------------------------------------------------------

#: Shrinking costs minutes per failing way (up to Hypothesis's own limit), and
#: a failure already shows the request as sent: ``make test`` does without.
#: ``MTASKS_PROPERTY_SHRINK=1`` brings it back, for the smallest failing requests.
PHASES = (
    tuple(Phase)
    if os.environ.get("MTASKS_PROPERTY_SHRINK")
    else (Phase.explicit, Phase.reuse, Phase.generate)
)
#: Werkzeug's multipart parser drops its spooled file unclosed when a body ends
#: before its last boundary (a truncated or broken upload): collected, not ours.
WERKZEUG_SPOOL = (
    "ignore:Exception ignored in. <function SpooledTemporaryFile.__del__"
    ":pytest.PytestUnraisableExceptionWarning"
)


def _usual_requests() -> list[Probe]:
    """Each route as the dashboard's own pages ask for it: every way sees them all.

    Run indexes (see ``_seed``): 0 an enqueued, 3 a paused, 8 an errored run
    of PropFormTask; 9 a paused run of PropCSVTask; 12 of props.Réindexer; 13
    a paused run of the gone task.
    """
    me = Caller(logged_in=True)
    form, htmx = ("csrf_token", Token.VALID), (("HX-Request", "true"), ("X-CSRFToken", Token.VALID))
    nested = json.dumps({"nested": [{"password": REQUEST_SECRET}], "plain": 1})
    account = json.dumps({"label": "a", "key": REQUEST_SECRET, "db_password": REQUEST_SECRET})
    arguments = (("note", "n"), ("extra", nested), ("items", f"[{nested}]"), ("account", account))
    arguments += (("api_key", REQUEST_SECRET), ("password", REQUEST_SECRET), ("ids", "1, 2"))
    csv = (("csv_file", File("items.csv", b"id,title\n1,x\n")),)
    start = ("tasks", FORM, "runs")
    usual = [Probe("GET", ("",), caller=me), Probe("GET", ("",), headers=htmx, caller=me)]
    usual += [Probe("GET", ("tasks", urllib.parse.quote(n)), caller=me) for n in TASK_NAMES]
    usual += [
        Probe("GET", ("tasks", FORM), query=(*arguments, ("cursor", RunId(8))), caller=me),
        Probe("POST", start, fields=(*arguments, form), caller=me),
        Probe("POST", start, fields=(*arguments, ("count", "x"), form), caller=me),
        Probe("POST", start, fields=(("extra", _deep(5000, "list")), form), caller=me),
        Probe("POST", start, fields=arguments, headers=htmx, claimed_length=HUGE, caller=me),
        Probe("POST", ("tasks", CSV, "runs"), fields=(form,), files=csv, encoding="multipart"),
        Probe("POST", ("tasks", PLAIN, "runs"), fields=(form,), caller=me),
        Probe("POST", ("tasks", FORM, "runs", RunId(0), "pause"), fields=(form,), caller=me),
        Probe("POST", ("tasks", FORM, "runs", RunId(3), "resume"), headers=htmx, caller=me),
        Probe("POST", ("tasks", FORM, "runs", RunId(8), "resume"), fields=(form,), caller=me),
        Probe("POST", ("tasks", CSV, "runs", RunId(9), "cancel"), headers=htmx, caller=me),
        Probe("POST", ("tasks", GONE, "runs", RunId(13), "cancel"), fields=(form,), caller=me),
        Probe("POST", ("tasks", FORM, "runs", str(2**64), "cancel"), fields=(form,), caller=me),
        Probe("GET", ("runs", RunId(9), "csv"), caller=me),
        Probe("GET", ("runs", str(2**64), ".json"), caller=me),
        Probe("GET", ("",), caller=Caller("127.0.0.1", ("X-Forwarded-For", "203.0.113.9"))),
        Probe("GET", ("tasks", CSV), caller=Caller("203.0.113.7")),
    ]
    usual += [Probe("GET", ("runs", RunId(i), ".json"), caller=me) for i in (0, 9, 12, 13)]
    # The failed items of run 15 (PropLedgerTask, run for real by a worker); retried, refused.
    usual += [
        Probe("GET", ("runs", RunId(15), "failures"), caller=me),
        Probe("GET", ("runs", RunId(15), "failures"), query=(("class", "KeyError"),), caller=me),
        Probe("GET", ("runs", RunId(15), "failures"), query=(("after", "1"),), caller=me),
        Probe("GET", ("runs", RunId(15), "failures.csv"), caller=me),
        Probe("GET", ("runs", RunId(16), "failures"), caller=me),
        Probe("GET", ("runs", RunId(15), "failures"), query=(("status", "x\x00"),), caller=me),
        Probe("POST", ("runs", RunId(15), "retry-failures"), fields=(form,), caller=me),
        Probe("POST", ("runs", RunId(15), "retry-failures"), headers=htmx, caller=me),
        Probe("POST", ("runs", RunId(8), "retry-failures"), fields=(form,), caller=me),
        Probe("POST", ("runs", RunId(0), "retry-failures"), fields=(form,), caller=me),
        Probe("POST", ("runs", RunId(15), "retry-failures"), caller=me),
    ]
    # Run 16 is a succeeded dry run of PropLedgerTask: its card, its JSON, run for real
    # (refused for run 15, no dry run, and without a token); the previews; a dry run started.
    ledger = ("tasks", LEDGER)
    secret = (("prefix", "item"), ("token", REQUEST_SECRET))
    usual += [
        Probe("GET", ledger, caller=me),
        Probe("GET", ("runs", RunId(16), ".json"), caller=me),
        Probe("GET", ("runs",), query=(("task", LEDGER),), caller=me),
        Probe("POST", ("runs", RunId(16), "run-for-real"), fields=(form,), caller=me),
        Probe("POST", ("runs", RunId(16), "run-for-real"), headers=htmx, caller=me),
        Probe("POST", ("runs", RunId(15), "run-for-real"), fields=(form,), caller=me),
        Probe("POST", ("runs", RunId(16), "run-for-real"), caller=me),
        Probe("GET", (*ledger, "preview"), query=secret, headers=htmx, caller=me),
        Probe("GET", (*ledger, "preview"), query=(("prefix", "a\x00"),), caller=me),
        Probe("GET", ("tasks", FORM, "preview"), query=arguments, headers=htmx, caller=me),
        Probe("GET", ("tasks", FORM, "preview"), query=(("count", LONG_NUMBER),), caller=me),
        Probe("GET", ("tasks", CSV, "preview"), query=(("token", REQUEST_SECRET),), caller=me),
        Probe("POST", (*ledger, "runs"), fields=(*secret, ("_dry_run", "1"), form), caller=me),
        Probe("POST", start, fields=(*arguments, ("_dry_run", "1"), form), caller=me),
    ]
    return usual


def usual_requests(test: t.Callable[..., None]) -> t.Callable[..., None]:
    """Hypothesis tries :func:`_usual_requests` first (its explicit phase), then generates."""
    for probe in reversed(_usual_requests()):
        test = example(probe=probe)(test)
    return test


@pytest.mark.filterwarnings(WERKZEUG_SPOOL)
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("way", WAYS, ids=[way.name for way in WAYS])
@settings(max_examples=EXAMPLES, deadline=None, phases=PHASES)
@usual_requests
@given(probe=probes())
def test_no_request_breaks_the_dashboard_leaks_or_acts_unauthorized(
    world: World, way: Way, probe: Probe
) -> None:
    check(world, way, probe)


@pytest.mark.both_databases
@pytest.mark.filterwarnings(WERKZEUG_SPOOL)
@settings(max_examples=DATABASE_EXAMPLES, deadline=None, phases=PHASES)
@usual_requests
@given(probe=probes(routes=("task", "start", "start", "control", "json", "csv", "failures")))
def test_ids_cursors_and_arguments_of_any_size_on_either_database(
    world: World, probe: Probe
) -> None:
    """What reaches the database (run ids, cursors, arguments), on SQLite and PostgreSQL."""
    check(world, OPEN, probe)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_worlds_failed_items_and_dry_run_hold_scrubbed_secrets(world: World) -> None:
    """What the probes of the failures and dry run routes meet: failed items of a run that
    failed for real, whose messages held the run's secret, shown scrubbed; a dry run whose
    sample of changes held HTML and the secret; and both buttons working."""
    me = Caller(logged_in=True)
    real_run, dry_run = world.runs[15][0], world.runs[16][0]
    form = (("csrf_token", Token.VALID),)
    pages = [
        send(world, OPEN, Probe("GET", ("runs", RunId(i), "failures"), caller=me)) for i in (15, 16)
    ]
    task_page = send(world, OPEN, Probe("GET", ("tasks", LEDGER), caller=me))
    download = send(world, OPEN, Probe("GET", ("runs", RunId(15), "failures.csv"), caller=me))
    try:
        retried = send(
            world,
            OPEN,
            Probe("POST", ("runs", RunId(15), "retry-failures"), fields=form, caller=me),
        )
        with world.engine.connect() as connection:
            retry_of = connection.scalar(
                sa.select(runs_table.c.retry_of_id).where(runs_table.c.retry_of_id == real_run)
            )
    finally:
        restore(world.engine, world.baseline)
        world.redis.flushdb()
    try:
        for_real = send(
            world, OPEN, Probe("POST", ("runs", RunId(16), "run-for-real"), fields=form, caller=me)
        )
        with world.engine.connect() as connection:
            started = connection.execute(
                sa.select(runs_table.c.dry_run, runs_table.c.status).where(
                    runs_table.c.id > max(run_id for run_id, _ in world.runs)
                )
            ).all()
    finally:
        restore(world.engine, world.baseline)
        world.redis.flushdb()

    for sent in [*pages, download, task_page]:
        assert sent.status == 200, sent
        assert "[FILTERED]" in sent.answer and not answer_problems(world, sent)
    assert "Failed items: 3" in task_page.answer and "ValueError" in pages[0].answer
    answer = task_page.answer
    card = answer[answer.rindex("<article", 0, answer.index(f'id="run-{dry_run}"')) :]
    card = card[: card.index("</article>")]
    # Eight items, three of which failed: their writes were undone, and not counted.
    assert "tag-dry-run" in card and "Would update 5 rows of items: counter, title" in card
    assert "&lt;script&gt;alert(" in card and "<script>alert(" not in task_page.answer
    assert f'id="run-{dry_run}-run-for-real"' in card
    assert retried.status == 303 and retry_of == real_run
    assert for_real.status == 303 and [tuple(row) for row in started] == [(False, "enqueued")]
