"""When a run started "at" a set time is due: the time, read and checked once.

The Python API takes a timezone-aware :class:`~datetime.datetime`; the command
line and the dashboard take the same moment as ISO 8601 text with an offset
(``2026-12-01T02:00+00:00``, or ``Z`` for UTC). Either way it must carry its
time zone (a bare wall-clock time means different moments on different
servers), lie in the future, and lie no more than :data:`MAX_AHEAD` ahead.
Every refusal is an :class:`~flask_maintenance_tasks.InvalidArguments` on
the ``at`` field, raised before anything is written.
"""

from __future__ import annotations

import typing as t
from datetime import datetime, timedelta, timezone

from .exceptions import InvalidArguments
from .i18n import gettext as _

#: How far ahead a run may be scheduled: a year (and a day, for leap years).
MAX_AHEAD: t.Final = timedelta(days=366)
#: Longer text is not a date and time: it is refused without being read or quoted.
MAX_TEXT: t.Final = 64
#: How a time reads in a message.
EXAMPLE: t.Final = "2026-12-01T02:00+00:00"


def due_time(task_name: str, value: t.Any, now: datetime) -> datetime | None:
    """The moment ``value`` names, in UTC, checked against ``now``; ``None`` for ``None``.

    :raises InvalidArguments: on ``at``: not a date and time, no time zone, in
        the past, or more than :data:`MAX_AHEAD` ahead.
    """
    if value is None:
        return None
    try:
        moment = _read(value)
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise _Refused(
                _(
                    "%(moment)s has no time zone, so it means a different moment on "
                    "each server: add its offset, such as %(example)s (or Z for UTC)",
                    moment=moment.isoformat(),
                    example=EXAMPLE,
                )
            )
        moment = moment.astimezone(timezone.utc)
    except OverflowError:
        problem = _(
            "%(value)s is out of range: give a time within a year",
            value=repr(str(value)[:MAX_TEXT]),
        )
    except _Refused as refused:
        problem = str(refused)
    else:
        if moment <= now:
            current = now.isoformat(timespec="seconds")
            problem = _(
                "%(moment)s is in the past (it is now %(now)s): give a time "
                "to come, or start the run without one to start it now",
                moment=moment.isoformat(),
                now=current,
            )
        elif moment - now > MAX_AHEAD:
            problem = _(
                "%(moment)s is more than a year ahead: give a time before %(latest)s",
                moment=moment.isoformat(),
                latest=(now + MAX_AHEAD).isoformat(timespec="minutes"),
            )
        else:
            return moment
    raise InvalidArguments(task_name, {"at": [problem]})


class _Refused(Exception):
    pass


def _read(value: t.Any) -> datetime:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise _Refused(
            _(
                "must be a datetime with a time zone, or ISO 8601 text such as %(example)s, "
                "not %(type)s",
                example=EXAMPLE,
                type=type(value).__name__,
            )
        )
    text = value.strip()
    if len(text) > MAX_TEXT:
        raise _Refused(
            _("is not a date and time: write it in ISO 8601, such as %(example)s", example=EXAMPLE)
        )
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise _Refused(
            _(
                "%(text)s is not a date and time: write it in ISO 8601 with its time zone, "
                "such as %(example)s",
                text=repr(text),
                example=EXAMPLE,
            )
        ) from None
