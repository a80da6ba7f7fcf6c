"""The admin shows the engine's history (checkpoints, threads, runs, audit) and offers no way to edit it."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from tests.graphs import config_for, make_log_graph
from workflows.checkpointer import DjangoSaver
from workflows.models import Checkpoint

pytestmark = pytest.mark.django_db(transaction=True)


def make_admin() -> User:
    return User.objects.create_superuser("admin", "admin@example.com", "password")


def make_thread_with_checkpoints() -> str:
    thread_id = str(uuid.uuid4())
    make_log_graph(DjangoSaver(), Counter()).invoke({"log": []}, config_for(thread_id), durability="sync")
    return thread_id


def test_admin_lists_and_shows_checkpoints(client: Client):
    thread_id = make_thread_with_checkpoints()
    client.force_login(make_admin())
    checkpoint = Checkpoint.objects.filter(thread_id=thread_id).latest("checkpoint_id")

    listing = client.get(reverse("admin:workflows_checkpoint_changelist"), {"q": thread_id})
    detail = client.get(reverse("admin:workflows_checkpoint_change", args=[checkpoint.pk]))

    assert listing.status_code == 200
    assert listing.content.count(thread_id.encode()) >= 5
    assert detail.status_code == 200
    assert checkpoint.checkpoint_id in detail.content.decode()


def test_admin_cannot_add_change_or_delete_checkpoints(client: Client):
    thread_id = make_thread_with_checkpoints()
    client.force_login(make_admin())
    checkpoint = Checkpoint.objects.filter(thread_id=thread_id).latest("checkpoint_id")

    add = client.get(reverse("admin:workflows_checkpoint_add"))
    change = client.post(
        reverse("admin:workflows_checkpoint_change", args=[checkpoint.pk]), {"thread_id": "x"}
    )
    delete = client.post(reverse("admin:workflows_checkpoint_delete", args=[checkpoint.pk]), {"post": "yes"})

    assert add.status_code == 403
    assert change.status_code == 403
    assert delete.status_code == 403
    assert Checkpoint.objects.filter(pk=checkpoint.pk, thread_id=thread_id).exists()


def test_the_root_url_leads_to_the_admin(client: Client):
    response = client.get("/")

    assert response.status_code == 302
    assert response["Location"] == "/admin/"


def test_admin_shows_threads_with_their_runs_and_audit_events_read_only(client: Client):
    from workflows import services
    from workflows.execution import execute_run
    from workflows.models import AuditEvent, Thread

    admin = make_admin()
    thread = services.start_thread(
        workflow="expense_approval",
        input={"employee": "Ann", "description": "train", "amount": 12.5, "category": "travel"},
        actor=admin,
        title="Ann's train ticket",
    )
    execute_run(thread.runs.get().pk)
    client.force_login(admin)
    event = AuditEvent.objects.filter(thread=thread).last()
    assert event is not None

    threads = client.get(reverse("admin:workflows_thread_changelist"), {"status": "interrupted"})
    detail = client.get(reverse("admin:workflows_thread_change", args=[thread.pk]))
    events = client.get(reverse("admin:workflows_auditevent_changelist"))
    change_event = client.post(reverse("admin:workflows_auditevent_change", args=[event.pk]), {"action": "x"})
    delete_event = client.post(reverse("admin:workflows_auditevent_delete", args=[event.pk]), {"post": "yes"})
    delete_thread = client.post(reverse("admin:workflows_thread_delete", args=[thread.pk]), {"post": "yes"})

    assert threads.status_code == 200
    assert "Ann&#x27;s train ticket" in threads.content.decode()
    assert detail.status_code == 200
    assert "Interrupted" in detail.content.decode()
    assert events.status_code == 200
    assert "run.interrupted" in events.content.decode()
    assert (change_event.status_code, delete_event.status_code, delete_thread.status_code) == (403, 403, 403)
    assert Thread.objects.filter(pk=thread.pk).exists()
    assert AuditEvent.objects.get(pk=event.pk).action == event.action
