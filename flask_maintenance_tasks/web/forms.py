"""The run form of a task, generated from its ``Parameters`` model.

A form field is chosen from each parameter's shape
(:mod:`flask_maintenance_tasks.parameters`, which the command line shares);
what the browser sends is turned back into arguments for the runner by the
same module, and the runner validates them with the model itself, so the form
never holds rules of its own. Secrets (``SecretStr`` fields and masked names)
get password inputs and are never written back into a page or a URL. Nor is
any other value that holds a masked value at any depth (a JSON parameter
``{"password": ...}``): :mod:`flask_maintenance_tasks.masking` decides, and such
a field is *withheld*: left empty, with a note asking for it again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import typing as t

import pydantic
from pydantic_core import PydanticSerializationError, PydanticUndefined

from .. import masking, parameters, partitions, scheduling
from ..exceptions import InvalidArguments
from ..i18n import gettext as _
from ..i18n import lazy_gettext, pgettext
from ..parameters import Parameter, Shape
from ..policy import ErrorPolicy

if t.TYPE_CHECKING:
    from ..task import Task

#: Input kinds, named after what the template renders.
Kind = t.Literal[
    "checkbox", "choice", "number", "text", "password", "date", "time", "datetime", "list", "json"
]


@dataclasses.dataclass(frozen=True)
class FormField:
    """One parameter as a form field."""

    name: str
    kind: Kind
    required: bool
    #: The parameter the field gives a value to: how its text becomes that value.
    parameter: Parameter
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

    @property
    def input_id(self) -> str:
        return f"param-{self.name}"


def _input(parameter: Parameter) -> tuple[Kind, dict[str, t.Any]]:
    """The input that edits ``parameter``, and its attributes."""
    shape = parameter.shape
    if shape == "secret":
        return "password", {}
    if shape == "bool":
        if parameter.optional:
            options = (("true", _("yes")), ("false", _("no")))
            return "choice", {"options": options, "allow_blank": True}
        return "checkbox", {}
    if shape == "integer":
        return "number", {"step": "1"}
    if shape == "number":
        return "number", {"step": "any"}
    if shape == "choice":
        return "choice", {"options": tuple((text, text) for text, _ in parameter.choices)}
    if shape == "datetime":
        return "datetime", {"help": _("Timezone: UTC.")}
    if shape == "list":
        return "list", {"help": _("Separate values with commas.")}
    if shape == "json":
        return "json", {"help": _("A JSON value.")}
    if shape == "date":
        return "date", {}
    if shape == "time":
        return "time", {}
    return "text", {}


def to_form_text(value: t.Any, kind: Kind, shape: Shape) -> str:
    """A Python or stored JSON value as the form field of ``kind`` shows it."""
    if value is None or isinstance(value, (pydantic.SecretStr, pydantic.SecretBytes)):
        return ""
    if kind == "checkbox":
        return "true" if value is True or str(value).lower() in parameters.TRUE else ""
    if kind == "datetime":
        # <input type=datetime-local>: no timezone, and seconds only when there are some.
        moment = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
        if isinstance(moment, dt.datetime):
            if moment.tzinfo is not None:
                moment = moment.astimezone(dt.timezone.utc).replace(tzinfo=None)
            return moment.isoformat(timespec="seconds" if moment.second else "minutes")
        return str(value)
    return parameters.to_text(value, shape)


def fields_for(task: type[Task], masked: t.Iterable[str]) -> list[FormField]:
    """The form fields of ``task``'s parameters, in declaration order."""
    model = task.Parameters
    if model is None:
        return []
    described = parameters.parameters_of(task)
    fields = []
    for name, info in model.model_fields.items():
        parameter = described[name]
        kind, extra = _input(parameter)
        secret = masking.is_secret_parameter(name, task, masked)
        if secret and kind in ("text", "password"):
            kind = "password"
        required = info.is_required()
        default = ""
        if not required and not secret:
            value = info.get_default(call_default_factory=True)
            if value is not PydanticUndefined and not _holds_secret(name, value, task, masked):
                default = to_form_text(value, kind, parameter.shape)
        if kind == "choice" and (parameter.optional or required):
            extra["allow_blank"] = True
        help_text = " ".join(filter(None, [info.description, extra.pop("help", None)])) or None
        fields.append(
            FormField(
                name=name,
                kind=kind,
                required=required,
                parameter=parameter,
                default=default,
                secret=secret,
                help=help_text,
                **extra,
            )
        )
    return fields


def _holds_secret(name: str, value: t.Any, task: type[Task], masked: t.Iterable[str]) -> bool:
    """Whether a Python value of parameter ``name`` (a default) holds a masked value."""
    try:
        stored = pydantic.TypeAdapter(t.Any).dump_python(value, mode="json")
    except (ValueError, PydanticSerializationError):
        return True  # not shown, then
    return bool(masking.secret_arguments({name: stored}, task, masked))


