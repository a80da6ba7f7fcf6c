"""Runs: POST /threads/{thread_id}/runs (and /wait), their list, one run, /join and /cancel, and
the stateless POST /runs and /runs/wait, in langgraph_sdk's paths and shapes.

A run is what Signoff's services already do, through the one runtime the browser uses:
- `input` on a NEW thread starts it (`workflows.services.start_run`, the `start` permission);
  on a completed thread it runs the graph again with that input;
- `command.resume` answers the thread's interrupts: each answer is a decision, by the key's
  user, on the interrupt's open review (`approvals.services.decide`), with its checks (reviewer
  group, a claim held by someone else, a stale checkpoint: a 409 naming who and when) and its
  audit event, which names the key;
- cancelling stops the thread (`workflows.services.cancel_thread`, the `cancel` permission).

Every field the SDK may send is declared (`api.schemas.RunCreate`); a value Signoff does not
implement is a 422 naming the field and why (`refusals`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from ninja import Router, Status
from ninja.errors import HttpError, ValidationError

from api import access, assistants, convert, streaming, waiting, webhooks
from api.auth import key_data
from api.params import refuse_unknown_query
from api.schemas import Error, RunCreate
from api.schemas import Run as RunSchema
from approvals import services as approvals
from approvals.http import request_user
from approvals.models import Decision, Review
from workflows import engine, registry
from workflows import services as engine_services
from workflows.models import ACTIVE_RUN_STATUSES, Run, Thread

router = Router(tags=["runs"])

ERRORS: dict[int, type[Error]] = {401: Error, 403: Error, 404: Error, 409: Error, 422: Error, 503: Error}

# Agent Inbox's HumanResponse types, as the decisions the reviewer's form takes for them.
HUMAN_RESPONSE = {
    "accept": Decision.Action.APPROVE,
    "edit": Decision.Action.EDIT,
    "response": Decision.Action.RESPOND,
    "ignore": Decision.Action.IGNORE,
}
RUN_FIELDS = tuple(RunSchema.model_fields)


# -- what a run may ask for ------------------------------------------------------------------


def _problem(loc: list[str | int], msg: str, value: Any) -> dict[str, Any]:
    # Where ninja puts a body's own 422s: the body, then the operation's parameter.
    return {"type": "not_implemented", "loc": ["body", "payload", *loc], "msg": msg, "input": value}


def refusals(body: RunCreate, *, thread_id: str | None) -> list[dict[str, Any]]:
    """What the body asks that Signoff does not do, one 422 item per field, each saying why."""
    found: list[dict[str, Any]] = []

    def refuse(loc: list[str | int], msg: str, value: Any) -> None:
        found.append(_problem(loc, msg, value))

    command = body.command
    if command is not None and command.goto not in (None, [], ""):
        refuse(
            ["command", "goto"],
            "a review's answer decides where the graph goes; goto is not taken",
            command.goto,
        )
    if command is not None and command.update and command.resume is None:
        refuse(
            ["command", "update"],
            "edits are given with an answer (command.resume); "
            "edit a thread's state with POST /threads/{id}/state",
            command.update,
        )
    if body.input is not None and command is not None and command.resume is not None:
        refuse(["input"], "a run gives input or answers interrupts (command.resume), not both", body.input)
    if body.context:
        refuse(["context"], "Signoff's workflows take no context", body.context)
    if body.stream_subgraphs:
        refuse(["stream_subgraphs"], "Signoff streams the thread's own graph, not its subgraphs", True)
    if body.checkpoint_during is not None:
        refuse(
            ["checkpoint_during"],
            'deprecated in LangGraph; Signoff is always durability="sync"',
            body.checkpoint_during,
        )
    if body.multitask_strategy in ("interrupt", "rollback"):
        refuse(
            ["multitask_strategy"],
            'Signoff never interrupts or rolls back a running run for another; use "reject" or "enqueue"',
            body.multitask_strategy,
        )
    if body.on_disconnect == "cancel":
        refuse(
            ["on_disconnect"],
            "a run goes on when its client leaves; cancel it with POST /threads/{id}/runs/{run_id}/cancel",
            "cancel",
        )
    if body.on_completion == "delete":
        refuse(["on_completion"], "Signoff deletes no thread or history; the thread is kept", "delete")
    if body.on_completion is not None and thread_id is not None:
        refuse(["on_completion"], "on_completion is for stateless runs (POST /runs)", body.on_completion)
    if body.after_seconds:
        refuse(
            ["after_seconds"], "Signoff does not schedule runs; a run is queued at once", body.after_seconds
        )
    if body.durability in ("async", "exit"):
        refuse(
            ["durability"],
            "Signoff writes every step durably before the next starts (sync); it has no other mode",
            body.durability,
        )
    if body.strict_resume is False:
        refuse(
            ["strict_resume"], "Signoff always refuses an answer to an interrupt that is not waiting", False
        )
    if body.feedback_keys:
        refuse(["feedback_keys"], "Signoff records no LangSmith feedback", body.feedback_keys)
    if body.langsmith_tracer is not None:
        refuse(["langsmith_tracer"], "Signoff traces no runs to LangSmith", body.langsmith_tracer)
    if (body.checkpoint is not None or body.checkpoint_id is not None) and (
        command is None or command.resume is None
    ):
        name = "checkpoint_id" if body.checkpoint_id is not None else "checkpoint"
        refuse(
            [name],
            "a run goes on from the thread's head; a checkpoint pins only an answer (command.resume) "
            "to the pause it answers. Roll a thread back to an earlier checkpoint in the admin",
            getattr(body, name),
        )
    found += _config_refusals(body, thread_id=thread_id)
    return found


def _config_refusals(body: RunCreate, *, thread_id: str | None) -> list[dict[str, Any]]:
    config = body.config
    if config is None:
        return []
    found = []
    limit = settings.SIGNOFF_RECURSION_LIMIT
    if config.recursion_limit is not None and config.recursion_limit != limit:
        found.append(
            _problem(
                ["config", "recursion_limit"],
                f"every run has the server's recursion limit, {limit} (SIGNOFF_RECURSION_LIMIT)",
                config.recursion_limit,
            )
        )
    if config.tags:
        found.append(
            _problem(["config", "tags"], "Signoff traces no runs, so tags would go nowhere", config.tags)
        )
    for key, value in (config.configurable or {}).items():
        if key == "thread_id" and thread_id is not None and str(value) == thread_id:
            continue
        why = (
            "it must be the run's own thread"
            if key == "thread_id"
            else "Signoff's graphs take no configuration"
        )
        found.append(_problem(["config", "configurable", key], why, value))
    return found


def checked_webhook(url: str | None) -> str:
    """The run's webhook URL, or a 422 naming `webhook`. The one place a run's webhook is
    checked: the allow-list from the environment is applied here too."""
    if url is None:
        return ""
    refusal = webhooks.url_refusal(url)
    if refusal:
        raise ValidationError([_problem(["webhook"], refusal, url)])
    return url


def _breakpoint_refusals(body: RunCreate, spec: registry.Workflow) -> list[dict[str, Any]]:
    nodes = set(spec.graph.nodes)
    return [
        _problem([name], f"{spec.name} has no node {node!r}", node)
        for name in ("interrupt_before", "interrupt_after")
        if isinstance(getattr(body, name), list)
        for node in getattr(body, name)
        if node not in nodes
    ]


def _options(body: RunCreate) -> engine_services.RunOptions:
    modes = body.stream_mode or ["values"]
    return engine_services.RunOptions(
        interrupt_before=body.interrupt_before or (),
        interrupt_after=body.interrupt_after or (),
        metadata={**((body.config.metadata or {}) if body.config else {}), **(body.metadata or {})},
        webhook=checked_webhook(body.webhook),
        stream_modes=[modes] if isinstance(modes, str) else list(dict.fromkeys(modes)),
        multitask_strategy=body.multitask_strategy or "reject",
    )


# -- creating a run --------------------------------------------------------------------------


def create_run(request: HttpRequest, *, thread_id: str | None, body: RunCreate) -> Run:
    """The queued (or PENDING) run a body asks for on a thread (None: a stateless run, on a new
    thread): validated, access and permissions checked, through the services. Raises HttpError
    (403, 404, 409) or ValidationError (422) for anything refused, having written nothing."""
    problems = refusals(body, thread_id=thread_id)
    if problems:
        raise ValidationError(problems)
    user = request_user(request)
    spec = assistants.find(user, body.assistant_id)
    problems = _breakpoint_refusals(body, spec)
    if problems:
        raise ValidationError(problems)
    options = _options(body)
    via = key_data(request)
    resume = body.command.resume if body.command is not None else None
    if resume is None and body.input is None:
        raise ValidationError(
            [
                _problem(
                    ["input"],
                    "a run needs input (to start the thread, or give a completed one new input) "
                    "or command.resume (to answer its interrupt)",
                    None,
                )
            ]
        )
    if resume is not None:
        if thread_id is None:
            raise HttpError(404, "a stateless run has no interrupt to resume; resume a thread's run")
        thread = access.thread_or_404(request, thread_id)
        return _resume(request, thread, spec, body, options=options, via=via)
    access.require(request, "start")
    assert body.input is not None
    try:
        # Checked before a thread is made for it (stateless, if_not_exists="create"), so a bad
        # input leaves no empty thread behind; start_run checks it again under the lock.
        engine_services.checked_input(spec.name, body.input)
    except engine_services.InvalidState as exc:
        raise ValidationError([_problem(["input"], str(exc), body.input)]) from None
    thread = _thread_for_input(request, thread_id, body)
    try:
        return engine_services.start_run(
            thread=thread,
            workflow=spec.name,
            input=body.input,
            actor=user,
            options=options,
            data=via,
        )
    except (engine_services.ThreadBusy, engine_services.ThreadNotReady) as exc:
        raise HttpError(409, str(exc)) from None
    except engine_services.InvalidState as exc:
        raise ValidationError([_problem(["input"], str(exc), body.input)]) from None


def _thread_for_input(request: HttpRequest, thread_id: str | None, body: RunCreate) -> Thread:
    """The thread a run with input goes to: the visible one with this id; a new one for a
    stateless run, or for an unknown id with if_not_exists="create"; else a 404."""
    user = request_user(request)
    if thread_id is None:
        return engine_services.create_thread(thread_id=None, metadata={}, actor=user, data=key_data(request))
    try:
        return access.thread_or_404(request, thread_id)
    except HttpError:
        if body.if_not_exists != "create":
            raise
    try:
        public_id = uuid.UUID(thread_id)
    except ValueError:
        raise HttpError(404, f"Thread '{thread_id}' not found") from None
    if not Thread.objects.filter(public_id=public_id).exists():
        try:
            return engine_services.create_thread(
                thread_id=public_id, metadata={}, actor=user, data=key_data(request)
            )
        except engine_services.ThreadExists:
            pass  # made by a request at the same moment: visible to this key if it was its own
    return access.thread_or_404(request, thread_id)


def _resume(
    request: HttpRequest,
    thread: Thread,
    spec: registry.Workflow,
    body: RunCreate,
    *,
    options: engine_services.RunOptions,
    via: dict[str, Any],
) -> Run:
    """Decide the interrupts' open reviews with the answers in command.resume, as the key's user."""
    assert body.command is not None
    if thread.workflow != spec.name:
        raise HttpError(409, f"this thread runs the workflow {thread.workflow!r}, not {spec.name!r}")
    active = thread.runs.filter(status__in=ACTIVE_RUN_STATUSES).first()
    if active is not None and options.multitask_strategy != "enqueue":
        raise HttpError(
            409,
            f"run {active.public_id} is {active.status} on this thread; wait for it to finish, "
            'or send multitask_strategy="enqueue" to have the answer wait for its pause',
        )
    reviews = list(Review.objects.filter(thread=thread, status=Review.Status.OPEN).order_by("id"))
    if not reviews:
        raise HttpError(
            409, f"no interrupt of this thread is waiting for an answer (the thread is {thread.status})"
        )
    answers = _match(body.command.resume, reviews)
    edits = _edits(body.command.update)
    if edits and len(answers) > 1:
        raise ValidationError(
            [
                _problem(
                    ["command", "update"], "edits go with one answer; answer one interrupt at a time", edits
                )
            ]
        )
    try:
        # decide checks them again, under its locks; here each bad field gets its own 422 item.
        spec.validate_updates(edits)
    except registry.InvalidUpdate as exc:
        raise ValidationError(
            [_problem(["command", "update", name], why, edits.get(name)) for name, why in exc.errors.items()]
        ) from None
    pin = body.checkpoint_id or (body.checkpoint.checkpoint_id if body.checkpoint is not None else None)
    # Every answer is read before any is decided, so a bad one refuses them all.
    decisions = [(review, *_decision(review, value)) for review, value in answers]
    user = request_user(request)
    partial: list[tuple[Review, approvals.Quorum]] = []
    decided = 0
    for review, action, response, comment in decisions:
        try:
            outcome = approvals.decide(
                review=review,
                actor=user,
                action=action,
                checkpoint_id=pin or review.checkpoint_id,
                updates=edits,
                response=response,
                comment=comment,
                data=via,
                options=options,
            )
        except (approvals.InvalidDecision, engine_services.InvalidState) as exc:
            raise ValidationError([_problem(["command", "resume"], str(exc), body.command.resume)]) from None
        except approvals.DecisionRefused as exc:
            raise HttpError(409, str(exc)) from None
        if isinstance(outcome, Decision):
            decided += 1
        else:
            partial.append((review, approvals.quorum_of(review, spec=spec)))
    if partial and not decided:
        # No run was made: answering with the thread's last run would say the answer ran.
        raise ApprovalPending(thread, partial)
    latest = thread.runs.filter(status__in=ACTIVE_RUN_STATUSES).first() or thread.runs.order_by("-id").first()
    assert latest is not None
    return latest


class ApprovalPending(Exception):
    """A resume that was a partial approval (the workflow needs more approvers): recorded, the
    review still open, no run made. Answered 202 with `body` (api.main), not a run."""

    def __init__(self, thread: Thread, partial: list[tuple[Review, approvals.Quorum]]) -> None:
        first = partial[0][1]
        detail = (
            f"approval recorded ({first.progress}); {first.still_needed_text()} before the thread "
            "resumes, so no run was created"
        )
        super().__init__(detail)
        self.body = {
            "detail": detail,
            "thread_id": str(thread.public_id),
            "run_id": None,
            "status": "awaiting_approvals",
            "approvals": [
                {
                    "interrupt_id": review.interrupt_id,
                    "given": quorum.given,
                    "needed": quorum.needed,
                    "approved_by": [approval.actor.get_username() for approval in quorum.counting],
                    "missing_groups": list(quorum.missing_groups),
                }
                for review, quorum in partial
            ],
        }


def _match(resume: Any, reviews: list[Review]) -> list[tuple[Review, Any]]:
    """The answer for each review: by interrupt id (a map whose keys are pending interrupts'
    ids), or one value for the one pending interrupt."""
    by_id = {review.interrupt_id: review for review in reviews}
    if isinstance(resume, Mapping) and resume and any(key in by_id for key in resume):
        unknown = [key for key in resume if key not in by_id]
        if unknown:
            raise ValidationError(
                [
                    _problem(
                        ["command", "resume"], f"no pending interrupt has the id {', '.join(unknown)}", resume
                    )
                ]
            )
        return [(by_id[key], value) for key, value in resume.items()]
    if len(reviews) == 1:
        return [(reviews[0], resume)]
    raise ValidationError(
        [
            _problem(
                ["command", "resume"],
                f"{len(reviews)} interrupts are waiting ({', '.join(by_id)}); "
                "send command.resume as a map of answers by interrupt id",
                resume,
            )
        ]
    )


def _edits(update: Any) -> dict[str, Any]:
    if update is None:
        return {}
    return dict(update) if not isinstance(update, dict) else update


def _decision(review: Review, value: Any) -> tuple[str, Any, str]:
    """(action, response, comment) for decide: the answer read the way the reviewer's form
    reads its fields. Agent Inbox's [HumanResponse] for its interrupts; for the others an
    action's name, or {"action", "response", "comment"} (what the graph's interrupt() gets)."""
    allowed = approvals.allowed_actions(review)
    if review.kind == Review.Kind.AGENT_INBOX:
        items = value if isinstance(value, list) else [value]
        kind = items[0].get("type") if len(items) == 1 and isinstance(items[0], dict) else None
        if kind not in HUMAN_RESPONSE:
            raise ValidationError(
                [
                    _problem(
                        ["command", "resume"],
                        f"the interrupt {review.interrupt_id} takes [HumanResponse]: "
                        '[{"type": "accept" | "edit" | "response" | "ignore", "args": ...}]',
                        value,
                    )
                ]
            )
        args = items[0].get("args")
        action = HUMAN_RESPONSE[kind]
        if action == Decision.Action.EDIT:
            # HumanResponse edit args are an ActionRequest {action, args}; the form takes the args.
            return action, args.get("args") if isinstance(args, dict) and "args" in args else args, ""
        return action, args if action == Decision.Action.RESPOND else None, ""
    if isinstance(value, str):
        return value, None, ""
    if (
        isinstance(value, Mapping)
        and isinstance(value.get("action"), str)
        and set(value)
        <= {
            "action",
            "response",
            "comment",
        }
    ):
        comment = value.get("comment") or ""
        if not isinstance(comment, str):
            raise ValidationError([_problem(["command", "resume", "comment"], "a comment is text", comment)])
        return value["action"], value.get("response"), comment
    raise ValidationError(
        [
            _problem(
                ["command", "resume"],
                f"the interrupt {review.interrupt_id} at {review.node} takes an action "
                f"({', '.join(allowed)}) or "
                '{"action": ..., "response": ..., "comment": ...}',
                value,
            )
        ]
    )


# -- what a finished run returns ---------------------------------------------------------------


def final_values(run: Run) -> dict[str, Any]:
    """What /wait and /join answer (`run` read fresh, with its thread): the thread's values at
    its head, with `__interrupt__` (the pending interrupts, breakpoints too, as {value, id})
    when the run stopped at a pause and `__error__` ({error, message}, which langgraph_sdk
    raises) when it failed."""
    thread = run.thread
    if not thread.workflow:
        return {}
    head = engine.head(thread.workflow, thread.thread_id)
    values = convert.jsonable(head.values)
    out: dict[str, Any] = dict(values) if isinstance(values, dict) else {}
    if run.status == Run.Status.FAILED:
        out["__error__"] = convert.error_json(run.error)
    elif run.status == Run.Status.INTERRUPTED and thread.status == Thread.Status.INTERRUPTED:
        out["__interrupt__"] = [
            {"value": convert.jsonable(pending.value), "id": pending.id}
            for pending in engine.pending_interrupts(
                thread.workflow, head, engine.breakpoints_for(thread.workflow, run.command)
            )
        ]
    return out


def locate(response: HttpResponseBase, run: Run, *, join: bool = False) -> None:
    """The headers that say where a created run is (the stream endpoint sets them too)."""
    thread = run.thread
    # langgraph_sdk reads the run's and thread's ids from Content-Location; Location (on
    # /wait) is where runs.wait reconnects to should the answer be cut off (relative: the SDK
    # resolves it against its base URL, /api).
    response["Content-Location"] = f"/threads/{thread.thread_id}/runs/{run.public_id}"
    if join:
        response["Location"] = f"/threads/{thread.thread_id}/runs/{run.public_id}/join"


def _answer_when_ended(run: Run, *, join: bool = True) -> StreamingHttpResponse:
    """/wait's and /join's answer: `final_values` once the run has ended, awaited on the event
    loop (api.waiting), so this view's thread and connection are free meanwhile."""
    response = StreamingHttpResponse(
        waiting.final_body(run, settings.SIGNOFF_API_WAIT_SECONDS, final_values),
        content_type="application/json",
    )
    response["Cache-Control"] = "no-store"
    locate(response, run, join=join)
    streaming.release_connection()
    return response


