"""Keep the translation catalogues in step with the code.

    python scripts/catalogues.py update   extract the messages, refresh the .pot and every .po
    python scripts/catalogues.py check    fail on a stale .pot, or an untranslated, fuzzy,
                                          obsolete or mis-formatted entry in a .po

``make messages`` runs ``update``; ``make lint`` and ``make test`` run ``check``.
The messages are what the package passes to ``_``, ``gettext``, ``lazy_gettext``,
``ngettext`` and ``pgettext``, in its Python modules and its Jinja templates.
"""

from __future__ import annotations

import re
import sys
import typing as t
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "flask_maintenance_tasks"
TRANSLATIONS = PACKAGE / "translations"
DOMAIN = "flask_maintenance_tasks"
TEMPLATE = TRANSLATIONS / f"{DOMAIN}.pot"

KEYWORDS = {
    "_": None,
    "gettext": None,
    "lazy_gettext": None,
    "ngettext": (1, 2),
    "pgettext": ((1, "c"), 2),
    "lazy_pgettext": ((1, "c"), 2),
}
METHODS = [
    ("**/scaffold/**", "ignore"),
    ("**/migrations/**", "ignore"),
    ("**.py", "python"),
    ("**/templates/**.html", "jinja2"),
]
OPTIONS = {"**/templates/**.html": {"autoescape": "true", "trimmed": "true"}}


def extract() -> Catalog:
    """A fresh template catalogue of every message in the package."""
    catalog = Catalog(
        project="flask-maintenance-tasks",
        domain=DOMAIN,
        charset="utf-8",
        msgid_bugs_address="https://github.com/flask-maintenance-tasks/flask-maintenance-tasks/issues",
        copyright_holder="the flask-maintenance-tasks authors",
        fuzzy=False,
    )
    found = extract_from_dir(
        str(PACKAGE),
        method_map=METHODS,
        options_map=OPTIONS,
        keywords=KEYWORDS,
        comment_tags=("Translators:",),
        strip_comment_tags=True,
    )
    for filename, lineno, message, comments, context in found:
        flags = set()
        text = message if isinstance(message, str) else message[0]
        if "%(" in text or "%s" in text:
            flags.add("python-format")
        catalog.add(
            message,
            None,
            [(f"flask_maintenance_tasks/{filename}", lineno)],
            auto_comments=comments,
            context=context,
            flags=flags,
        )
    return catalog


#: The languages translated (English is the language of the messages themselves).
LANGUAGES = ("ja",)


def _locales() -> list[Path]:
    return [TRANSLATIONS / language / "LC_MESSAGES" / f"{DOMAIN}.po" for language in LANGUAGES]


def _read(path: Path, locale: str | None = None) -> Catalog:
    with path.open("rb") as source:
        return read_po(source, locale=locale, domain=DOMAIN)


def _write(path: Path, catalog: Catalog) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as target:
        # Sorted and without line numbers: adding a message touches its own lines only.
        write_po(target, catalog, width=100, sort_output=True, include_lineno=False)


def _keys(catalog: Catalog) -> set[tuple[object, str | None]]:
    return {(message.id, message.context) for message in catalog if message.id}


def update() -> int:
    template = extract()
    _write(TEMPLATE, template)
    for path in _locales():
        locale = path.parent.parent.name
        catalog = _read(path, locale) if path.exists() else Catalog(locale=locale, domain=DOMAIN)
        catalog.project = template.project
        catalog.msgid_bugs_address = template.msgid_bugs_address
        catalog.copyright_holder = template.copyright_holder
        catalog.language_team = f"{locale} <{template.msgid_bugs_address}>"
        catalog.last_translator = "the flask-maintenance-tasks authors"
        catalog.fuzzy = False
        catalog.update(template, no_fuzzy_matching=True, update_header_comment=False)
        catalog.obsolete.clear()
        _write(path, catalog)
        missing = sum(1 for message in catalog if message.id and not _translated(message))
        print(f"{path.relative_to(ROOT)}: {missing} message(s) to translate")
    print(f"{TEMPLATE.relative_to(ROOT)}: {len(template)} message(s)")
    return 0


def _translated(message: t.Any) -> bool:
    if message.fuzzy:
        return False
    strings = message.string if isinstance(message.string, (list, tuple)) else [message.string]
    return bool(strings) and all(strings)


_PLACEHOLDER = re.compile(r"%\((\w+)\)[-#0 +]*\d*(?:\.\d+)?[sdifgeEFGxXor]")


def _placeholders(message: t.Any) -> list[str]:
    """What a translation says wrong of its message's ``%(name)s`` placeholders: each
    one must be kept (a plural form may leave out ``%(num)s``), none invented."""
    ids = [message.id] if isinstance(message.id, str) else list(message.id)
    strings = [message.string] if isinstance(message.string, str) else list(message.string)
    wanted = set().union(*(_PLACEHOLDER.findall(text) for text in ids))
    problems = []
    for text in strings:
        found = set(_PLACEHOLDER.findall(text))
        optional = {"num"} if len(ids) > 1 else set()
        for missing in sorted(wanted - found - optional):
            problems.append(f"placeholders differ: %({missing})s is missing")
        for extra in sorted(found - wanted):
            problems.append(f"placeholders differ: %({extra})s is not in the message")
    return problems


def check() -> int:
    problems: list[str] = []
    template = extract()
    fresh = _keys(template)
    if not TEMPLATE.exists():
        problems.append(f"{TEMPLATE.relative_to(ROOT)} is missing")
        stored: set[tuple[object, str | None]] = set()
    else:
        stored = _keys(_read(TEMPLATE))
    for key in sorted(fresh - stored, key=repr):
        problems.append(f"new message not in the .pot: {key[0]!r}")
    for key in sorted(stored - fresh, key=repr):
        problems.append(f"the .pot holds a message the code no longer has: {key[0]!r}")
    for path in _locales():
        locale = path.parent.parent.name
        name = path.relative_to(ROOT)
        if not path.exists():
            problems.append(f"{name} is missing")
            continue
        catalog = _read(path, locale)
        have = _keys(catalog)
        for key in sorted(fresh - have, key=repr):
            problems.append(f"{name}: missing {key[0]!r}")
        for key in sorted(have - fresh, key=repr):
            problems.append(f"{name}: stale {key[0]!r}")
        if catalog.obsolete:
            problems.append(f"{name}: {len(catalog.obsolete)} obsolete entries (#~)")
        for message in catalog:
            if message.id and (message.id, message.context) in fresh and not _translated(message):
                state = "fuzzy" if message.fuzzy else "untranslated"
                problems.append(f"{name}: {state} {message.id!r}")
        for message in catalog:
            if message.id and _translated(message):
                problems.extend(f"{name}: {message.id!r}: {p}" for p in _placeholders(message))
        for message, errors in catalog.check():
            for error in errors:
                problems.append(f"{name}: {message.id!r}: {error}")
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(
            f"catalogues: {len(problems)} problem(s); run `make messages`, then translate "
            "what it lists",
            file=sys.stderr,
        )
        return 1
    print(f"catalogues: {len(fresh)} messages, every language complete")
    return 0


if __name__ == "__main__":
    commands = {"update": update, "check": check}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(commands[sys.argv[1]]())