def prefill(
    fields: list[FormField],
    given: t.Mapping[str, str] | None,
    *,
    submitted: bool = False,
    withheld: t.Collection[str] = (),
) -> dict[str, str]:
    """What each field shows: the given value (query string or submitted form), else its default.

    Secret fields, and the ``withheld`` ones (see :func:`withheld_fields`),
    always start empty. In a ``submitted`` form an absent checkbox was
    unchecked; in a query string it was not mentioned.
    """
    values = {}
    for field in fields:
        if field.secret or field.name in withheld:
            values[field.name] = ""
        elif given is not None and field.name in given:
            raw = given[field.name]
            values[field.name] = (
                to_form_text(raw, field.kind, field.parameter.shape)
                if field.kind == "checkbox"
                else raw
            )
        elif submitted and field.kind == "checkbox":
            values[field.name] = ""
        else:
            values[field.name] = field.default
    return values


def withheld_fields(
    task: type[Task], masked: t.Iterable[str], fields: list[FormField], given: t.Mapping[str, str]
) -> frozenset[str]:
    """The fields whose ``given`` text must not be written back: it holds a masked value.

    The text is read as the field reads it; text that cannot be read is
    withheld when it mentions a masked name. Secret fields are empty anyway.
    """
    masked = tuple(masked)
    found = set()
    for field in fields:
        text = given.get(field.name)
        if field.secret or not text or field.kind not in ("json", "list"):
            continue  # only JSON nests names: a list holds scalars, but may be written as JSON
        try:
            value = parameters.from_text(field.parameter, text)
        except ValueError:
            if masking.mentions_masked_name(text, task, masked):
                found.add(field.name)
            continue
        if masking.secret_arguments({field.name: value}, task, masked):
            found.add(field.name)
    return frozenset(found)


def arguments_from(
    fields: list[FormField], form: t.Mapping[str, str]
) -> tuple[dict[str, t.Any], dict[str, list[str]]]:
    """Arguments for the runner from a submitted form, and the errors found on the way.

    An empty field is left out, so that the parameter's default applies (or
    the model reports the missing required value); so is a blank one, but for
    text. An unchecked checkbox is not sent: it is false. Values are stripped,
    but for passwords. :func:`.parameters.from_text` does the rest.
    """
    arguments: dict[str, t.Any] = {}
    errors: dict[str, list[str]] = {}
    for field in fields:
        if field.kind == "checkbox":
            arguments[field.name] = form.get(field.name, "").lower() in parameters.TRUE
            continue
        raw = form.get(field.name, "")
        if field.kind not in ("text", "password") and not raw.strip():
            continue
        if field.kind in ("text", "password") and raw == "":
            continue
        try:
            text = raw if field.kind == "password" else raw.strip()
            arguments[field.name] = parameters.from_text(field.parameter, text)
        except json.JSONDecodeError as exc:
            # (The parser's reason, exc.msg, is Python's own, in English.)
            errors[field.name] = [_("Enter a valid JSON value (%(reason)s).", reason=exc.msg)]
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


#: The query parameter of a "run again" link naming each field left out of it
#: because its value holds a secret. A parameter's name cannot start with "_".
WITHHELD_QUERY = "_withheld"


def run_again_query(
    fields: list[FormField], arguments: t.Any, withheld: t.Collection[str]
) -> dict[str, t.Any]:
    """The query string that prefills the form with a run's arguments, secrets left out.

    Secret fields and the ``withheld`` arguments (:func:`masking.secret_arguments`)
    are left out; the latter are named under :data:`WITHHELD_QUERY`, so that the
    form asks for them again.
    """
    if not isinstance(arguments, dict):
        return {}
    query: dict[str, t.Any] = {}
    for field in fields:
        if field.secret or field.name not in arguments or field.name in withheld:
            continue
        try:
            text = to_form_text(arguments[field.name], field.kind, field.parameter.shape)
        except (TypeError, ValueError):
            continue
        query[field.name] = text if field.kind != "checkbox" else (text or "false")
    names = sorted(f.name for f in fields if f.name in withheld and not f.secret)
    if names:
        query[WITHHELD_QUERY] = names
    return query


#: The "On failure" fields of the run form, by the runner's keyword. A
#: parameter's name cannot start with "_", so these never clash with one.
POLICY_FIELDS = {
    "error_policy": "_error_policy",
    "max_failures": "_max_failures",
    "max_failure_rate": "_max_failure_rate",
}


RATE_ERROR = lazy_gettext(
    "Enter a percentage above 0 and at most 100: %(example)s means %(example)s%% of the items "
    "processed.",
    example=5,
)


def policy_from(
    task: type[Task], form: t.Mapping[str, str]
) -> tuple[dict[str, str | None], dict[str, list[str]]]:
    """The error policy overrides of a submitted form, and the errors found in them.

    An empty field keeps the task's value (``None``). The rate field holds a
    percentage: ``5`` and ``5%`` both mean 5%. Errors are keyed by form field
    name (:data:`POLICY_FIELDS`).
    """
    overrides: dict[str, str | None] = {}
    for keyword, name in POLICY_FIELDS.items():
        text = form.get(name, "").strip()
        if keyword == "max_failure_rate" and text and not text.endswith("%"):
            text += "%"
        overrides[keyword] = text or None
    try:
        ErrorPolicy.resolve(task, **overrides)
    except InvalidArguments as exc:
        errors = {
            POLICY_FIELDS[keyword]: [_full_stop(message) for message in texts]
            for keyword, texts in exc.errors.items()
            if keyword in POLICY_FIELDS
        }
        if POLICY_FIELDS["max_failure_rate"] in errors:
            errors[POLICY_FIELDS["max_failure_rate"]] = [str(RATE_ERROR)]
        return overrides, errors
    return overrides, {}


