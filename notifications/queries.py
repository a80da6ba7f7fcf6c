"""Reads for notifications: whose group a review is in, who hears of it, and who may see what."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.contrib.auth.models import User
from django.db.models import Q, QuerySet
from django.utils import timezone

from approvals import queries as approvals_queries
from approvals import services as approvals_services
from approvals.models import Review
from notifications.models import Preference
from workflows import registry

Delivery = Preference.Delivery


def may_see(user: User, review: Review) -> bool:
    """Whether `user` may see `review`'s state now: the one rule of the review pages
    (`approvals.services.may_review`: an active superuser, or a member of the group the review
    is with). Asked when each email is written, not when it was queued, so a group the review
    was escalated away from, or a member who left, gets no values."""
    return approvals_services.may_review(user, review)


def group_members(name: str) -> QuerySet[User]:
    """The active members of group `name` who have an email address."""
    if not name:
        return User.objects.none()
    return User.objects.filter(is_active=True, groups__name=name).exclude(email="").distinct().order_by("pk")


def deliveries(users: Iterable[User], workflow: str) -> dict[int, str]:
    """Each user's choice for `workflow` (immediately without a row)."""
    ids = [user.pk for user in users]
    chosen = dict(
        Preference.objects.filter(user_id__in=ids, workflow=workflow).values_list("user_id", "delivery")
    )
    return {pk: chosen.get(pk, Delivery.IMMEDIATELY) for pk in ids}


def told_now(users: Iterable[User], workflow: str) -> list[User]:
    """Of `users`, the active ones with an email address who want `workflow`'s news at once."""
    candidates = [user for user in users if user.is_active and user.email]
    chosen = deliveries(candidates, workflow)
    return [user for user in candidates if chosen[user.pk] == Delivery.IMMEDIATELY]


def reviewed_workflows(user: User) -> list[registry.Workflow]:
    """The registered workflows `user` reviews, for the settings page (all for a superuser)."""
    names = approvals_queries.reviewable_workflows(user)
    return [spec for spec in registry.all_workflows() if names is None or spec.name in names]


def preferences(user: User) -> dict[str, str]:
    """The user's choice for each workflow they review."""
    chosen = dict(Preference.objects.filter(user=user).values_list("workflow", "delivery"))
    return {spec.name: chosen.get(spec.name, Delivery.IMMEDIATELY) for spec in reviewed_workflows(user)}


def digest_users() -> QuerySet[User]:
    """Active users with an email address who chose the digest for at least one workflow."""
    return (
        User.objects.filter(is_active=True, notification_preferences__delivery=Delivery.DIGEST)
        .exclude(email="")
        .distinct()
        .order_by("pk")
    )


def digest_reviews(user: User, *, now: datetime | None = None) -> list[Review]:
    """The open reviews `user` can act on in the workflows they chose the digest for: ones
    they may see, not held by a live claim of someone else."""
    now = now or timezone.now()
    names = list(
        Preference.objects.filter(user=user, delivery=Delivery.DIGEST).values_list("workflow", flat=True)
    )
    held_by_others = Review.live_claim(now) & ~Q(claimed_by=user)
    return list(
        approvals_queries.visible_reviews(user)
        .filter(status=Review.Status.OPEN, workflow__in=names)
        .exclude(held_by_others)
        .order_by("due_at", "id")
    )
