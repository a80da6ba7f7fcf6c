"""The thread page (`approvals.views.thread_detail`) following a run after a decision."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from approvals.models import Review
from tests.factories import run_queued
from tests.pages import HX, decide_url, review_form

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("doorbell")]


def test_the_thread_page_shows_a_reviewers_edit_as_a_change_by_them(rita: Client, review: Review):
    rita.post(decide_url(review), review_form(rita, review, state__amount="99.5", state__approved="on"))
    run_queued(review.thread)

    html = rita.get(reverse("approvals:thread", args=[review.thread.public_id])).text

    edit = re.search(r'<span class="node">edit</span>\s*<span class="by">by rita</span>', html)
    assert edit is not None
    assert re.search(r'<tr class="changed"><td>amount</td><td><del>120.0</del></td><td><ins>99.5</ins>', html)


def test_the_last_poll_of_the_thread_page_also_replaces_its_history(rita: Client, review: Review):
    thread_url = reverse("approvals:thread", args=[review.thread.public_id])
    rita.post(decide_url(review), review_form(rita, review, state__amount="99.5"))

    queued = rita.get(thread_url, **HX).text
    run_queued(review.thread)
    done = rita.get(thread_url, **HX).text
    page = rita.get(thread_url).text

    assert 'hx-trigger="every 2s"' in queued
    assert 'id="history"' not in queued
    assert "hx-swap-oob" not in queued
    assert done.lstrip().startswith('<section id="status"')
    history = done[done.index("</section>") :]
    assert '<section class="history" id="history" hx-swap-oob="true">' in history
    assert re.search(r'<span class="node">edit</span>\s*<span class="by">by rita</span>', history)
    assert "<html" not in done
    assert 'id="history"' in page
    assert "hx-swap-oob" not in page


def test_without_javascript_the_thread_page_reloads_itself_until_the_run_ends(rita: Client, review: Review):
    thread_url = reverse("approvals:thread", args=[review.thread.public_id])
    refresh = '<noscript><meta http-equiv="refresh" content="3"></noscript>'
    rita.post(decide_url(review), review_form(rita, review))

    queued = rita.get(thread_url).text
    run_queued(review.thread)
    done = rita.get(thread_url).text

    assert refresh in queued[: queued.index("</head>")]
    assert "this page updates itself until the run ends" in queued
    assert refresh not in done
    assert "updates itself" not in done
