"""Deleting, copying and pruning threads' checkpoints, and collecting the blob rows no
checkpoint needs any more (keeping every delta chain a kept checkpoint reads whole).

Through the ORM: these are rare, and each runs in one transaction on the caller's
connection (joining the caller's transaction if there is one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import models, transaction

from workflows.checkpointer import list_deltas
from workflows.checkpointer.connections import watch_connection
from workflows.models import Checkpoint, CheckpointBlob, CheckpointWrite

_TABLES = (CheckpointWrite, CheckpointBlob, Checkpoint)
_CHUNK = 500


def rows(using: str, model: type[models.Model]) -> models.QuerySet[Any]:
    watch_connection(using)
    return model._default_manager.using(using).all()


def atomic(using: str) -> transaction.Atomic:
    watch_connection(using)
    # No savepoint: a failed write must fail the caller's transaction too.
    return transaction.atomic(using=using, savepoint=False)


def delete_threads(using: str, thread_ids: Sequence[str]) -> None:
    with atomic(using):
        for model in _TABLES:
            rows(using, model).filter(thread_id__in=thread_ids).delete()


def delete_for_runs(using: str, run_ids: Sequence[str]) -> None:
    with atomic(using):
        doomed = list(
            rows(using, Checkpoint)
            .filter(metadata__run_id__in=run_ids)
            .values_list("id", "thread_id", "checkpoint_ns", "checkpoint_id")
        )
        if not doomed:
            return
        writes = models.Q()
        for _, thread_id, ns, checkpoint_id in doomed:
            writes |= models.Q(thread_id=thread_id, checkpoint_ns=ns, checkpoint_id=checkpoint_id)
        rows(using, CheckpointWrite).filter(writes).delete()
        rows(using, Checkpoint).filter(id__in=[row[0] for row in doomed]).delete()
        collect_blobs(using, {row[1] for row in doomed})


def copy_thread(using: str, source: str, target: str) -> None:
    with atomic(using):
        for model in (Checkpoint, CheckpointBlob, CheckpointWrite):
            copies = []
            for row in rows(using, model).filter(thread_id=source).iterator(chunk_size=_CHUNK):
                row.pk = None
                row.thread_id = target
                copies.append(row)
                if len(copies) >= _CHUNK:
                    rows(using, model).bulk_create(copies, ignore_conflicts=True)
                    copies = []
            if copies:
                rows(using, model).bulk_create(copies, ignore_conflicts=True)


def keep_latest(using: str, thread_ids: Sequence[str]) -> None:
    """Keep each namespace's latest checkpoint of these threads, and what it reads."""
    with atomic(using):
        for thread_id in thread_ids:
            _keep_latest(using, thread_id)


def _keep_latest(using: str, thread_id: str) -> None:
    checkpoints = rows(using, Checkpoint).filter(thread_id=thread_id)
    latest: dict[str, str] = {}
    for ns, checkpoint_id in checkpoints.values_list("checkpoint_ns", "checkpoint_id"):
        if checkpoint_id > latest.get(ns, ""):
            latest[ns] = checkpoint_id
    if not latest:
        return
    keep = models.Q()
    for ns, checkpoint_id in latest.items():
        keep |= models.Q(checkpoint_ns=ns, checkpoint_id=checkpoint_id)
    checkpoints.exclude(keep).delete()
    rows(using, CheckpointWrite).filter(thread_id=thread_id).exclude(keep).delete()
    # The kept checkpoints' parents are gone; say so rather than dangle.
    checkpoints.update(parent_checkpoint_id=None)
    collect_blobs(using, {thread_id})


def collect_blobs(using: str, thread_ids: set[str]) -> None:
    """Delete blob rows no checkpoint of these threads needs, keeping delta chains whole."""
    for thread_id in thread_ids:
        needed = {
            (ns, channel, str(version))
            for ns, doc in rows(using, Checkpoint)
            .filter(thread_id=thread_id)
            .values_list("checkpoint_ns", "checkpoint")
            for channel, version in doc["channel_versions"].items()
        }
        stored = {
            (ns, channel, version): (pk, base)
            for pk, ns, channel, version, base in rows(using, CheckpointBlob)
            .filter(thread_id=thread_id)
            .values_list("id", "checkpoint_ns", "channel", "version", "base_version")
        }
        bases = {
            key: (key[0], key[1], base) if base is not None else None for key, (_, base) in stored.items()
        }
        keep = list_deltas.needed_versions(needed, bases)
        orphans = [pk for key, (pk, _) in stored.items() if key not in keep]
        for start in range(0, len(orphans), _CHUNK):
            rows(using, CheckpointBlob).filter(id__in=orphans[start : start + _CHUNK]).delete()
