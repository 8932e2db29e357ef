"""Parameter values from text: the rules the command line and the run form share.

A task's ``Parameters`` model validates and converts its arguments. What this
module decides is the shape text takes before the model sees it. Each field is
described once (:func:`describe`) from its annotation, looking through
``Annotated[...]`` and ``X | None`` (the latter makes the field ``optional``),
and its :data:`Shape` says how text becomes a value (:func:`from_text`):

``list``
    A list, tuple, set or frozenset of scalars (text, numbers, dates, times,
    enums, literals). The text is a JSON list (``[1, 2]``) or values separated
    by commas (``1, 2``), each stripped, blanks dropped; an empty text is an
    empty list.
``json``
    A mapping, a model, a collection of anything but scalars, or any other type
    that is not a scalar: the text is a JSON value.
``choice``
    A ``Literal`` or an enum. The text is matched with each allowed value's
    spelling, so that ``Literal[1, 2]`` gets the int ``1`` from ``"1"``; text
    that matches none is left for the model to refuse.
``bool``
    ``true``, ``on``, ``1`` and ``yes`` are true, ``false``, ``off``, ``0`` and
    ``no`` are false, in any case; other text is left for the model to refuse.
``text``, ``secret``, ``integer``, ``number``, ``date``, ``time``, ``datetime``
    The text itself, which the model converts. A union of several scalar types
    (``int | str``) is ``text`` too; a union with any other member is ``json``.

A value is spelled back (:func:`spell`, :func:`to_text`) as ``true`` or
``false`` for a bool, its value for an enum member, ISO 8601 for a date or a
time, items joined by ``", "`` for a ``list`` and JSON for a ``json`` field, so
that :func:`from_text` gives it back.

What an empty text means (the default, or an empty value) and whether a name may
be given twice are each interface's own rules: ``flask mtasks run --arg`` and
the dashboard's run form (``web/forms.py``).

No value may nest lists and dicts deeper than :data:`MAX_DEPTH` levels
(:func:`check_depth`): deeper ones exhaust the parser's recursion or the
serializer's depth limit on the way to the run's row.

No text in a value, nor any key of a dict in it, may hold a lone surrogate
(:func:`unencodable`): it cannot be encoded as UTF-8, so no database, URL nor
page could hold it. Python's own strings may (``"\\ud800"``), and so may a
JSON ``"\\ud800"`` escape and command-line bytes that are not UTF-8.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import json
import re
import types
import typing as t

import pydantic

from .i18n import LazyString, current_locale, lazy_gettext, ngettext, number, pgettext

if t.TYPE_CHECKING:
    from pydantic_core import ErrorDetails

    from .task import Task

#: How the text given for a field becomes its value (see the module's documentation).
Shape = t.Literal[
    "bool",
    "integer",
    "number",
    "choice",
    "date",
    "time",
    "datetime",
    "text",
    "secret",
    "list",
    "json",
]

#: How deep lists and dicts may nest in an argument's value.
MAX_DEPTH: t.Final = 64

#: Text taken as ``True`` and as ``False``, compared in lower case.
TRUE: t.Final = frozenset({"true", "on", "1", "yes"})
FALSE: t.Final = frozenset({"false", "off", "0", "no"})

_COLLECTIONS = (list, tuple, set, frozenset)
_SCALARS = (str, int, float, decimal.Decimal, enum.Enum, dt.date, dt.time)


@dataclasses.dataclass(frozen=True)
class Parameter:
    """A field of a task's ``Parameters`` model, as text is turned into its value."""

    name: str
    shape: Shape
    #: The field also accepts ``None`` (``X | None``).
    optional: bool = False
    #: The values a ``choice`` allows, each with its spelling, in declaration order.
    choices: tuple[tuple[str, t.Any], ...] = ()