# -- endpoints ---------------------------------------------------------------------------------
# A run id in a path is a UUID (Django's uuid converter), so /runs/wait and /runs/stream never
# pass for one, whichever router serves them and in whichever order.


@router.post("/threads/{thread_id}/runs/wait", response={200: dict[str, Any], **ERRORS})
def wait(request: HttpRequest, thread_id: str, payload: RunCreate) -> StreamingHttpResponse:
    """Create a run and block until it ends: the thread's values, with `__interrupt__` at a
    pause and `__error__` on failure."""
    refuse_unknown_query(request)
    return _answer_when_ended(create_run(request, thread_id=thread_id, body=payload))


@router.post("/threads/{thread_id}/runs/stream", response={200: None, **ERRORS})
def stream(request: HttpRequest, thread_id: str, payload: RunCreate) -> StreamingHttpResponse:
    """Create a run and stream its events as server-sent events (docs/api.md, Streaming), in the
    modes of `stream_mode`: `metadata` first, `end` (or `error`) last."""
    refuse_unknown_query(request)
    run = create_run(request, thread_id=thread_id, body=payload)
    return streaming.stream_response(request, run, list(run.stream_modes), last_event_id=None)


@router.post("/threads/{thread_id}/runs", response={200: RunSchema, **ERRORS})
def create(
    request: HttpRequest, response: HttpResponse, thread_id: str, payload: RunCreate
) -> dict[str, Any]:
    """Create a run in the background: the queued run (pending while it waits its turn)."""
    refuse_unknown_query(request)
    run = create_run(request, thread_id=thread_id, body=payload)
    locate(response, run)
    return convert.run_json(run, thread=run.thread)


