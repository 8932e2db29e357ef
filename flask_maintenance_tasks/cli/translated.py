"""Words of the commands in the reader's language: help texts, statuses, the ``Error:`` line.

Click reads a command's and an option's help when it prints ``--help``; the
texts given here are :func:`~flask_maintenance_tasks.i18n.lazy_gettext`
messages, translated at that moment in the terminal's language (``LANGUAGE``,
``LC_ALL``, ``LC_MESSAGES``, ``LANG``), not once at import.
"""

from __future__ import annotations

import inspect
import typing as t

import click

from .. import formatting, i18n
from ..i18n import LazyString
from .terminal import visible

F = t.TypeVar("F", bound=t.Callable[..., t.Any])


class Option(click.Option):
    """A click option whose help is translated each time it is printed.

    Click cleans a help text up when the option is made; this one keeps the
    message, and cleans up its translation when the help is printed.
    """

    def __init__(self, *args: t.Any, help: str | LazyString | None = None, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self._message = help

    @property
    def help(self) -> str | None:
        message = self.__dict__.get("_message")
        return None if message is None else inspect.cleandoc(str(message))

    @help.setter
    def help(self, value: str | LazyString | None) -> None:
        self.__dict__["_message"] = value


def option(*param_decls: str, **attrs: t.Any) -> t.Callable[[F], F]:
    """:func:`click.option` with a help text that may be a lazy message."""
    return click.option(*param_decls, cls=Option, **attrs)


def command(name: str, *, help: LazyString, **attrs: t.Any) -> t.Callable[[F], click.Command]:
    """:func:`click.command` whose help (and its short help) is translated when shown."""
    decorator = click.command(name, help=t.cast(str, help), **attrs)
    return t.cast(t.Callable[[F], click.Command], decorator)


def status(value: object) -> str:
    """A run's status as the commands print it: ``running`` in English, 実行中 in Japanese."""
    if i18n.current_locale() == "en":
        return visible(value)
    return visible(formatting.status_name(str(value)))


class CommandError(click.ClickException):
    """A command's failure: ``Error: ...`` on stderr (the word translated), exit status 1."""

    def show(self, file: t.IO[t.Any] | None = None) -> None:
        line = i18n.gettext("Error: %(error)s", error=self.format_message())
        click.echo(line, file=file, err=True, color=self.show_color)
