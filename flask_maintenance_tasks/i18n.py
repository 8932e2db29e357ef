"""Translations: the words the dashboard, the CLI and the error messages use.

Every string people read goes through :func:`gettext` (or :func:`ngettext`,
:func:`pgettext`, :func:`lazy_gettext`), in the ``flask_maintenance_tasks``
gettext domain, whose catalogues ship in ``translations/`` as ``.po`` files.

The language is chosen per request, or per command:

- when the host app set up Flask-Babel with a locale selector, that
  selector's answer (the host's choice of language wins);
- else, in a request, the best match for its ``Accept-Language`` header;
- outside a request (a command in a terminal), the ``LANGUAGE``, ``LC_ALL``,
  ``LC_MESSAGES`` and ``LANG`` environment variables, as gettext reads them;
- English when nothing matches a shipped language.

Translations need the ``i18n`` extra (Flask-Babel, which brings Babel); without
it everything is English and numbers are formatted the English way. The JSON
API and ``--json`` output speak English whatever the locale: they are read by
programs (:func:`english`).
"""

from __future__ import annotations

import contextlib
import functools
import gettext as _gettext
import io
import typing as t
from contextvars import ContextVar
from datetime import datetime, timezone
from pathlib import Path

from flask import current_app, has_request_context, request

if t.TYPE_CHECKING:
    from collections.abc import Iterator

#: The gettext domain of our messages (so a host's own ``messages`` never clash).
DOMAIN = "flask_maintenance_tasks"

#: Where the catalogues live: ``<locale>/LC_MESSAGES/flask_maintenance_tasks.po``.
TRANSLATIONS = Path(__file__).parent / "translations"

#: The languages shipped, English first (the source language, and the fallback).
LOCALES: t.Final[tuple[str, ...]] = ("en", "ja")

_forced: ContextVar[str | None] = ContextVar("mtasks_forced_locale", default=None)


@functools.cache
def babel_available() -> bool:
    """Whether the ``i18n`` extra is installed (Flask-Babel, and Babel with it)."""
    try:
        import babel  # noqa: F401
        import flask_babel  # noqa: F401
    except ImportError:
        return False
    return True


def _match(candidates: t.Iterable[str]) -> str | None:
    """The first shipped language among ``candidates`` (``ja_JP.UTF-8`` matches ``ja``)."""
    for candidate in candidates:
        tag = candidate.split(".", 1)[0].split("@", 1)[0].replace("-", "_").lower()
        if not tag or tag in {"c", "posix"}:
            continue
        language = tag.split("_", 1)[0]
        if language in LOCALES:
            return language
    return None


def _host_choice() -> str | None:
    """The language the host's Flask-Babel locale selector picks, if it has one."""
    babel_config = current_app.extensions.get("babel")
    if babel_config is None or getattr(babel_config, "locale_selector", None) is None:
        return None
    import flask_babel
    from babel.core import UnknownLocaleError

    try:
        chosen = flask_babel.get_locale()
    except (UnknownLocaleError, ValueError, TypeError):
        # The selector named no locale Babel knows ("english", 42): the host's page
        # would fail on it; ours reads English.
        return "en"
    if chosen is None:
        return None
    return _match([str(chosen)]) or "en"


#: Where a request keeps the language chosen for it (its WSGI environ: one per request,
#: where ``g`` may be shared by requests under one app context).
_ENVIRON_KEY = "flask_maintenance_tasks.locale"


def _request_choice() -> str:
    cached = request.environ.get(_ENVIRON_KEY)
    if cached is not None:
        return t.cast(str, cached)
    chosen = _host_choice()
    if chosen is None:
        chosen = request.accept_languages.best_match(LOCALES) or "en"
    request.environ[_ENVIRON_KEY] = chosen
    return chosen


def _environment_choice() -> str:
    import os

    for name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(name)
        if value:
            # LANGUAGE may list several, "ja:en"; the others hold one.
            return _match(value.split(":")) or "en"
    return "en"


def current_locale() -> str:
    """The language this request or command speaks: one of :data:`LOCALES`."""
    forced = _forced.get()
    if forced is not None:
        return forced
    if not babel_available():
        return "en"
    if has_request_context():
        return _request_choice()
    # A command: a host's selector reads the request (most do), so the terminal decides.
    return _environment_choice()


def pin_request_locale(locale: str) -> None:
    """Speak ``locale`` for the rest of this request (the JSON API pins English)."""
    if locale not in LOCALES:
        raise ValueError(f"{locale!r} is not one of the shipped languages {LOCALES}")
    request.environ[_ENVIRON_KEY] = locale


@contextlib.contextmanager
def force_locale(locale: str) -> Iterator[None]:
    """Speak ``locale`` (one of :data:`LOCALES`) inside the block, whatever was chosen."""
    if locale not in LOCALES:
        raise ValueError(f"{locale!r} is not one of the shipped languages {LOCALES}")
    token = _forced.set(locale)
    try:
        yield
    finally:
        _forced.reset(token)