def policy_values(form: t.Mapping[str, str] | None) -> dict[str, str]:
    """The "On failure" fields as the form shows them again (empty on a new form)."""
    if form is None:
        return {}
    return {name: form.get(name, "")[:100] for name in POLICY_FIELDS.values()}


#: The "Partitions" field of the run form (see :func:`partitions_from`).
PARTITIONS_FIELD = "_partitions"

#: Digits past which a number is refused without being read: no maximum is that large.
_PARTITION_DIGITS = 6


def partitions_from(
    task: type[Task], form: t.Mapping[str, str], maximum: int
) -> tuple[int | None, dict[str, list[str]]]:
    """The number of partitions a submitted form asks for, and the errors found in it.

    An empty field keeps the task's own (``None``). Only ASCII digits, with a
    minus sign at most, are read as a number, and only a few of them (so a
    number of a thousand digits costs nothing); the range is checked by
    :func:`.partitions.resolve`, as for ``mtasks.run``, so that the messages
    are the engine's. Errors are keyed by :data:`PARTITIONS_FIELD`.
    """
    text = form.get(PARTITIONS_FIELD, "").strip()
    if not text:
        return None, {}
    digits = text[1:] if text.startswith("-") else text
    whole = _("Enter a whole number from 1 to %(maximum)s.", maximum=maximum)
    if not (digits.isascii() and digits.isdigit()):
        return None, {PARTITIONS_FIELD: [whole]}
    if len(digits.lstrip("0")) > _PARTITION_DIGITS:
        if text.startswith("-"):
            return None, {PARTITIONS_FIELD: [whole]}
        too_many = _(
            "More than MAINTENANCE_TASKS_MAX_PARTITIONS allows (%(maximum)s): ask for fewer.",
            maximum=maximum,
        )
        return None, {PARTITIONS_FIELD: [too_many]}
    number = int(digits.lstrip("0") or "0")  # (int() refuses more than 4,300 digits)
    try:
        count = partitions.resolve(task, -number if text.startswith("-") else number, maximum)
    except InvalidArguments as exc:
        return None, {PARTITIONS_FIELD: [sentence(m) for m in exc.errors.get("partitions", [])]}
    return count, {}


#: How a sentence may end already: an English full stop, a Japanese one (。).
_FULL_STOPS = (".", "\u3002")


def _ended(message: str, stops: tuple[str, ...]) -> str:
    """``message`` capitalised, with the language's full stop unless it ends in one of
    ``stops``."""
    # Translators: the mark that ends a sentence ("。" in Japanese).
    stop = pgettext("sentence end", ".")
    return f"{message[0].upper()}{message[1:]}{'' if message.endswith(stops) else stop}"


def _full_stop(message: str) -> str:
    """An engine's message, capitalised, with a full stop (none added after a Japanese one)."""
    return _ended(message, (_FULL_STOPS[1],))


def sentence(message: str) -> str:
    """An engine's message (lower case, no full stop) as the form shows it."""
    message = message.strip()
    if not message:
        return message
    return _ended(message, _FULL_STOPS)


def partitions_value(form: t.Mapping[str, str] | None, task: type[Task] | None) -> str:
    """What the "Partitions" field shows: what was sent (cut short), else the task's own."""
    if form is not None and PARTITIONS_FIELD in form:
        return form.get(PARTITIONS_FIELD, "")[:100]
    return str(task.partitions) if task is not None else "1"


#: The "Start at" field of the run form (see :func:`at_from`).
AT_FIELD = "_at"


def at_from(
    task: type[Task], form: t.Mapping[str, str], now: dt.datetime
) -> tuple[str | None, dict[str, list[str]]]:
    """The time a submitted form starts the run at, and the errors found in it.

    An empty field starts it now (``None``). The text is checked by
    :func:`.scheduling.due_time`, as for ``mtasks.run``, so that the messages
    are the engine's, and handed to the runner as sent (it checks it again).
    Errors are keyed by :data:`AT_FIELD`.
    """
    text = form.get(AT_FIELD, "").strip()
    if not text:
        return None, {}
    try:
        scheduling.due_time(task.name, text, now)
    except InvalidArguments as exc:
        return None, {AT_FIELD: [sentence(m) for m in exc.errors.get("at", [])]}
    return text, {}


def at_value(form: t.Mapping[str, str] | None) -> str:
    """What the "Start at" field shows: what was sent (cut short), else nothing."""
    if form is None:
        return ""
    return form.get(AT_FIELD, "")[:100]
