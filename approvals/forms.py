"""The decision form, typed from the workflow's state schema.

bool → checkbox, int / float / Decimal → number, Literal / Enum → select, str → text
(or textarea for long values), anything else (lists, dicts, models) → a JSON editor
that must parse. The services check the values again against the schema
(`Workflow.validate_updates`), so the form is the first line, not the only one.
"""

from __future__ import annotations

import enum
import json
import types
import typing
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django import forms
from django.core import signing
from django.core.exceptions import ValidationError
from django.forms.fields import InvalidJSONInput
from django.utils import timezone

from approvals.models import Decision, Review
from approvals.services import allowed_actions
from workflows import limits
from workflows.registry import InvalidUpdate, Workflow

ACTION_LABELS = {
    Decision.Action.APPROVE: "Approve",
    Decision.Action.REJECT: "Reject",
    Decision.Action.EDIT: "Edit and accept",
    Decision.Action.RESPOND: "Respond",
    Decision.Action.IGNORE: "Ignore",
}
# "Remind me tomorrow" means tomorrow at this hour, in the site's time zone.
FOLLOW_UP_HOUR = 9
MAX_JSON_CHARS = 65_536
MAX_TEXT_CHARS = 20_000
_SIGNER_SALT = "approvals.review-form"
# Form fields that are not state fields, prefixed so a state field cannot collide with them.
# "inbox" says the decision was taken in the inbox (approvals/inbox.html), which opens the next.
CONTROL_FIELDS = {"csrfmiddlewaretoken", "action", "comment", "response", "args", "pin", "inbox"}


def field_prefix(name: str) -> str:
    return f"state__{name}"


