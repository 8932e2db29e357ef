"""What a run does when an item fails: the error policy and its limits.

``stop`` (the default) errors the run at the first failing item, as a run
always did. ``skip`` undoes that item's own writes, records it in the run's
failure ledger and goes on, until the run passes one of its limits:
``max_failures`` items, or a ``max_failure_rate`` share of the items
processed. Limits count every failure in the ledger, those of ``report_on``
errors included, whatever the policy.

A task declares its policy with class attributes; a run may override each of
them (Python, ``flask mtasks run``, the dashboard's start form). The run
stores the policy it was started with.
"""

from __future__ import annotations

import dataclasses
import math
import typing as t

from .exceptions import InvalidArguments
from .i18n import english, lazy_pgettext
from .i18n import gettext as _

STOP = "stop"
SKIP = "skip"
POLICIES = (STOP, SKIP)

#: A share limit counts against at least this many items: with 5%, the first
#: five failures never stop a run, however early they come.
RATE_FLOOR = 100

#: Each policy's name as people read it.
POLICY_NAMES: t.Final[dict[str, t.Any]] = {
    STOP: lazy_pgettext("error policy", "stop"),
    SKIP: lazy_pgettext("error policy", "skip"),
}

#: The names of the options, as fields of a start (form fields, ``--options``).
FIELDS = ("error_policy", "max_failures", "max_failure_rate")


@dataclasses.dataclass(frozen=True)
class ErrorPolicy:
    """An error policy and its limits, checked (see :meth:`resolve`)."""

    name: str = STOP
    #: More failed items than this errors the run; ``None``: no limit.
    max_failures: int | None = None
    #: More failed items than this share (0 to 1) of the items processed
    #: errors the run, counted against at least :data:`RATE_FLOOR` items.
    max_failure_rate: float | None = None

    @property
    def skips(self) -> bool:
        return self.name == SKIP

    @classmethod
    def of_task(cls, task_class: t.Any) -> ErrorPolicy:
        """The policy a task class declares (checked when the class was defined)."""
        return cls(task_class.error_policy, task_class.max_failures, task_class.max_failure_rate)

    @classmethod
    def resolve(
        cls,
        task_class: t.Any,
        *,
        error_policy: t.Any = None,
        max_failures: t.Any = None,
        max_failure_rate: t.Any = None,
    ) -> ErrorPolicy:
        """The task's policy with what a run overrides; ``None`` keeps the task's value.

        Numbers may be given as text (a form, the command line); a rate may
        be a fraction (``0.05``) or a percentage (``"5%"``).

        :raises InvalidArguments: an unknown policy, a negative or fractional
            count, a rate outside 0 to 100%; the field names are those of
            :data:`FIELDS`.
        """
        declared = cls.of_task(task_class)
        errors: dict[str, list[str]] = {}
        name = declared.name
        if error_policy is not None:
            text = str(error_policy).strip().lower()
            if text in POLICIES:
                name = text
            else:
                errors["error_policy"] = [
                    _(
                        "unknown error policy %(policy)s: choose stop or skip",
                        policy=repr(str(error_policy)[:40]),
                    )
                ]
        count = declared.max_failures
        if max_failures is not None:
            try:
                count = parse_count(max_failures)
            except ValueError as error:
                errors["max_failures"] = [str(error)]
        rate = declared.max_failure_rate
        if max_failure_rate is not None:
            try:
                rate = parse_rate(max_failure_rate)
            except ValueError as error:
                errors["max_failure_rate"] = [str(error)]
        if errors:
            raise InvalidArguments(task_class.name, errors)
        return cls(name, count, rate)

    def passed(self, failures: int, processed: int) -> str | None:
        """Why ``failures`` out of ``processed`` items pass a limit, or ``None``."""
        if self.max_failures is not None and failures > self.max_failures:
            return (
                f"{failures} items failed, more than max_failures ({self.max_failures}); "
                "the failed items are in the run's failure ledger."
            )
        if self.max_failure_rate is not None:
            allowed = self.max_failure_rate * max(processed, RATE_FLOOR)
            if failures > allowed:
                share = failures / max(processed, 1)
                return (
                    f"{failures} of {processed} items failed ({share:.1%}), more than "
                    f"max_failure_rate ({self.max_failure_rate:.1%}); the failed items are "
                    "in the run's failure ledger."
                )
        return None

    def describe(self) -> str:
        """``skip, at most 100 failures or 5%``: for pages and the command line."""
        known = POLICY_NAMES.get(self.name)
        name = str(known) if known is not None else self.name
        rate = None
        if self.max_failure_rate is not None:
            rate = f"{self.max_failure_rate:.1%}".replace(".0%", "%")
        if self.max_failures is not None and rate is not None:
            return _(
                "%(policy)s, at most %(count)s failures or %(rate)s",
                policy=name,
                count=self.max_failures,
                rate=rate,
            )
        if self.max_failures is not None:
            return _("%(policy)s, at most %(count)s failures", policy=name, count=self.max_failures)
        if rate is not None:
            return _("%(policy)s, at most %(rate)s", policy=name, rate=rate)
        return name


def parse_count(value: t.Any) -> int:
    """A failure count: a whole number, 0 or more."""
    if isinstance(value, bool):
        raise ValueError(_("must be a whole number, 0 or more"))
    if isinstance(value, str):
        value = value.strip()
        if not (value.isascii() and value.isdigit()):
            raise ValueError(_("must be a whole number, 0 or more"))
        if len(value) > 18:
            raise ValueError(_("is too large"))
        return int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or value < 0:
        raise ValueError(_("must be a whole number, 0 or more"))
    if value >= 2**63:
        raise ValueError(_("is too large"))
    return value


def parse_rate(value: t.Any) -> float:
    """A failure rate: a fraction above 0 and at most 1, or a percentage such as ``"5%"``."""
    message = _("must be a share above 0 and at most 1 (0.05), or a percentage (5%)")
    if isinstance(value, bool):
        raise ValueError(message)
    percent = False
    if isinstance(value, str):
        text = value.strip()
        percent = text.endswith("%")
        try:
            value = float(text.removesuffix("%").strip()[:40])
        except ValueError:
            raise ValueError(message) from None
    if not isinstance(value, (int, float)):
        raise ValueError(message)
    rate = float(value) / (100 if percent else 1)
    if not math.isfinite(rate) or not 0 < rate <= 1:
        raise ValueError(message)
    return rate


def check_declaration(task_class: t.Any) -> str | None:
    """What is wrong with a task class's declared policy, or ``None``: for the task's
    author, in English (it is checked when the class is defined)."""
    with english():
        return _check_declaration(task_class)


def _check_declaration(task_class: t.Any) -> str | None:
    if task_class.error_policy not in POLICIES:
        return f"error_policy must be 'stop' or 'skip', not {task_class.error_policy!r}"
    for attribute, parse in (("max_failures", parse_count), ("max_failure_rate", parse_rate)):
        value = getattr(task_class, attribute)
        if value is None:
            continue
        if isinstance(value, str):
            return f"{attribute} must be a number, not {value!r}"
        try:
            parse(value)
        except ValueError as error:
            return f"{attribute} {error}"
    return None
