"""The engine's tables: threads, their runs and audit trail, and LangGraph's checkpoints.

`Thread`, `Run` and `AuditEvent` are written only by `workflows.services`. The three
checkpoint tables mirror LangGraph's official savers (checkpoints, channel blobs,
pending writes) so that a checkpoint stores only the channels that changed in its
step; they are written and read by `workflows.checkpointer.DjangoSaver` alone.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.db.models.functions import Now

from workflows.sealed import SealedJSONField, SealedTextField
from workflows.timings import WriteTimings


def error_summary(error: str) -> str:
    """For a traceback, the exception and its message: its last line, less the notes
    LangGraph appends after it ("During task with name …", "For troubleshooting, …")."""
    notes = ("During task with name", "For troubleshooting")
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    while len(lines) > 1 and lines[-1].startswith(notes):
        lines.pop()
    return lines[-1] if lines else ""


class Thread(models.Model):
    """One execution history of a workflow; `public_id` is LangGraph's thread_id."""

    class Status(models.TextChoices):
        # Created through the HTTP API (POST /api/threads) and never run: no workflow yet.
        NEW = "new"
        QUEUED = "queued"
        RUNNING = "running"
        INTERRUPTED = "interrupted"
        COMPLETED = "completed"
        FAILED = "failed"
        CANCELLED = "cancelled"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # Blank only while the thread is NEW: its first run names the workflow.
    workflow = models.CharField(max_length=100, db_index=True, blank=True)
    title = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=20, choices=Status, default=Status.QUEUED)
    # Sealed (encrypted) with SIGNOFF_ENCRYPTION_KEY set, like everything a thread carries
    # but its title: see workflows/sealed.py.
    input = SealedJSONField(default=dict, blank=True)
    # The latest failure, for staff; cleared when the thread runs again. A traceback quotes
    # state values, so it is sealed too.
    error = SealedTextField(blank=True)
    # LangGraph's thread metadata, set by API clients (graph_id, assistant_id and their own
    # keys) and searched by containment, so it is stored plain: labels, never state.
    metadata = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            models.Index(fields=["status", "-updated_at"], name="thread_status_updated"),
            # The threads page's order, newest state change first, walked by keyset.
            models.Index(fields=["-updated_at", "-id"], name="thread_updated"),
        ]
        # Operations beyond viewing, granted one by one: each runs a service that writes.
        permissions = [
            ("start_thread", "Can start a thread (through the HTTP API)"),
            ("rollback_thread", "Can roll a thread back to an earlier checkpoint"),
            ("retry_thread", "Can retry a failed thread"),
            ("cancel_thread", "Can cancel a thread"),
        ]

    def __str__(self) -> str:
        return self.title or f"{self.workflow} {self.public_id}"

    @property
    def error_summary(self) -> str:
        return error_summary(self.error)

    @property
    def thread_id(self) -> str:
        return str(self.public_id)


ACTIVE_RUN_STATUSES = ("queued", "running")


