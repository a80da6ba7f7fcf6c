"""`manage.py seed_demo_threads`: a few threads of each demo workflow for `make run`, in DEBUG only.

Seeds only an empty database, so running it on every `make run` does not pile threads up.
The worker `make run` starts takes them to their first pause (seed_demo to its failure).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from workflows import services
from workflows.models import Thread

# (workflow, title, input)
DEMO_THREADS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "expense_approval",
        "Expense: Ada Lovelace, train to Manchester",
        {
            "employee": "Ada Lovelace",
            "description": "Return train to Manchester",
            "amount": 86.4,
            "category": "travel",
        },
    ),
    (
        "expense_approval",
        "Expense: Grace Hopper, team lunch",
        {
            "employee": "Grace Hopper",
            "description": "Lunch with the compiler team",
            "amount": 212.75,
            "category": "meals",
        },
    ),
    (
        "expense_approval",
        "Expense: Alan Turing, laptop",
        {
            "employee": "Alan Turing",
            "description": "Replacement laptop",
            "amount": 1899.0,
            "category": "equipment",
        },
    ),
    (
        "content_review",
        "Post: release notes for 2.0",
        {"topic": "release notes for 2.0", "audience": "customers"},
    ),
    (
        "content_review",
        "Post: how we review expenses",
        {"topic": "how we review expenses", "audience": "new staff"},
    ),
    (
        "parallel_approval",
        "Contract: Acme Ltd support renewal",
        {"counterparty": "Acme Ltd", "value": 48000.0, "signoffs": []},
    ),
    (
        "purchase_order",
        "Order: 12 monitors from Northwind",
        {"supplier": "Northwind", "item": "12 monitors", "amount": 3480.0},
    ),
    (
        "seed_demo",
        "Seed demo: fails at step 3, retry it",
        {"count": 0},
    ),
]


class Command(BaseCommand):
    help = "Start demo threads of each example workflow if there are no threads yet; refused unless DEBUG."

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError("refusing to seed demo threads with DJANGO_DEBUG off")
        existing = Thread.objects.count()
        if existing:
            self.stdout.write(f"demo threads: none seeded, the database already has {existing} thread(s)")
            return
        for workflow, title, data in DEMO_THREADS:
            thread = services.start_thread(workflow=workflow, input=data, actor=None, title=title)
            self.stdout.write(f"demo thread: {thread.public_id} {workflow}: {title}")