@router.get("/threads/{thread_id}/runs", response={200: list[dict[str, Any]], **ERRORS})
def list_runs(
    request: HttpRequest,
    thread_id: str,
    limit: int = 10,
    offset: int = 0,
    status: convert.RunStatus | None = None,
) -> list[dict[str, Any]]:
    """The thread's runs, newest first; `select` (repeated) names the fields to return."""
    refuse_unknown_query(request, "limit", "offset", "status", "select")
    select = request.GET.getlist("select") or None
    problems: list[dict[str, Any]] = [
        {"type": "literal_error", "loc": ["query", "select"], "msg": "no such run field", "input": name}
        for name in select or ()
        if name not in RUN_FIELDS
    ]
    if not 1 <= limit <= 1000:
        problems.append({"type": "range", "loc": ["query", "limit"], "msg": "from 1 to 1000", "input": limit})
    if offset < 0:
        problems.append({"type": "range", "loc": ["query", "offset"], "msg": "0 or more", "input": offset})
    if problems:
        raise ValidationError(problems)
    thread = access.thread_or_404(request, thread_id)
    runs = thread.runs.order_by("-id")
    if status is not None:
        ours = [name for name, theirs in convert.RUN_STATUS.items() if theirs == status]
        runs = runs.filter(status__in=ours)
    page = runs[offset : offset + limit]
    return [convert.only(select, convert.run_json(run, thread=thread)) for run in page]