def parameters_of(task: type[Task]) -> dict[str, Parameter]:
    """The parameters of ``task`` by name, in declaration order (none without ``Parameters``)."""
    model = task.Parameters
    if model is None:
        return {}
    return {name: describe(name, info.annotation) for name, info in model.model_fields.items()}


def describe(name: str, annotation: t.Any) -> Parameter:
    """The parameter ``name`` declared with ``annotation``."""
    annotation, optional = _look_through(annotation)
    shape, choices = _shape(annotation)
    return Parameter(name, shape, optional, choices)


def from_text(parameter: Parameter, text: str) -> t.Any:
    """The value of ``parameter`` given as ``text``, for the model to validate.

    :raises json.JSONDecodeError: the parameter takes JSON and ``text`` is not JSON,
        or is JSON nested deeper than :data:`MAX_DEPTH` levels.
    """
    if parameter.shape == "list":
        return split_many(text)
    if parameter.shape == "json":
        return _json(text)
    if parameter.shape == "choice":
        return dict(parameter.choices).get(text, text)
    if parameter.shape == "bool" and text.lower() in TRUE | FALSE:
        return text.lower() in TRUE
    return text


def split_many(text: str) -> list[t.Any]:
    """The values of a ``list`` parameter: a JSON list, or values separated by commas.

    :raises NestedTooDeep: a JSON list nested deeper than :data:`MAX_DEPTH` levels.
    """
    if text.lstrip().startswith("["):
        try:
            parsed = _json(text)
        except NestedTooDeep:
            raise
        except ValueError:
            parsed = None
        if isinstance(parsed, list):
            return parsed
    return [part.strip() for part in text.split(",") if part.strip()]


class NestedTooDeep(json.JSONDecodeError):
    """JSON text whose lists and dicts nest deeper than :data:`MAX_DEPTH` levels."""

    def __init__(self, text: str) -> None:
        super().__init__(f"nested deeper than {MAX_DEPTH} levels", text, 0)


def _json(text: str) -> t.Any:
    """The JSON value of ``text``; :exc:`json.JSONDecodeError` if it is not one we take."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise NestedTooDeep(text) from None
    except json.JSONDecodeError:
        raise
    except ValueError as exc:
        # An integer of more digits than Python converts (sys.get_int_max_str_digits()).
        raise json.JSONDecodeError("A number has too many digits", text, 0) from exc
    if not depth_within(value, MAX_DEPTH):
        raise NestedTooDeep(text)
    return value


def depth_within(value: t.Any, limit: int) -> bool:
    """Whether lists, tuples and dicts nest at most ``limit`` levels deep in ``value``.

    Walked without recursion, so that any depth can be measured.
    """
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children: t.Iterable[t.Any] = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if depth > limit:
            return False
        pending.extend((child, depth + 1) for child in children)
    return True


def unencodable(value: t.Any) -> bool:
    """Whether some text in ``value`` (a dict's keys too) cannot be encoded as UTF-8.

    Such text holds a lone surrogate. Walked without recursion, like :func:`depth_within`.
    """
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            pending.extend(item)
    return False


def spell(value: t.Any) -> str:
    """A scalar as text: ``true``/``false``, an enum member's value, ISO 8601, else ``str()``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return spell(value.value)
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    return str(value)


def to_text(value: t.Any, shape: Shape) -> str:
    """The text that gives ``value`` back through :func:`from_text` for a field of ``shape``."""
    if shape == "list" and isinstance(value, _COLLECTIONS):
        return ", ".join(spell(v) for v in value)
    if shape == "json":
        if isinstance(value, pydantic.BaseModel):
            return value.model_dump_json()
        return json.dumps(value, default=str)
    return spell(value)


def _strip_annotated(annotation: t.Any) -> t.Any:
    while t.get_origin(annotation) is t.Annotated:
        annotation = t.get_args(annotation)[0]
    return annotation


def _union_members(annotation: t.Any) -> tuple[t.Any, ...] | None:
    """The members of a union (``None`` for any other annotation)."""
    origin = t.get_origin(annotation)
    if origin is t.Union or origin is types.UnionType:
        return t.get_args(annotation)
    return None


def _look_through(annotation: t.Any) -> tuple[t.Any, bool]:
    """``(the type, accepts None)``; a union of several types besides ``None`` stays one."""
    annotation = _strip_annotated(annotation)
    members = _union_members(annotation)
    if members is None:
        return annotation, False
    rest = [m for m in members if m is not type(None)]
    optional = len(rest) < len(members)
    if len(rest) == 1:
        return _strip_annotated(rest[0]), optional
    return annotation, optional


def _is(annotation: t.Any, *classes: type) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, classes)


