"""The inbox (`approvals.views.inbox`): the queue's list and the open review on one page, the
review swapped in with htmx, and the next review opened after a decision."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from approvals.models import Decision, Review
from tests.pages import HX, bulk_form, decide_url, form_fields, opened, queue_ids
from workflows import registry
from workflows.models import AuditEvent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("doorbell")]

INBOX = reverse("approvals:inbox")


def inbox_url(review: Review) -> str:
    return reverse("approvals:inbox_review", args=[review.pk])


def inbox_form(client: Client, review: Review, **changes: str) -> dict[str, str]:
    """The decision form as the inbox renders it (with the field that marks it as the inbox's)."""
    response = client.get(inbox_url(review))
    assert response.status_code == 200
    fields = form_fields(response.text)
    assert fields.get("inbox") is None  # outside the form element: form="decision-form" joins it
    return {**fields, "inbox": "1", **changes}


def test_the_inbox_lists_the_queue_and_opens_nothing_at_first(rita: Client, mixed: dict[str, Review]):
    response = rita.get(INBOX)

    assert response.status_code == 200
    assert sorted(queue_ids(response.text)) == sorted(review.pk for review in mixed.values())
    assert 'id="inbox-review"' in response.text
    assert "Open a review from the list" in response.text
    assert 'id="decision-form"' not in response.text
    # Rows open in the inbox: a real link for the page, hx-get for the pane.
    assert f'href="{inbox_url(mixed["lyon"])}" hx-get="{inbox_url(mixed["lyon"])}"' in response.text
    assert 'hx-target="#inbox-review"' in response.text
    assert "js/keys.js" in response.text


def test_an_inbox_review_page_shows_the_list_and_the_review_with_its_form(
    rita: Client, mixed: dict[str, Review]
):
    lyon = mixed["lyon"]

    response = rita.get(inbox_url(lyon))

    assert response.status_code == 200
    assert lyon.pk in queue_ids(response.text)
    assert f'data-review="{lyon.pk}"' in response.text
    assert 'id="decision-form"' in response.text
    assert '<input type="hidden" name="inbox" value="1" form="decision-form">' in response.text
    assert "Train to Lyon" in response.text
    assert 'id="keys-dialog"' in response.text


def test_opening_a_review_with_htmx_sends_the_pane_alone(rita: Client, mixed: dict[str, Review]):
    response = rita.get(inbox_url(mixed["laptop"]), **HX, HTTP_HX_TARGET="inbox-review")

    assert response.status_code == 200
    assert "<html" not in response.text
    assert response.text.lstrip().startswith('<section id="inbox-review"')
    assert 'id="decision-form"' in response.text
    assert "New laptop" in response.text
    assert queue_ids(response.text) == []
    assert "HX-Request" in response["Vary"]


def test_the_lists_refresh_in_the_inbox_keeps_the_inbox_links(rita: Client, mixed: dict[str, Review]):
    response = rita.get(INBOX + "?scope=unclaimed", **HX, HTTP_HX_TARGET="results")

    assert response.status_code == 200
    assert response.text.lstrip().startswith('<div id="results" hx-get="/inbox/')
    assert sorted(queue_ids(response.text)) == sorted(review.pk for review in mixed.values())
    assert f'href="{inbox_url(mixed["lyon"])}"' in response.text
    assert 'id="inbox-review"' not in response.text


def test_the_queue_itself_still_links_to_the_review_page(rita: Client, mixed: dict[str, Review]):
    response = rita.get(reverse("approvals:queue"))

    assert f'href="{reverse("approvals:review", args=[mixed["lyon"].pk])}">' in response.text
    assert 'hx-target="#inbox-review"' not in response.text


def test_a_review_of_another_group_is_not_found_in_the_inbox(client: Client, mixed: dict[str, Review]):
    from tests.factories import make_user
    from tests.pages import client_for

    outsider = client_for(make_user("otto", groups=["editors"]))

    assert outsider.get(inbox_url(mixed["lyon"])).status_code == 404


def test_deciding_in_the_inbox_with_htmx_opens_the_next_review_and_refreshes_the_list(
    rita: Client, mixed: dict[str, Review]
):
    lyon, laptop = mixed["lyon"], mixed["laptop"]

    response = rita.post(
        reverse("approvals:decide", args=[lyon.pk]), inbox_form(rita, lyon, action="approve"), **HX
    )

    assert response.status_code == 200
    assert Decision.objects.get(review=lyon).action == "approve"
    assert response["HX-Retarget"] == "#inbox-review"
    assert response["HX-Reswap"] == "outerHTML"
    assert response["HX-Trigger"] == "queue-changed"
    # The one after it in the list's order (waiting longest first): the laptop.
    assert response["HX-Push-Url"] == inbox_url(laptop)
    assert f'data-review="{laptop.pk}"' in response.text
    assert "Train to Lyon: decision recorded." in response.text
    assert "New laptop" in response.text


def test_deciding_in_the_inbox_without_javascript_redirects_to_the_next_reviews_inbox_page(
    rita: Client, mixed: dict[str, Review]
):
    lyon, laptop = mixed["lyon"], mixed["laptop"]

    response = rita.post(
        reverse("approvals:decide", args=[lyon.pk]), inbox_form(rita, lyon, action="reject"), follow=True
    )

    assert response.redirect_chain == [(inbox_url(laptop), 302)]
    assert Decision.objects.get(review=lyon).action == "reject"
    assert "Train to Lyon: decision recorded." in response.text
    assert f'data-review="{laptop.pk}"' in response.text
    assert lyon.pk not in queue_ids(response.text)


def test_the_next_review_skips_one_someone_else_holds_and_wraps_to_the_top(
    rita: Client, oscar: Client, mixed: dict[str, Review]
):
    lyon, laptop = mixed["lyon"], mixed["laptop"]
    order = queue_ids(rita.get(INBOX).text)
    # The laptop follows Lyon, and is last: past it the inbox goes back to the top.
    assert order[-2:] == [lyon.pk, laptop.pk]
    assert oscar.post(reverse("approvals:claim", args=[laptop.pk])).status_code == 302

    response = rita.post(decide_url(lyon), inbox_form(rita, lyon, action="approve"))

    assert response.status_code == 302
    assert response["Location"] == reverse("approvals:inbox_review", args=[order[0]])


def test_after_the_last_decision_the_inbox_says_nothing_else_is_waiting(rita: Client, review: Review):
    response = rita.post(
        reverse("approvals:decide", args=[review.pk]), inbox_form(rita, review, action="approve"), **HX
    )

    assert response["HX-Push-Url"] == INBOX
    assert "Nothing else is waiting for you." in response.text


def test_a_decision_outside_the_inbox_still_goes_to_the_thread(rita: Client, review: Review):
    fields: dict[str, Any] = inbox_form(rita, review, action="approve")
    del fields["inbox"]

    response = rita.post(reverse("approvals:decide", args=[review.pk]), fields)

    assert response["Location"] == reverse("approvals:thread", args=[review.thread.public_id])


def test_a_stale_decision_in_the_inbox_is_refused_as_anywhere(rita: Client, oscar: Client, review: Review):
    fields = inbox_form(rita, review, action="approve")
    assert oscar.post(decide_url(review), inbox_form(oscar, review)).status_code == 302

    response = rita.post(reverse("approvals:decide", args=[review.pk]), fields, **HX)

    assert response.status_code == 409
    assert response["HX-Retarget"] == "#decision"
    assert Decision.objects.get(review=review).actor.username == "oscar"


# -- bulk approve: confirmation, and never a state the rows did not show ----------------------

BULK = reverse("approvals:bulk_approve")


@pytest.fixture
def shown_in_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """expense_approval with every editable field among its summary_fields, so its queue rows
    show all a reviewer could change."""
    spec = registry.get("expense_approval")
    shown = spec.summary_names
    summary = (
        *spec.summary_fields,
        *(registry.summary_field(name) for name in spec.editable if name not in shown),
    )
    monkeypatch.setitem(registry._registry, spec.name, dataclasses.replace(spec, summary_fields=summary))


def test_the_queue_rows_carry_the_checkpoint_they_show_and_a_select_all_box(
    rita: Client, mixed: dict[str, Review]
):
    html = rita.get(reverse("approvals:queue")).text

    for review in mixed.values():
        assert f'name="checkpoint-{review.pk}" value="{review.checkpoint_id}"' in html
    assert 'id="select-all" data-select-all hidden' in html
    assert "js/bulk.js" in html


def test_bulk_approve_first_asks_to_confirm_and_writes_nothing(
    rita: Client, reviewer: User, mixed: dict[str, Review], shown_in_rows: None
):
    lyon, laptop, legal = mixed["lyon"], mixed["laptop"], mixed["legal"]
    events = AuditEvent.objects.count()

    fragment = rita.post(BULK, bulk_form(lyon, laptop, legal, confirm=False), **HX)
    page = rita.post(BULK, bulk_form(lyon, laptop, legal, confirm=False))

    assert fragment.status_code == page.status_code == 200
    assert "<html" not in fragment.text
    assert "<html" in page.text
    for html in (fragment.text, page.text):
        assert "Approve 2 reviews?" in html
        assert re.search(rf'data-review="{lyon.pk}">.*will be approved', html)
        assert re.search(rf'data-review="{legal.pk}">.*needs input', html)
        confirm = form_fields(html, "bulk-confirm")
        assert confirm["confirm"] == "yes"
        assert confirm[f"checkpoint-{lyon.pk}"] == lyon.checkpoint_id
        assert f"checkpoint-{legal.pk}" not in confirm
        assert "Confirm: approve 2" in html
    assert AuditEvent.objects.count() == events
    assert not Decision.objects.filter(review__in=mixed.values()).exists()


def test_confirming_approves_what_the_confirmation_listed(
    rita: Client, mixed: dict[str, Review], shown_in_rows: None
):
    lyon, laptop = mixed["lyon"], mixed["laptop"]
    step = rita.post(BULK, bulk_form(lyon, laptop, confirm=False))
    confirm = form_fields(step.text, "bulk-confirm")
    data = {**confirm, "review": [str(lyon.pk), str(laptop.pk)]}

    response = rita.post(BULK, data, follow=True)

    assert response.redirect_chain == [(reverse("approvals:queue"), 302)]
    assert "Train to Lyon: approved" in response.text
    assert "New laptop: approved" in response.text
    assert Decision.objects.filter(review__in=[lyon, laptop], action="approve").count() == 2


def test_bulk_approve_refuses_a_review_whose_state_its_row_did_not_show(
    rita: Client, reviewer: User, mixed: dict[str, Review]
):
    lyon, laptop = mixed["lyon"], mixed["laptop"]
    opened(reviewer, laptop)  # opening a review claims it: its page showed the whole state

    step = rita.post(BULK, bulk_form(lyon, laptop, confirm=False), **HX)
    response = rita.post(BULK, bulk_form(lyon, laptop), **HX)

    unshown = "open it first, its row does not show approved"
    assert re.search(rf'data-review="{lyon.pk}">.*{unshown}', step.text)
    assert re.search(rf'data-review="{laptop.pk}">.*will be approved', step.text)
    assert "Approve 1 review?" in step.text
    items = re.findall(r"<li>(.*?)</li>", response.text, re.S)
    assert f"not approved: {unshown}" in items[0]
    assert "<strong>approved</strong>" in items[1]
    assert not Decision.objects.filter(review=lyon).exists()
    assert Decision.objects.get(review=laptop).action == "approve"


def test_bulk_approve_refuses_a_review_whose_row_showed_another_checkpoint(
    rita: Client, review: Review, shown_in_rows: None
):
    events = AuditEvent.objects.count()
    moved_on = {**bulk_form(review), f"checkpoint-{review.pk}": "1f0-what-the-row-showed-before"}
    unsaid = {key: value for key, value in bulk_form(review).items() if not key.startswith("checkpoint-")}

    for data, reason in (
        (moved_on, "it changed since its row was shown; open it to see the new state"),
        (unsaid, "the form did not say what its row showed; reload the queue and tick it again"),
    ):
        response = rita.post(BULK, data, **HX)
        assert f"<strong>not approved: {reason}</strong>" in response.text
        step = rita.post(BULK, {**data, "confirm": ""}, **HX)
        assert reason in step.text
        assert "Nothing ticked can be approved here" in step.text
        assert 'id="bulk-confirm"' not in step.text
    assert AuditEvent.objects.count() == events
    review.refresh_from_db()
    assert review.status == Review.Status.OPEN