class Run(models.Model):
    """One attempt to advance a thread. A Celery message only delivers it: the row is the truth."""

    class Kind(models.TextChoices):
        START = "start"
        RESUME = "resume"
        RETRY = "retry"
        ROLLBACK = "rollback"

    class Status(models.TextChoices):
        # Waiting behind the thread's active run (multitask_strategy="enqueue"); becomes
        # QUEUED when that run ends.
        PENDING = "pending"
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        INTERRUPTED = "interrupted"
        FAILED = "failed"
        CANCELLED = "cancelled"

    thread = models.ForeignKey(Thread, on_delete=models.CASCADE, related_name="runs")
    # LangGraph's run_id, which the HTTP API names runs by.
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    kind = models.CharField(max_length=20, choices=Kind)
    status = models.CharField(max_length=20, choices=Status, default=Status.QUEUED)
    # What to invoke the graph with: {"input": ...} for a start; for answers to dynamic
    # interrupts {"resume": {interrupt_id: value}}, with the edits given with them as
    # "update" (JSON, loaded into the schema's types); {"proceed": true} to pass a static
    # breakpoint; {} to continue from the head checkpoint.
    command = SealedJSONField(default=dict, blank=True)
    # The head checkpoint when the run was queued: progress past it was made by this run.
    from_checkpoint_id = models.CharField(max_length=64, blank=True)
    # The current holder's fencing token; every checkpoint write must present it.
    lease_token = models.UUIDField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # Which worker holds the lease (host:pid), so a redelivery on the same host can tell
    # that the holder is dead without waiting for the lease to run out.
    lease_holder = models.CharField(max_length=200, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    error = SealedTextField(blank=True)
    # What an API client gave with the run: its metadata, the URL to POST to when it ends,
    # and the stream modes the worker publishes while it runs (none for runs started in the
    # browser, which nobody streams).
    metadata = models.JSONField(default=dict, blank=True)
    webhook = models.URLField(max_length=2000, blank=True)
    stream_modes = models.JSONField(default=list, blank=True)
    # What the API client asked for should another run be active (reject or enqueue).
    multitask_strategy = models.CharField(max_length=20, default="reject")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # When the last Celery message for this run was published (the sweeper republishes).
    enqueued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # How long this run's checkpoint writes took in its workers (workflows.timings).
    checkpoint_writes = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["thread"],
                condition=models.Q(status__in=ACTIVE_RUN_STATUSES),
                name="run_one_active_per_thread",
                violation_error_message="This thread already has an active run.",
            )
        ]
        indexes = [
            models.Index(
                fields=["status", "lease_expires_at"],
                name="run_active",
                condition=models.Q(status__in=ACTIVE_RUN_STATUSES),
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} run {self.pk} of {self.thread_id}"

    # -- state transitions --------------------------------------------------------------------
    # The only places a run's status and lease change. Each sets the fields and returns their
    # names for save(update_fields=...): the caller saves, inside the transaction that holds
    # the thread's and the run's locks (workflows.services.lock_thread).

    def claim(self, *, token: uuid.UUID, holder: str, now: datetime, lease_seconds: float) -> list[str]:
        """A worker takes the run: a fresh lease (fencing token, expiry, holder), one more attempt."""
        self.status = self.Status.RUNNING
        self.lease_token = token
        self.lease_expires_at = now + timedelta(seconds=lease_seconds)
        self.lease_holder = holder
        self.attempts += 1
        self.started_at = self.started_at or now
        return ["status", "lease_token", "lease_expires_at", "lease_holder", "attempts", "started_at"]

    def requeue(self, *, now: datetime, error: str | None = None) -> list[str]:
        """Back to the queue, holding no lease, for a new message (a released run, a lease that
        ran out, a message gone missing); `error` says why, if given."""
        self.status = self.Status.QUEUED
        self.lease_token = None
        self.lease_expires_at = None
        self.enqueued_at = now
        fields = ["status", "lease_token", "lease_expires_at", "enqueued_at"]
        if error is not None:
            self.error = error
            fields.append("error")
        return fields

    def close(self, status: str, *, now: datetime, error: str = "") -> list[str]:
        """The run is over (succeeded, interrupted, failed, cancelled): its lease is gone, so a
        worker still running it can write nothing more."""
        self.status = status
        self.error = error
        self.lease_token = None
        self.lease_expires_at = None
        self.finished_at = now
        return ["status", "error", "lease_token", "lease_expires_at", "finished_at"]

    def count_writes(self, timed: WriteTimings | None) -> list[str]:
        """Add a delivery's timed checkpoint writes to the run's tally."""
        if timed is None or not timed.count:
            return []
        total = WriteTimings.from_json(self.checkpoint_writes)
        total.add(timed)
        self.checkpoint_writes = total.as_json()
        return ["checkpoint_writes"]

    def gave_up_error(self) -> str:
        """Why a run that used up its attempts fails (the claim and the sweeper both give up)."""
        return (
            f"gave up after {self.attempts} attempts: the worker running it died or lost its lease each time"
        )


class AuditEvent(models.Model):
    """An append-only record of one state change, chained to the previous one by hash.

    Written in the same transaction as the change it records. On PostgreSQL a
    trigger refuses UPDATE, DELETE and TRUNCATE; `verify_audit` walks the chain
    (HMAC-keyed) and compares it with the head staff keep.
    """

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # Who, as text, so the record outlives renames: a username or "system:worker".
    actor_label = models.CharField(max_length=150)
    action = models.CharField(max_length=50, db_index=True)
    thread = models.ForeignKey(
        Thread, null=True, blank=True, on_delete=models.PROTECT, related_name="audit_events"
    )
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    # Sealed with a key set. Hashed as plaintext, so the chain verifies whatever the storage;
    # rows from before the key was set stay plaintext (they cannot be rewritten) and are read
    # as stored, the chain vouching for them.
    data = SealedJSONField(default=dict, blank=True, plaintext_ok=True)
    created_at = models.DateTimeField()
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)
    # How `hash` was made: "hmac-sha256" (keyed, SIGNOFF_AUDIT_KEY) or "sha256" for events
    # written before the chain was keyed; see workflows.audit.
    scheme = models.CharField(max_length=16, editable=False)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["thread", "id"], name="audit_thread"),
            # The audit trail page filters by date range and by actor, newest first.
            models.Index(fields=["created_at"], name="audit_created"),
            models.Index(fields=["actor_label", "id"], name="audit_actor"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_label} {self.action}"