def _is_scalar(annotation: t.Any) -> bool:
    annotation = _strip_annotated(annotation)
    return t.get_origin(annotation) is t.Literal or _is(annotation, *_SCALARS)


def _shape(annotation: t.Any) -> tuple[Shape, tuple[tuple[str, t.Any], ...]]:
    # The order matters: bool is an int, an IntEnum an int, a datetime a date.
    members = _union_members(annotation)
    if members is not None:
        scalars = all(_is_scalar(m) for m in members if m is not type(None))
        return ("text" if scalars else "json"), ()
    if _is(annotation, pydantic.SecretStr, pydantic.SecretBytes):
        return "secret", ()
    if _is(annotation, bool):
        return "bool", ()
    if _is(annotation, int):
        return "integer", ()
    if _is(annotation, float, decimal.Decimal):
        return "number", ()
    if t.get_origin(annotation) is t.Literal:
        return "choice", tuple((spell(v), v) for v in t.get_args(annotation))
    if _is(annotation, enum.Enum):
        return "choice", tuple((spell(m.value), m.value) for m in annotation)
    if _is(annotation, dt.datetime):
        return "datetime", ()
    if _is(annotation, dt.date):
        return "date", ()
    if _is(annotation, dt.time):
        return "time", ()
    if _is(annotation, str):
        return "text", ()
    args = t.get_args(annotation)
    if (
        _is(t.get_origin(annotation), *_COLLECTIONS)
        and args
        and all(_is_scalar(a) for a in args if a is not Ellipsis)
    ):
        return "list", ()
    return "json", ()


#: Pydantic's messages in the reader's language, by the error's ``type``; the
#: placeholders are filled from the error's ``ctx``. Other types keep
#: pydantic's own (English) message.
_VALIDATION_MESSAGES: t.Final[dict[str, LazyString]] = {
    "missing": lazy_gettext("Field required"),
    "int_parsing": lazy_gettext("Input should be a valid integer"),
    "int_type": lazy_gettext("Input should be a valid integer"),
    "int_from_float": lazy_gettext(
        "Input should be a valid integer, got a number with a fractional part"
    ),
    "float_parsing": lazy_gettext("Input should be a valid number"),
    "float_type": lazy_gettext("Input should be a valid number"),
    "decimal_parsing": lazy_gettext("Input should be a valid number"),
    "decimal_type": lazy_gettext("Input should be a valid number"),
    "bool_parsing": lazy_gettext("Input should be a valid boolean"),
    "bool_type": lazy_gettext("Input should be a valid boolean"),
    "string_type": lazy_gettext("Input should be a valid string"),
    "string_pattern_mismatch": lazy_gettext("String should match pattern %(pattern)s"),
    "greater_than": lazy_gettext("Input should be greater than %(gt)s"),
    "greater_than_equal": lazy_gettext("Input should be greater than or equal to %(ge)s"),
    "less_than": lazy_gettext("Input should be less than %(lt)s"),
    "less_than_equal": lazy_gettext("Input should be less than or equal to %(le)s"),
    "multiple_of": lazy_gettext("Input should be a multiple of %(multiple_of)s"),
    "literal_error": lazy_gettext("Input should be %(expected)s"),
    "enum": lazy_gettext("Input should be %(expected)s"),
    "date_parsing": lazy_gettext("Input should be a valid date"),
    "date_from_datetime_parsing": lazy_gettext("Input should be a valid date"),
    "date_from_datetime_inexact": lazy_gettext("Input should be a valid date"),
    "date_type": lazy_gettext("Input should be a valid date"),
    "datetime_parsing": lazy_gettext("Input should be a valid datetime"),
    "datetime_from_date_parsing": lazy_gettext("Input should be a valid datetime"),
    "datetime_type": lazy_gettext("Input should be a valid datetime"),
    "time_parsing": lazy_gettext("Input should be in a valid time format"),
    "time_type": lazy_gettext("Input should be in a valid time format"),
    "timezone_aware": lazy_gettext("Input should have timezone info"),
    "json_invalid": lazy_gettext("Invalid JSON: %(error)s"),
    "json_type": lazy_gettext("JSON input should be string, bytes or bytearray"),
    "list_type": lazy_gettext("Input should be a valid list"),
    "dict_type": lazy_gettext("Input should be a valid dictionary"),
    "extra_forbidden": lazy_gettext("Extra inputs are not permitted"),
    "uuid_parsing": lazy_gettext("Input should be a valid UUID"),
    "uuid_type": lazy_gettext("Input should be a valid UUID"),
}

