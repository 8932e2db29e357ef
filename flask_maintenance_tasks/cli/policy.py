"""The error policy options of ``run`` and ``retry-failures``, checked as click parses them.

A value the policy does not accept fails the command line itself (exit status
2, ``Invalid value for '--max-failures': ...``) before the command reads or
writes anything; the messages are the policy's own (:mod:`..policy`).
"""

from __future__ import annotations

import typing as t

import click

from .. import policy
from ..i18n import gettext as _
from ..i18n import lazy_gettext
from .terminal import visible
from .translated import option

F = t.TypeVar("F", bound=t.Callable[..., t.Any])

if t.TYPE_CHECKING:
    _ParamType = click.ParamType[t.Any]  # generic from click 8.2 on
else:
    _ParamType = click.ParamType

#: How much of a rejected value an error quotes.
QUOTED = 40


class _PolicyName(_ParamType):
    """``stop`` or ``skip``, in any case."""

    name = "policy"

    def convert(
        self, value: t.Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> str:
        text = str(value).strip().lower()
        if text not in policy.POLICIES:
            self.fail(
                _("%(value)s is not an error policy: choose stop or skip.", value=_quoted(value)),
                param,
                ctx,
            )
        return text


class _Count(_ParamType):
    """A number of failed items: a whole number, 0 or more."""

    name = "count"

    def convert(
        self, value: t.Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        try:
            return policy.parse_count(value)
        except ValueError as error:
            self.fail(f"{_quoted(value)} {error}.", param, ctx)


class _Rate(_ParamType):
    """A share of the items processed: ``0.05`` or ``5%``."""

    name = "rate"

    def convert(
        self, value: t.Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            return policy.parse_rate(value)
        except ValueError as error:
            self.fail(f"{_quoted(value)} {error}.", param, ctx)


def _quoted(value: t.Any) -> str:
    """A value the user typed, shortened and with its control characters as escapes."""
    text = str(value)
    if len(text) > QUOTED:
        text = text[:QUOTED] + "..."
    return visible(repr(text))


def policy_options(command: F) -> F:
    """``--error-policy``, ``--max-failures`` and ``--max-failure-rate``; unset: ``None``."""
    options = [
        option(
            "--error-policy",
            type=_PolicyName(),
            metavar="[stop|skip]",
            help=lazy_gettext(
                "What a failing item does: stop the run, or skip it into the failure ledger "
                "(default: the task's)."
            ),
        ),
        option(
            "--max-failures",
            type=_Count(),
            metavar="N",
            help=lazy_gettext("Error the run once more than N items have failed."),
        ),
        option(
            "--max-failure-rate",
            type=_Rate(),
            metavar="RATE",
            help=lazy_gettext(
                "Error the run once more than this share of the items processed have failed "
                "(0.05 or 5%), counted against at least 100 items."
            ),
        ),
    ]
    for add in reversed(options):
        command = add(command)
    return command