class Checkpoint(models.Model):
    """LangGraph's snapshot after one step of one thread (in one namespace)."""

    thread_id = models.CharField(max_length=255)
    checkpoint_ns = models.CharField(max_length=255, default="", blank=True)
    checkpoint_id = models.CharField(max_length=64)
    parent_checkpoint_id = models.CharField(max_length=64, null=True, blank=True)
    # Everything of the checkpoint but its channel values: format version, time,
    # channel_versions, versions_seen, updated_channels. Versions are no state.
    checkpoint = models.JSONField()
    # Small scalar channel values, serialized (and encrypted with a key set) as one
    # value, so a string flag does not cost a blob row per step.
    values_type = models.CharField(max_length=32)
    values = models.BinaryField()
    metadata = models.JSONField(default=dict)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["thread_id", "checkpoint_ns", "checkpoint_id"],
                name="checkpoint_unique_id",
            )
        ]

    def __str__(self) -> str:
        return f"{self.thread_id}/{self.checkpoint_ns or '-'}/{self.checkpoint_id}"


class CheckpointBlob(models.Model):
    """One version of one channel's value, shared by every checkpoint that points at it.

    A list that grew by appending is stored as the appended items only (a delta)
    with `base_version` naming the version it extends and `root_version` the full
    copy its chain starts from; readers concatenate the chain.
    """

    thread_id = models.CharField(max_length=255)
    checkpoint_ns = models.CharField(max_length=255, default="", blank=True)
    channel = models.CharField(max_length=255)
    version = models.CharField(max_length=64)
    type = models.CharField(max_length=32)
    blob = models.BinaryField(null=True)
    base_version = models.CharField(max_length=64, null=True, blank=True)
    root_version = models.CharField(max_length=64, null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["thread_id", "checkpoint_ns", "channel", "version"],
                name="checkpointblob_unique_version",
            )
        ]
        indexes = [
            # Only delta rows are looked up by their chain's root; full copies (most
            # rows) need not pay for this index on every insert.
            models.Index(
                fields=["thread_id", "checkpoint_ns", "channel", "root_version"],
                name="checkpointblob_chain",
                condition=models.Q(root_version__isnull=False),
            )
        ]

    def __str__(self) -> str:
        return f"{self.thread_id}/{self.channel}@{self.version}"


class CheckpointWrite(models.Model):
    """A pending write of one task, saved before its step's checkpoint exists."""

    thread_id = models.CharField(max_length=255)
    checkpoint_ns = models.CharField(max_length=255, default="", blank=True)
    checkpoint_id = models.CharField(max_length=64)
    task_id = models.CharField(max_length=64)
    task_path = models.TextField(default="", blank=True)
    idx = models.IntegerField()
    channel = models.CharField(max_length=255)
    type = models.CharField(max_length=32)
    blob = models.BinaryField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["thread_id", "checkpoint_ns", "checkpoint_id", "task_id", "idx"],
                name="checkpointwrite_unique_idx",
            )
        ]

    def __str__(self) -> str:
        return f"{self.thread_id}/{self.checkpoint_id}/{self.task_id}:{self.idx}"
