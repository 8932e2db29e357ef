"""The run form of a task, generated from its ``Parameters`` model.

A form field is chosen from each parameter's type; what the browser sends is
turned back into arguments for the runner, which validates them with the
model itself, so the form never holds rules of its own. Secrets (``SecretStr``
fields and masked names) get password inputs and are never written back into
a page or a URL.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import json
import types
import typing as t

import pydantic
from pydantic_core import PydanticUndefined

from .. import formatting, masking

if t.TYPE_CHECKING:
    from ..task import Task

#: Input kinds, named after what the template renders.
Kind = t.Literal[
    "checkbox", "choice", "number", "text", "password", "date", "time", "datetime", "list", "json"
]

_TRUE = frozenset({"true", "on", "1", "yes"})


@dataclasses.dataclass(frozen=True)
class FormField:
    """One parameter as a form field."""

    name: str
    kind: Kind
    required: bool
    #: ``<input type=number step=...>``: "1" for integers, "any" otherwise.
    step: str | None = None
    #: ``(value, label)`` of a select; ``allow_blank`` adds an empty first option.
    options: tuple[tuple[str, str], ...] = ()
    allow_blank: bool = False
    help: str | None = None
    #: The default as the form shows it ("" when there is none, or it is secret).
    default: str = ""
    #: Never prefilled, never echoed back, never put in a link.
    secret: bool = False
    #: Literal values by their form spelling, to give the model the real value back.
    literals: tuple[tuple[str, t.Any], ...] = ()

    @property
    def input_id(self) -> str:
        return f"param-{self.name}"


def _strip_annotated(annotation: t.Any) -> t.Any:
    while t.get_origin(annotation) is t.Annotated:
        annotation = t.get_args(annotation)[0]
    return annotation


def _unwrap_optional(annotation: t.Any) -> tuple[t.Any, bool]:
    """``(inner type, accepts None)`` for ``X | None`` / ``Optional[X]``."""
    annotation = _strip_annotated(annotation)
    origin = t.get_origin(annotation)
    if origin is t.Union or origin is types.UnionType:
        args = t.get_args(annotation)
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return _strip_annotated(rest[0]), len(rest) < len(args)
        return annotation, len(rest) < len(args)
    return annotation, False


def _is(annotation: t.Any, *classes: type) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, classes)


def _is_scalar(annotation: t.Any) -> bool:
    annotation = _strip_annotated(annotation)
    return t.get_origin(annotation) is t.Literal or _is(
        annotation, str, int, float, decimal.Decimal, enum.Enum, dt.date, dt.time
    )


def _kind(annotation: t.Any, optional: bool) -> tuple[Kind, dict[str, t.Any]]:
    if _is(annotation, pydantic.SecretStr, pydantic.SecretBytes):
        return "password", {}
    if _is(annotation, bool):
        if optional:
            return "choice", {
                "options": (("true", "yes"), ("false", "no")),
                "literals": (("true", True), ("false", False)),
                "allow_blank": True,
            }
        return "checkbox", {}
    if _is(annotation, int):
        return "number", {"step": "1"}
    if _is(annotation, float, decimal.Decimal):
        return "number", {"step": "any"}
    if t.get_origin(annotation) is t.Literal:
        values = t.get_args(annotation)
        return "choice", {
            "options": tuple((_scalar_text(v), _scalar_text(v)) for v in values),
            "literals": tuple((_scalar_text(v), v) for v in values),
        }
    if _is(annotation, enum.Enum):
        return "choice", {
            "options": tuple((_scalar_text(m.value), _scalar_text(m.value)) for m in annotation)
        }
    if _is(annotation, dt.datetime):
        return "datetime", {"help": "Timezone: UTC."}
    if _is(annotation, dt.date):
        return "date", {}
    if _is(annotation, dt.time):
        return "time", {}
    if _is(annotation, str):
        return "text", {}
    origin = t.get_origin(annotation)
    args = t.get_args(annotation)
    if (
        _is(origin, list, tuple, set, frozenset)
        and args
        and all(_is_scalar(a) for a in args if a is not Ellipsis)
    ):
        return "list", {"help": "Separate values with commas."}
    return "json", {"help": "A JSON value."}


def _scalar_text(value: t.Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return _scalar_text(value.value)
    return str(value)


def to_form_text(value: t.Any, kind: Kind) -> str:
    """A Python or stored JSON value as the form field of ``kind`` shows it."""
    if value is None or isinstance(value, (pydantic.SecretStr, pydantic.SecretBytes)):
        return ""
    if kind == "checkbox":
        return "true" if value is True or str(value).lower() in _TRUE else ""
    if kind == "datetime":
        moment = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
        if isinstance(moment, dt.datetime):
            if moment.tzinfo is not None:
                moment = moment.astimezone(dt.timezone.utc).replace(tzinfo=None)
            return moment.isoformat(timespec="seconds" if moment.second else "minutes")
        return str(value)
    if kind in ("date", "time") and isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if kind == "list" and isinstance(value, (list, tuple, set, frozenset)):
        return ", ".join(_scalar_text(v) for v in value)
    if kind == "json":
        if isinstance(value, pydantic.BaseModel):
            return value.model_dump_json()
        return json.dumps(value, default=str)
    return _scalar_text(value)


def fields_for(task: type[Task], masked: t.Iterable[str]) -> list[FormField]:
    """The form fields of ``task``'s parameters, in declaration order."""
    model = task.Parameters
    if model is None:
        return []
    secrets, patterns = masking.masked_names(task, masked)
    fields = []
    for name, info in model.model_fields.items():
        annotation, optional = _unwrap_optional(info.annotation)
        kind, extra = _kind(annotation, optional)
        secret = secrets.get(name) is True or any(p in name.lower() for p in patterns)
        if secret and kind in ("text", "password"):
            kind = "password"
        required = info.is_required()
        default = ""
        if not required and not secret:
            value = info.get_default(call_default_factory=True)
            if value is not PydanticUndefined:
                default = to_form_text(value, kind)
        if kind == "choice" and (optional or required):
            extra["allow_blank"] = True
        help_text = " ".join(filter(None, [info.description, extra.pop("help", None)])) or None
        fields.append(
            FormField(
                name=name,
                kind=kind,
                required=required,
                default=default,
                secret=secret or bool(secrets.get(name)),
                help=help_text,
                **extra,
            )
        )
    return fields