def english() -> contextlib.AbstractContextManager[None]:
    """English inside the block: for JSON and other output read by programs."""
    return force_locale("en")


@functools.cache
def translations(locale: str) -> _gettext.NullTranslations:
    """The catalogue of ``locale``, read once per process from its ``.po`` file.

    The ``.po`` file is compiled in memory (Babel's reader and writer), so
    no compiled ``.mo`` file has to be kept in step with it. Fuzzy entries
    are left out, as ``msgfmt`` would.
    """
    if locale == "en" or not babel_available():
        return _gettext.NullTranslations()
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po
    from babel.support import Translations

    path = TRANSLATIONS / locale / "LC_MESSAGES" / f"{DOMAIN}.po"
    with path.open("rb") as source:
        catalog = read_po(source, locale=locale, domain=DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, catalog, use_fuzzy=False)
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


def gettext(message: str, **variables: t.Any) -> str:
    """``message`` in the current language, with ``%(name)s`` placeholders filled."""
    text = translations(current_locale()).gettext(message)
    return text % variables if variables else text


def ngettext(singular: str, plural: str, num: int, **variables: t.Any) -> str:
    """The singular or plural form for ``num``; ``%(num)s`` is ``num`` as a number
    formatted for the language (``4,000``)."""
    variables.setdefault("num", number(num))
    text = translations(current_locale()).ngettext(singular, plural, num)
    return text % variables


def pgettext(context: str, message: str, **variables: t.Any) -> str:
    """``message`` in the current language, told apart by ``context`` (a status
    name from a verb of the same spelling, say)."""
    text = translations(current_locale()).pgettext(context, message)
    return text % variables if variables else text


class LazyString:
    """A message translated only when it is turned into text, in the language of
    that moment: for strings defined at import time (help texts, tables)."""

    __slots__ = ("_context", "_message", "_variables")

    def __init__(
        self, message: str, variables: dict[str, t.Any], context: str | None = None
    ) -> None:
        self._message = message
        self._variables = variables
        self._context = context

    def __str__(self) -> str:
        if self._context is not None:
            return pgettext(self._context, self._message, **self._variables)
        return gettext(self._message, **self._variables)

    def __html__(self) -> str:
        from markupsafe import escape

        return str(escape(str(self)))

    def __repr__(self) -> str:
        return f"lazy_gettext({self._message!r})"

    def __eq__(self, other: object) -> bool:
        return str(self) == str(other)

    def __hash__(self) -> int:
        return hash(self._message)

    def __len__(self) -> int:
        return len(str(self))

    def __add__(self, other: str) -> str:
        return str(self) + other

    def __radd__(self, other: str) -> str:
        return other + str(self)

    def __mod__(self, other: t.Any) -> str:
        return str(self) % other  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> t.Any:
        # str's methods (expandtabs, splitlines, ...) on the translated text.
        return getattr(str(self), name)


def lazy_gettext(message: str, **variables: t.Any) -> LazyString:
    """Like :func:`gettext`, translated each time it is turned into text."""
    return LazyString(message, variables)


def lazy_pgettext(context: str, message: str, **variables: t.Any) -> LazyString:
    """Like :func:`pgettext`, translated each time it is turned into text."""
    return LazyString(message, variables, context)


def number(value: float, *, digits: int | None = None) -> str:
    """``value`` as the current language writes numbers: ``4,000``, ``1,234.5``.

    ``digits`` fixes the number of decimals (``None``: as many as it has,
    integers without any).
    """
    if babel_available():
        from babel.numbers import format_decimal

        pattern = None if digits is None else "#,##0" + ("." + "0" * digits if digits else "")
        return format_decimal(value, format=pattern, locale=current_locale())
    if digits is not None:
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    # As Babel's default pattern: grouped, at most three decimals, no trailing zeros.
    return f"{value:,.3f}".rstrip("0").rstrip(".")


def moment(value: datetime) -> str:
    """A moment in UTC as the current language writes a date and time with seconds."""
    value = value.astimezone(timezone.utc)
    if babel_available() and current_locale() != "en":
        from babel.dates import format_datetime

        text = format_datetime(value, "medium", tzinfo=timezone.utc, locale=current_locale())
        return f"{text} UTC"
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def jinja_helpers() -> dict[str, t.Any]:
    """What the dashboard's templates call: ``_``, ``gettext``, ``ngettext``,
    ``pgettext``, ``number`` and the page's ``lang``."""
    return {
        "_": gettext,
        "gettext": gettext,
        "ngettext": ngettext,
        "pgettext": pgettext,
        "number": number,
        "lang": current_locale(),
    }


__all__ = [
    "DOMAIN",
    "LOCALES",
    "LazyString",
    "babel_available",
    "current_locale",
    "english",
    "force_locale",
    "gettext",
    "jinja_helpers",
    "lazy_gettext",
    "lazy_pgettext",
    "moment",
    "ngettext",
    "number",
    "pgettext",
    "pin_request_locale",
    "translations",
]