def _optional(hint: Any) -> tuple[Any, bool]:
    """(inner type, allows None) for `X | None` / `Optional[X]`."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(args) == 1:
            return args[0], True
    return hint, False


class JSONValueField(forms.JSONField):
    widget = forms.Textarea(attrs={"rows": 6, "spellcheck": "false", "class": "json"})

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", MAX_JSON_CHARS)
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> Any:
        if isinstance(value, str) and len(value) > MAX_JSON_CHARS:
            raise ValidationError(f"At most {MAX_JSON_CHARS:,} characters of JSON.")
        # Measured before parsing: JSON nested thousands deep makes json.loads raise RecursionError.
        too_deep = limits.json_too_deep(value) if isinstance(value, str) else None
        if too_deep:
            raise ValidationError(too_deep)
        try:
            return super().to_python(value)
        except ValidationError:
            raise ValidationError("This is not valid JSON.") from None

    def bound_data(self, data: Any, initial: Any) -> Any:
        # Re-rendering the form parses what was typed again: what is too deep to parse, or
        # holds what cannot be shown (a lone surrogate cannot be encoded), is shown as typed.
        if isinstance(data, str) and limits.json_too_deep(data):
            return InvalidJSONInput(data)
        value = super().bound_data(data, initial)
        if isinstance(data, str) and limits.storable_problem(value):
            return InvalidJSONInput(data)
        return value

    def validate(self, value: Any) -> None:
        super().validate(value)
        problem = limits.storable_problem(value)
        if problem:
            raise ValidationError(f"This cannot be saved: {problem}.")


def state_field(hint: Any, value: Any) -> forms.Field:
    """The form field for one editable state field of type `hint`, currently `value`."""
    hint, nullable = _optional(hint)
    origin = typing.get_origin(hint)
    required = not nullable
    field: forms.Field
    if hint is bool:
        field = forms.BooleanField(required=False)
    elif hint is int:
        field = forms.IntegerField(required=required)
    elif hint is float:
        field = forms.FloatField(required=required, widget=forms.NumberInput(attrs={"step": "any"}))
    elif hint is Decimal:
        field = forms.DecimalField(required=required)
    elif origin is typing.Literal:
        options = typing.get_args(hint)
        by_text = {str(option): option for option in options}
        field = forms.TypedChoiceField(
            choices=[(str(option), str(option)) for option in options],
            coerce=lambda text: by_text[text],
            required=required,
        )
    elif isinstance(hint, type) and issubclass(hint, enum.Enum):
        # The member itself: its value would be held to the value's type and refused.
        members = {str(member.value): member for member in hint}
        field = forms.TypedChoiceField(
            choices=[(str(member.value), member.name.replace("_", " ").capitalize()) for member in hint],
            coerce=lambda text: members[text],
            required=required,
        )
    elif hint is str:
        long = isinstance(value, str) and (len(value) > 80 or "\n" in value)
        field = forms.CharField(
            required=False,
            max_length=MAX_TEXT_CHARS,
            strip=False,
            widget=forms.Textarea(attrs={"rows": 4}) if long else forms.TextInput(),
        )
    else:
        field = JSONValueField(required=required)
    if nullable and not isinstance(field, (forms.BooleanField, forms.CharField, JSONValueField)):
        field.empty_value = None  # type: ignore[union-attr]
    return field


def add_state_fields(form: forms.Form, workflow: Workflow, values: dict[str, Any]) -> None:
    """One typed field per editable state field, filled with its current value."""
    for name, hint in workflow.field_types.items():
        field = state_field(hint, values.get(name))
        if name not in values:
            field = _unset(field)
        field.label = name.replace("_", " ").capitalize()
        field.initial = _as_json(workflow, name, values.get(name))
        form.fields[field_prefix(name)] = field


def _as_json(workflow: Workflow, name: str, value: Any) -> Any:
    """A state value as the widgets show it: an Enum by its value, a model or a date as JSON."""
    if value is None:
        return None
    try:
        return workflow.dump_updates({name: value})[name]
    except InvalidUpdate:
        # A value that no longer fits its type (state written before the schema changed) is
        # shown as it is; submitting it unchanged is no edit.
        return value


def _unset(field: forms.Field) -> forms.Field:
    """A field the graph has not set yet: leaving it empty is not an edit. A select gets an
    empty choice and a checkbox becomes unknown / yes / no, or the browser would send the first
    option or an unticked False as an edit nobody made."""
    if isinstance(field, forms.BooleanField):
        return forms.NullBooleanField(required=False)
    field.required = False
    if isinstance(field, forms.TypedChoiceField):
        field.choices = [("", "— not set —"), *field.widget.choices]
        field.empty_value = None
    return field


def changed_state(form: forms.Form, workflow: Workflow, values: dict[str, Any]) -> dict[str, Any]:
    """The state fields of a valid form whose value differs from `values`, typed."""
    changed: dict[str, Any] = {}
    for name in workflow.field_types:
        key = field_prefix(name)
        if key not in form.cleaned_data:
            continue
        value = form.cleaned_data[key]
        old = values.get(name)
        if _same(value, old) or (
            old is not None and _as_json(workflow, name, value) == _as_json(workflow, name, old)
        ):
            continue
        changed[name] = value
    return changed


def refuse_unstorable(form: DecisionForm | RollbackForm) -> None:
    """A form error when the state fields together are more than a checkpoint can store
    (each JSON field checks itself; see workflows.limits). Runs in the form's clean step."""
    values = {
        name: form.cleaned_data[field_prefix(name)]
        for name in form.workflow.field_types
        if field_prefix(name) in form.cleaned_data
    }
    problem = limits.storable_problem(values)
    if problem:
        form.add_error(None, f"These edits cannot be saved: {problem}.")


def sign_pin(review: Review) -> str:
    """What the form was rendered from, signed: tampering is an error, staleness a 409."""
    return signing.dumps([review.pk, review.checkpoint_id, review.interrupt_id], salt=_SIGNER_SALT)


def _response_field() -> forms.CharField:
    """The reviewer's answer: to an interrupt(), or to an Agent Inbox request that allows one."""
    return forms.CharField(
        label="Response", required=False, max_length=MAX_TEXT_CHARS, widget=forms.Textarea(attrs={"rows": 3})
    )


