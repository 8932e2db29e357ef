"""The ways of opening the dashboard (API.md section 1), and whom each one lets do what.

A :class:`Way` builds the test app opened one way; :meth:`Way.may` is the
contract for it, written once: what a :class:`Caller` (where the request comes
from, whether it went through a proxy, whether it logged in to the parent
blueprint) may do. Tests that send requests to every way assert against it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import typing as t

from flask import Blueprint, Flask, request

#: What a run button, the run form or "Retry failed items" asks ``authorize`` for; pages ask
#: for ``"view"`` (the preview too). "Dry run" and "Run for real" ask for ``"run"``.
ACTIONS = ("view", "run", "pause", "resume", "cancel", "retry_failures")
#: Headers a reverse proxy adds: a request carrying one did not come from this machine.
PROXY_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")
#: The parent blueprint's login: this header with this value.
LOGIN_HEADER = "X-Test-Operator"
LOGIN_VALUE = "logged-in"
URL_PREFIX = "/maintenance_tasks"
PARENT_PREFIX = "/admin"


@dataclasses.dataclass(frozen=True)
class Caller:
    """Who sends a request."""

    remote_addr: str = "127.0.0.1"
    #: A proxy header the request carries (one of :data:`PROXY_HEADERS`), and its value.
    proxy: tuple[str, str] | None = None
    #: Sends the parent blueprint's login header.
    logged_in: bool = False

    @property
    def local(self) -> bool:
        """On the loopback address, not through a proxy."""
        return ipaddress.ip_address(self.remote_addr).is_loopback and self.proxy is None

    def environ(self) -> dict[str, str]:
        return {"REMOTE_ADDR": self.remote_addr}

    def headers(self) -> dict[str, str]:
        headers = {LOGIN_HEADER: LOGIN_VALUE} if self.logged_in else {}
        if self.proxy is not None:
            headers[self.proxy[0]] = self.proxy[1]
        return headers


Permits = t.Callable[[Caller, str, "str | None"], bool]


def _nobody(caller: Caller, action: str, task_name: str | None) -> bool:
    return False


def _everybody(caller: Caller, action: str, task_name: str | None) -> bool:
    return True


def _local_callers(caller: Caller, action: str, task_name: str | None) -> bool:
    return caller.local


def _logged_in(caller: Caller, action: str, task_name: str | None) -> bool:
    return caller.logged_in


# -- authorize callables ------------------------------------------------------


def allow_all(action: str, task_name: str | None, run: t.Any) -> bool:
    return True


def read_only(action: str, task_name: str | None, run: t.Any) -> bool:
    return action == "view"


def act_only(action: str, task_name: str | None, run: t.Any) -> bool:
    """May start and control runs, but not see anything."""
    return action != "view"


def deny_all(action: str, task_name: str | None, run: t.Any) -> bool:
    return False


@dataclasses.dataclass(frozen=True)
class HideTask:
    """``authorize`` allowing everything except any action on one task."""

    task_name: str

    def __call__(self, action: str, task_name: str | None, run: t.Any) -> bool:
        return task_name != self.task_name


@dataclasses.dataclass(frozen=True)
class Way:
    """One way of opening the dashboard, and what it lets each caller do."""

    name: str
    #: ``permits(caller, action, task_name)``: what the contract lets the caller do.
    permits: Permits
    #: Keywords of ``init_app`` (``authorize``, ``allow_anonymous``).
    options: t.Mapping[str, t.Any] = dataclasses.field(default_factory=dict)
    #: ``"login"``: nested under a parent whose ``before_request`` wants a login;
    #: ``"no-hook"``: nested under a parent without any request hook.
    parent: t.Literal["login", "no-hook"] | None = None
    debug: bool = False
    testing: bool = False

    @property
    def prefix(self) -> str:
        return (PARENT_PREFIX if self.parent else "") + URL_PREFIX

    def may(self, caller: Caller, action: str, task_name: str | None) -> bool:
        return self.permits(caller, action, task_name)

    def opens_to(self, caller: Caller) -> bool:
        """Whether the caller may do anything at all (on some task)."""
        return any(self.permits(caller, action, None) for action in ACTIONS)

    def build(self, **settings: t.Any) -> Flask:
        """The test app opened this way (``tests.testapp.create_app``, from the environment)."""
        from tests import testapp

        parent = self._parent()
        app = testapp.create_app(parent=parent, **self.options, **settings)
        app.config["TESTING"] = self.testing
        app.debug = self.debug
        if parent is not None:
            app.register_blueprint(parent, url_prefix=PARENT_PREFIX)
        return app

    def _parent(self) -> Blueprint | None:
        if self.parent is None:
            return None
        parent = Blueprint(f"admin_{self.name.replace('-', '_')}", __name__)
        if self.parent == "login":

            @parent.before_request
            def login_required() -> tuple[str, int] | None:
                if request.headers.get(LOGIN_HEADER) != LOGIN_VALUE:
                    return "Log in first.", 401
                return None

        return parent


def every_way(hidden_task: str) -> list[Way]:
    """Every way of opening the dashboard; ``hidden_task`` is the one an ``authorize`` hides."""
    return [
        Way("closed", _nobody),
        Way("allow-anonymous", _everybody, {"allow_anonymous": True}),
        Way("authorize-all", _everybody, {"authorize": allow_all}),
        Way("authorize-read-only", lambda c, a, n: a == "view", {"authorize": read_only}),
        Way("authorize-act-only", lambda c, a, n: a != "view", {"authorize": act_only}),
        Way(
            "authorize-hides-a-task",
            lambda c, a, n: n != hidden_task,
            {"authorize": HideTask(hidden_task)},
        ),
        Way("authorize-none", _nobody, {"authorize": deny_all}),
        Way("parent-with-login", _logged_in, parent="login"),
        Way("parent-without-hook", _nobody, parent="no-hook"),
        Way("debug", _local_callers, debug=True),
        Way("testing", _local_callers, testing=True),
    ]