@router.get("/threads/{thread_id}/runs/{uuid:run_id}", response={200: RunSchema, **ERRORS})
def get(request: HttpRequest, thread_id: str, run_id: uuid.UUID) -> dict[str, Any]:
    refuse_unknown_query(request)
    thread, run = access.run_or_404(request, thread_id, run_id)
    return convert.run_json(run, thread=thread)


@router.get("/threads/{thread_id}/runs/{uuid:run_id}/join", response={200: dict[str, Any], **ERRORS})
def join(request: HttpRequest, thread_id: str, run_id: uuid.UUID) -> StreamingHttpResponse:
    """Block until the run ends: the thread's values, as /wait answers."""
    refuse_unknown_query(request)
    _, run = access.run_or_404(request, thread_id, run_id)
    return _answer_when_ended(run, join=False)


@router.post("/threads/{thread_id}/runs/{uuid:run_id}/cancel", response={204: None, **ERRORS})
def cancel(
    request: HttpRequest, thread_id: str, run_id: uuid.UUID, wait: bool = False, action: str = "interrupt"
) -> Status[None]:
    """Cancel the run: an active run stops the thread for good (its lease is taken, so the
    worker writes nothing more), a run waiting its turn is dropped. The run has ended when this
    answers, in the cancel's own transaction, so `wait=1` asks for nothing more."""
    refuse_unknown_query(request, "wait", "action")
    if action != "interrupt":
        why = (
            "Signoff deletes no run or checkpoint; cancel with action=interrupt, then roll the thread back "
            "to an earlier checkpoint in the admin"
            if action == "rollback"
            else 'the action is "interrupt"'
        )
        raise ValidationError(
            [{"type": "not_implemented", "loc": ["query", "action"], "msg": why, "input": action}]
        )
    thread, run = access.run_or_404(request, thread_id, run_id)
    access.require(request, "cancel")
    user: User = request_user(request)
    via = key_data(request)
    try:
        if run.status == Run.Status.PENDING:
            engine_services.cancel_pending_run(run=run, actor=user, data=via)
        elif run.status in ACTIVE_RUN_STATUSES:
            engine_services.cancel_thread(
                thread=thread, actor=user, reason="cancelled through the API", data=via
            )
        else:
            raise HttpError(
                409, f"run {run.public_id} has ended ({convert.run_status(run)}); there is nothing to cancel"
            )
    except (engine_services.InvalidState, engine_services.ThreadNotReady) as exc:
        raise HttpError(409, str(exc)) from None
    return Status(204, None)


@router.post("/runs/wait", response={200: dict[str, Any], **ERRORS})
def wait_stateless(request: HttpRequest, payload: RunCreate) -> StreamingHttpResponse:
    """A run on a new thread (kept: Signoff deletes none), until it ends."""
    refuse_unknown_query(request)
    return _answer_when_ended(create_run(request, thread_id=None, body=payload))


@router.post("/runs/stream", response={200: None, **ERRORS})
def stream_stateless(request: HttpRequest, payload: RunCreate) -> StreamingHttpResponse:
    """A run on a new thread, its events streamed as /threads/{thread_id}/runs/stream does."""
    refuse_unknown_query(request)
    run = create_run(request, thread_id=None, body=payload)
    return streaming.stream_response(request, run, list(run.stream_modes), last_event_id=None)


@router.post("/runs", response={200: RunSchema, **ERRORS})
def create_stateless(request: HttpRequest, response: HttpResponse, payload: RunCreate) -> dict[str, Any]:
    """A run on a new thread, in the background."""
    refuse_unknown_query(request)
    run = create_run(request, thread_id=None, body=payload)
    locate(response, run)
    return convert.run_json(run, thread=run.thread)