def prefill(
    fields: list[FormField], given: t.Mapping[str, str] | None, *, submitted: bool = False
) -> dict[str, str]:
    """What each field shows: the given value (query string or submitted form), else its default.

    Secret fields always start empty. In a ``submitted`` form an absent
    checkbox was unchecked; in a query string it was not mentioned.
    """
    values = {}
    for field in fields:
        if field.secret:
            values[field.name] = ""
        elif given is not None and field.name in given:
            raw = given[field.name]
            values[field.name] = to_form_text(raw, field.kind) if field.kind == "checkbox" else raw
        elif submitted and field.kind == "checkbox":
            values[field.name] = ""
        else:
            values[field.name] = field.default
    return values


def arguments_from(
    fields: list[FormField], form: t.Mapping[str, str]
) -> tuple[dict[str, t.Any], dict[str, list[str]]]:
    """Arguments for the runner from a submitted form, and the errors found on the way.

    An empty field is left out, so that the parameter's default applies (or
    the model reports the missing required value).
    """
    arguments: dict[str, t.Any] = {}
    errors: dict[str, list[str]] = {}
    for field in fields:
        if field.kind == "checkbox":
            arguments[field.name] = form.get(field.name, "").lower() in _TRUE
            continue
        raw = form.get(field.name, "")
        if field.kind not in ("text", "password") and not raw.strip():
            continue
        if field.kind in ("text", "password") and raw == "":
            continue
        if field.kind == "list":
            arguments[field.name] = [part.strip() for part in raw.split(",") if part.strip()]
        elif field.kind == "json":
            try:
                arguments[field.name] = json.loads(raw)
            except json.JSONDecodeError as exc:
                errors[field.name] = [f"Enter a valid JSON value ({exc.msg})."]
        elif field.literals:
            arguments[field.name] = dict(field.literals).get(raw, raw)
        else:
            arguments[field.name] = raw.strip() if field.kind != "password" else raw
    return arguments, errors


def field_errors(errors: t.Mapping[str, list[str]]) -> dict[str, list[str]]:
    """Model errors keyed by top-level field (``ids.0`` belongs to ``ids``)."""
    result: dict[str, list[str]] = {}
    for location, messages in errors.items():
        name = location.split(".", 1)[0] or "__root__"
        suffix = location.split(".", 1)[1] if "." in location else ""
        for message in messages:
            result.setdefault(name, []).append(f"{message} ({suffix})" if suffix else message)
    return result


def run_again_query(fields: list[FormField], arguments: t.Any) -> dict[str, t.Any]:
    """The query string that prefills the form with a run's arguments, secrets left out."""
    if not isinstance(arguments, dict):
        return {}
    query: dict[str, t.Any] = {}
    for field in fields:
        if field.secret or field.name not in arguments:
            continue
        try:
            text = to_form_text(arguments[field.name], field.kind)
        except (TypeError, ValueError):
            continue
        query[field.name] = text if field.kind != "checkbox" else (text or "false")
    return query
