"""Checkpoint storage for LangGraph, in the app's own database.

The three tables mirror LangGraph's official savers (checkpoints, channel blobs,
pending writes) so that a checkpoint stores only the channels that changed in its
step. Rows are written and read by `workflows.checkpointer.DjangoSaver`; nothing
else writes them.
"""

from __future__ import annotations

from django.db import models
from django.db.models.functions import Now


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
