"""The admin shows the engine's history (checkpoints, threads, runs, audit) and offers no way to edit it."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from tests.fake_workflows import config_for, make_log_graph
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


def test_the_root_url_is_the_queue_behind_a_login(client: Client):
    response = client.get("/")

    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/"