#: One value pydantic lists in ``expected``: a quoted string or a number.
_EXPECTED_VALUE = re.compile(r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|-?[0-9][0-9.e+-]*""")


def validation_message(error: ErrorDetails) -> str:
    """The message of one of pydantic's validation errors, in the reader's language.

    English is pydantic's own message, unchanged; another language gets the
    common types translated, with their limits (``ctx``) filled in, and
    pydantic's message for the rest.
    """
    english = error["msg"]
    if current_locale() == "en":
        return english
    kind = error["type"]
    ctx: dict[str, t.Any] = dict(error.get("ctx") or {})
    if kind in ("string_too_short", "too_short") and "min_length" in ctx:
        return _at_least(kind, int(ctx["min_length"]))
    if kind in ("string_too_long", "too_long") and "max_length" in ctx:
        return _at_most(kind, int(ctx["max_length"]))
    message = _VALIDATION_MESSAGES.get(kind)
    if message is None:
        return english
    text = str(message)
    if "%(" not in text:
        return text
    try:
        return text % {key: _ctx_text(key, value) for key, value in ctx.items()}
    except (KeyError, TypeError, ValueError):
        return english


def _at_least(kind: str, limit: int) -> str:
    if kind == "string_too_short":
        return ngettext(
            "String should have at least %(num)s character",
            "String should have at least %(num)s characters",
            limit,
        )
    return ngettext(
        "List should have at least %(num)s item", "List should have at least %(num)s items", limit
    )


def _at_most(kind: str, limit: int) -> str:
    if kind == "string_too_long":
        return ngettext(
            "String should have at most %(num)s character",
            "String should have at most %(num)s characters",
            limit,
        )
    return ngettext(
        "List should have at most %(num)s item", "List should have at most %(num)s items", limit
    )


def _ctx_text(key: str, value: t.Any) -> str:
    """A value of an error's ``ctx`` as the message shows it."""
    if key == "expected" and isinstance(value, str):
        return _choices(value)
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float, decimal.Decimal)):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return number(value)
    return str(value)


def _choices(expected: str) -> str:
    """``'a', 'b' or 'c'`` as a list in the reader's language (``'a'、'b'、'c'``)."""
    found = _EXPECTED_VALUE.findall(expected)
    if not found:
        return expected
    english = found[0] if len(found) == 1 else f"{', '.join(found[:-1])} or {found[-1]}"
    if english != expected:
        return expected  # not a plain list of values: leave it as pydantic wrote it
    return pgettext("list separator", ", ").join(found)
