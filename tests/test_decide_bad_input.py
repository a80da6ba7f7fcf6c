"""Bad input to the decision form (invariant 7): refused with 422 or 413, nothing written."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from langgraph.graph import StateGraph

from approvals.forms import sign_pin
from approvals.models import Decision, Review
from tests.factories import head, open_review, paused, registered, run_queued
from tests.fake_workflows import InboxState, build_inbox, build_typed
from tests.pages import HX, client_for, decide_url, expense_thread, refused, review_form, snapshot
from workflows import registry, services
from workflows.models import Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("doorbell")]


def test_a_wrong_type_is_a_field_error_on_the_page_and_in_the_fragment(rita: Client, review: Review):
    data = review_form(rita, review, state__amount="lots")

    page = refused(rita, review, data, "Enter a number.")
    fragment = refused(rita, review, data, "Enter a number.", **HX)

    assert "<html" in page
    assert "<html" not in fragment
    # The amount's row of the state table is marked invalid, its input labelled in place.
    row = r'<tr class="state-row editable invalid" data-field="amount">\s*<th scope="row">'
    row += r'<label for="id_state__amount">'
    assert re.search(row, fragment)
    assert 'value="lots"' in fragment  # what the reviewer typed is kept


def test_a_value_outside_a_literal_is_refused(rita: Client, review: Review):
    refused(rita, review, review_form(rita, review, state__category="bribes"), "Select a valid choice")


def test_json_that_does_not_parse_is_refused(rita: Client, typed: Thread):
    review = open_review(typed)
    refused(rita, review, review_form(rita, review, state__tags='["a", '), "This is not valid JSON.")


def test_json_of_the_wrong_shape_is_refused(rita: Client, typed: Thread):
    review = open_review(typed)
    refused(rita, review, review_form(rita, review, state__limits='{"x": "many"}'), "Some edits do not fit")


@pytest.fixture
def editable_inbox(staff: User) -> Iterator[Review]:
    def build() -> StateGraph[InboxState]:
        return build_inbox(allow_edit=True)

    workflow = registry.Workflow(
        name="edit_inbox", title="Edit inbox", builder=build, reviewer_group="finance"
    )
    with paused(workflow, {"to": "ada@example.com"}, staff) as thread:
        yield open_review(thread)


def test_edited_arguments_that_do_not_parse_get_one_error_not_two(rita: Client, editable_inbox: Review):
    data = review_form(rita, editable_inbox, action="edit", args='{"to": ')

    for extra in ({}, HX):
        html = refused(rita, editable_inbox, data, "This is not valid JSON.", **extra)

        assert html.count("This is not valid JSON.") == 1
        assert "must be a JSON object" not in html


def test_edited_arguments_that_are_not_an_object_are_refused(rita: Client, editable_inbox: Review):
    data = review_form(rita, editable_inbox, action="edit", args='["to"]')

    html = refused(rita, editable_inbox, data, "The edited arguments must be a JSON object.")

    assert "not valid JSON" not in html


def test_unknown_fields_are_refused(rita: Client, review: Review):
    data = review_form(rita, review, state__employee="Eve", is_admin="1")
    refused(rita, review, data, "Unknown fields: is_admin, state__employee.")


def test_a_tampered_pin_is_refused(rita: Client, review: Review):
    data = review_form(rita, review)
    data["pin"] = data["pin"][:-2] + ("AA" if not data["pin"].endswith("AA") else "BB")
    refused(rita, review, data, "This form was altered")


def test_a_missing_pin_is_refused(rita: Client, review: Review):
    refused(rita, review, review_form(rita, review, pin=None), "This field is required.")


def test_a_pin_from_another_review_is_refused(rita: Client, staff: User, review: Review):
    other = open_review(expense_thread(staff, "Another claim"))
    data = review_form(rita, review, pin=sign_pin(other))
    refused(rita, review, data, "This form belongs to another review")


def test_an_oversized_submission_is_refused_with_413(rita: Client, review: Review, settings: Any):
    data = review_form(rita, review, comment="x" * 5000)
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2000
    before = snapshot(review.thread)

    response = rita.post(decide_url(review), data)

    assert response.status_code == 413
    assert "The submission is too large" in response.text
    assert snapshot(review.thread) == before


def test_an_oversized_submission_is_refused_with_413_when_csrf_is_checked(
    reviewer: User, review: Review, settings: Any
):
    client = client_for(reviewer, enforce_csrf_checks=True)
    data = review_form(client, review, comment="x" * 5000)
    data["csrfmiddlewaretoken"] = client.cookies["csrftoken"].value
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2000

    response = client.post(decide_url(review), data)

    assert response.status_code == 413


def test_a_select_or_checkbox_the_graph_has_not_set_is_no_edit_when_left_alone(rita: Client, staff: User):
    workflow = registry.Workflow(
        name="typed_fields",
        title="Typed fields",
        builder=build_typed,
        reviewer_group="finance",
        editable=("flag", "level", "label"),
        interrupt_before=("finish",),
    )
    with registered(workflow):
        thread = services.start_thread(workflow="typed_fields", input={"label": "Q3"}, actor=staff)
        run_queued(thread)
        review = open_review(thread)
        data = review_form(rita, review)
        # A browser sends a select's first option and reads an unticked box as False: unset
        # fields offer "not set" / "unknown" instead, which leave them unset.
        assert data["state__level"] == ""
        assert data["state__flag"] == "unknown"

        response = rita.post(decide_url(review), data)

        assert response.status_code == 302
        assert Decision.objects.get(review=review).updates == {}


def test_leaving_a_field_the_graph_has_not_set_empty_is_not_an_edit(rita: Client, staff: User):
    post = services.start_thread(workflow="content_review", input={"topic": "release notes"}, actor=staff)
    run_queued(post)
    review = open_review(post)
    data = review_form(rita, review)
    assert data["state__audience"] == ""

    response = rita.post(decide_url(review), data)

    assert response.status_code == 302
    assert Decision.objects.get(review=review).updates == {}
    run_queued(post)
    assert "audience" not in head(post).values