class _ActionChoice(forms.RadioSelect):
    """Radio buttons where some choices show, disabled, with the reason beside them: a starter
    sees approve and why it is not theirs to give (the service refuses it anyway)."""

    def __init__(self, *args: Any, disabled: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.disabled = disabled or {}

    def create_option(self, name: str, value: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        option = super().create_option(name, value, *args, **kwargs)
        reason = self.disabled.get(str(value))
        if reason:
            option["attrs"] = {**option["attrs"], "disabled": True, "title": reason}
            option["label"] = f"{option['label']} (not available to you)"
        return option


class DecisionForm(forms.Form):
    comment = forms.CharField(
        label="Comment", required=False, max_length=5000, widget=forms.Textarea(attrs={"rows": 3})
    )
    pin = forms.CharField(widget=forms.HiddenInput)

    def __init__(
        self,
        *args: Any,
        review: Review,
        workflow: Workflow,
        values: dict[str, Any],
        approve_refusal: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.review = review
        self.workflow = workflow
        # For a review that needs several approvals, the state with the counting approvals'
        # edits (approvals.services.proposed_values): what is left as shown is no edit.
        self.values = values
        # Why this user may not approve (segregation of duties, an approval already given),
        # "" if they may: approve shows disabled with it. A forged approve still reaches
        # decide(), which refuses it with the same words.
        self.approve_refusal = approve_refusal
        actions = allowed_actions(review)
        disabled = {Decision.Action.APPROVE.value: approve_refusal} if approve_refusal else {}
        self.fields["action"] = forms.ChoiceField(
            label="Decision",
            choices=[(action, ACTION_LABELS[Decision.Action(action)]) for action in actions],
            widget=_ActionChoice(disabled=disabled),
        )
        open_actions = [action for action in actions if action not in disabled]
        self.initial.setdefault("action", open_actions[0] if open_actions else "")
        self.initial["pin"] = sign_pin(review)
        add_state_fields(self, workflow, values)
        if review.kind == Review.Kind.AGENT_INBOX:
            request = review.value[0]
            config = request.get("config", {})
            if config.get("allow_respond"):
                self.fields["response"] = _response_field()
            if config.get("allow_edit"):
                self.fields["args"] = JSONValueField(label="Arguments", required=False)
                self.initial["args"] = request.get("action_request", {}).get("args", {})
        elif review.kind == Review.Kind.INTERRUPT:
            self.fields["response"] = _response_field()

    @property
    def state_fields(self) -> list[forms.BoundField]:
        return [self[field_prefix(name)] for name in self.workflow.field_types]

    def clean_pin(self) -> str:
        try:
            pk, checkpoint_id, interrupt_id = signing.loads(self.cleaned_data["pin"], salt=_SIGNER_SALT)
        except (signing.BadSignature, ValueError, TypeError):
            raise ValidationError("This form was altered; reload the review and try again.") from None
        if pk != self.review.pk or interrupt_id != self.review.interrupt_id:
            raise ValidationError("This form belongs to another review; reload the review and try again.")
        self.checkpoint_id = str(checkpoint_id)
        return str(checkpoint_id)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.data:
            unknown = sorted(set(self.data) - set(self.fields) - CONTROL_FIELDS)
            if unknown:
                raise ValidationError(f"Unknown fields: {', '.join(unknown)}.")
        action = cleaned.get("action")
        if action == Decision.Action.RESPOND and not (cleaned.get("response") or "").strip():
            self.add_error("response", "Write a response to send.")
        # JSON that does not parse already has its error; its shape is the next question.
        if (
            action == Decision.Action.EDIT
            and "args" not in self.errors
            and not isinstance(cleaned.get("args"), dict)
        ):
            self.add_error("args", "The edited arguments must be a JSON object.")
        refuse_unstorable(self)
        return cleaned

    def state_updates(self) -> dict[str, Any]:
        """The state fields the reviewer changed, with their typed values."""
        return changed_state(self, self.workflow, self.values)

    def answer(self) -> Any:
        action = self.cleaned_data.get("action")
        if self.review.kind == Review.Kind.AGENT_INBOX and action == Decision.Action.EDIT:
            return self.cleaned_data.get("args")
        return self.cleaned_data.get("response") or None


@dataclass(frozen=True)
class StateRow:
    """One field of the review page's state table: an editable field of an open review is its
    input, in place; any other is its value as text."""

    name: str
    value: Any
    # False for an editable field the graph has not set yet (it shows as an empty input).
    is_set: bool
    editable: bool
    field: forms.BoundField | None = None


def state_rows(values: dict[str, Any], editable: set[str], form: DecisionForm | None) -> list[StateRow]:
    """The state as one table, in the state's order, then the editable fields not set yet.
    With `form` (an open review) the editable fields are the form's inputs, so no value is
    shown twice; without it (decided, withdrawn, stale) every field is plain text."""
    inputs = set(form.workflow.field_types) if form is not None else set()
    rows = [
        StateRow(
            name=name,
            value=value,
            is_set=True,
            editable=name in editable,
            field=form[field_prefix(name)] if form is not None and name in inputs else None,
        )
        for name, value in values.items()
    ]
    if form is not None:
        rows += [
            StateRow(name=name, value=None, is_set=False, editable=True, field=form[field_prefix(name)])
            for name in form.workflow.field_types
            if name not in values
        ]
    return rows


def _same(new: Any, old: Any) -> bool:
    if old is None and new in ("", None):
        return True
    if isinstance(new, Decimal) and old is not None:
        try:
            return new == Decimal(str(old))
        except ArithmeticError:
            return False
    if isinstance(new, float) and isinstance(old, (int, float)) and not isinstance(old, bool):
        return new == float(old)
    if isinstance(new, (dict, list)) or isinstance(old, (dict, list)):
        return json.dumps(new, sort_keys=True, default=str) == json.dumps(old, sort_keys=True, default=str)
    return bool(new == old)


# -- thread admin ------------------------------------------------------------------------------


def _reason(label: str) -> forms.CharField:
    return forms.CharField(label=label, max_length=2000, widget=forms.Textarea(attrs={"rows": 3, "cols": 60}))


class RollbackForm(forms.Form):
    """Optional corrections to the workflow's editable fields, typed like the review form and
    filled with the target checkpoint's values, and a required reason. A field left as it was,
    or empty, is no correction. `workflows.services.rollback_thread` validates them again."""

    reason = _reason("Reason")

    def __init__(self, *args: Any, workflow: Workflow, values: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.workflow = workflow
        self.values = values
        add_state_fields(self, workflow, values)
        for name in workflow.field_types:
            self.fields[field_prefix(name)].required = False

    @property
    def state_fields(self) -> list[forms.BoundField]:
        return [self[field_prefix(name)] for name in self.workflow.field_types]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        unknown = sorted(set(self.data) - set(self.fields) - {"csrfmiddlewaretoken"})
        if unknown:
            raise ValidationError(f"Unknown fields: {', '.join(unknown)}.")
        refuse_unstorable(self)
        return cleaned

    def corrections(self) -> dict[str, Any]:
        """The changed fields with their typed values; empty ones are left out (no edit)."""
        changed = changed_state(self, self.workflow, self.values)
        return {name: value for name, value in changed.items() if value not in (None, "")}


class CancelForm(forms.Form):
    """Why a thread is stopped for good; it goes into the audit trail."""

    reason = _reason("Reason")


class FollowUpForm(forms.Form):
    """When the claimant wants to be reminded of a review: a date and time, "tomorrow" (at
    FOLLOW_UP_HOUR, the site's time zone) or "clear". The service checks the date again."""

    at = forms.DateTimeField(
        required=False,
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    preset = forms.ChoiceField(
        required=False, choices=[("", "a date"), ("tomorrow", "tomorrow morning"), ("clear", "clear")]
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if not cleaned.get("preset") and cleaned.get("at") is None and not self.errors:
            raise ValidationError("Choose when to be reminded (a date and time), or “Remind me tomorrow”.")
        return cleaned

    def when(self) -> datetime | None:
        """The follow-up date asked for; None to clear it. Only for a valid form."""
        preset = self.cleaned_data.get("preset")
        if preset == "clear":
            return None
        if preset == "tomorrow":
            tomorrow = timezone.localdate() + timedelta(days=1)
            return timezone.make_aware(datetime.combine(tomorrow, time(FOLLOW_UP_HOUR)))
        at: datetime = self.cleaned_data["at"]
        return at
