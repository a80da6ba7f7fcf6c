"""The error pages (403, 404, 409, 413, 500, 503, a failed CSRF check) in the app's layout, each
saying what happened and offering a way on; and each 4xx logged once, in one line, without a
traceback."""

from __future__ import annotations

import logging

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.test import RequestFactory
from django.urls import include, path, reverse

from approvals.models import Review
from approvals.views import queue
from config.urls import urlpatterns as app_urlpatterns
from tests.factories import decide
from tests.pages import HX, LOGIN, client_for, decide_url, review_form

QUEUE = reverse("approvals:queue")


def _boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("a bug")


def _refuse(request: HttpRequest) -> HttpResponse:
    raise PermissionDenied


# The app's URLs plus two that fail on purpose (@pytest.mark.urls(__name__)).
urlpatterns = [
    path("test-boom/", _boom),
    path("test-refuse/", _refuse),
    path("test-queue/", queue),
    path("", include(app_urlpatterns)),
]
handler500 = "approvals.middleware.server_error"


def in_layout(html: str) -> bool:
    """The page is base.html's: the header with the app's name, the stylesheet."""
    return '<header class="top">' in html and "css/app.css" in html


def request_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """What Django logged about the response (a failed CSRF check has a logger of its own)."""
    return [record for record in caplog.records if record.name in ("django.request", "django.security.csrf")]


# -- the pages ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_unknown_address_is_a_404_page_in_the_layout_that_leads_back_to_the_queue(reviewer: User):
    response = client_for(reviewer).get("/no-such-page/")

    assert response.status_code == 404
    assert in_layout(response.text)
    assert "Not found (404)" in response.text
    assert f'href="{QUEUE}"' in response.text
    assert ">Log in<" not in response.text  # reviewer is signed in: the header shows the nav
    assert "Log out" in response.text


@pytest.mark.django_db
def test_a_404_for_somebody_signed_out_offers_to_log_in_and_come_back():
    response = client_for(None).get("/no-such-page/")

    assert response.status_code == 404
    assert in_layout(response.text)
    assert f'href="{LOGIN}?next=/no-such-page/"' in response.text


@pytest.mark.django_db
def test_a_review_the_reviewer_may_not_see_is_the_same_404_page(reviewer: User):
    response = client_for(reviewer).get(reverse("approvals:review", args=[999_999]))

    assert response.status_code == 404
    assert "There is nothing here for you" in response.text


@pytest.mark.django_db
def test_a_page_the_user_may_not_open_is_a_403_page_with_the_ways_on(reviewer: User):
    response = client_for(reviewer).get(reverse("approvals:audit_log"))

    assert response.status_code == 403
    assert in_layout(response.text)
    assert "Not allowed (403)" in response.text
    assert f'href="{QUEUE}"' in response.text
    assert f'href="{LOGIN}?next={reverse("approvals:audit_log")}"' in response.text


@pytest.mark.django_db
def test_a_failed_csrf_check_is_the_apps_403_page_saying_to_reload(reviewer: User):
    response = client_for(reviewer, enforce_csrf_checks=True).post(reverse("logout"))

    assert response.status_code == 403
    assert in_layout(response.text)
    assert "Your form could not be accepted" in response.text
    assert "reload the page and submit again" in response.text
    assert "Nothing was saved." in response.text


def test_the_500_page_is_in_the_layout_and_renders_without_the_database():
    # No django_db mark: a query would fail the test.
    from django.views import defaults

    response = defaults.server_error(RequestFactory().get("/"))

    assert response.status_code == 500
    text = response.content.decode()
    assert in_layout(text)
    assert "Server error (500)" in text
    assert f'href="{QUEUE}"' in text


@pytest.mark.urls(__name__)
@pytest.mark.django_db
def test_a_view_that_fails_answers_the_500_page(reviewer: User):
    response = client_for(reviewer, raise_request_exception=False).get("/test-boom/")

    assert response.status_code == 500
    assert "Something went wrong on our side" in response.text


def test_the_503_page_is_in_the_layout_and_renders_without_the_database():
    text = render_to_string("503.html", {"retry_after": 10})

    assert in_layout(text)
    assert "Unavailable (503)" in text
    assert "try again in 10 seconds" in text


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("doorbell")
def test_an_oversized_post_is_the_413_page_in_the_layout_and_a_fragment_for_htmx(
    reviewer: User, review: Review, settings
):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1_000
    client = client_for(reviewer)
    big = {"comment": "x" * 2_000}

    page = client.post(decide_url(review), big)
    fragment = client.post(decide_url(review), big, **HX)

    assert page.status_code == fragment.status_code == 413
    assert in_layout(page.text)
    assert "Too large (413)" in page.text
    assert f'href="{QUEUE}"' in page.text
    assert "<html" not in fragment.text
    assert 'class="conflict" role="alert"' in fragment.text


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("doorbell")
def test_a_second_decision_is_the_409_page_in_the_layout(
    reviewer: User, other_reviewer: User, review: Review
):
    client = client_for(reviewer)
    form = review_form(client, review, action="approve")
    decide(review, other_reviewer, "approve")

    response = client.post(decide_url(review), form)

    assert response.status_code == 409
    assert in_layout(response.text)
    assert "Not applied (409)" in response.text
    assert f'href="{reverse("approvals:review", args=[review.pk])}"' in response.text


# -- one log line per 4xx ----------------------------------------------------------------------


@pytest.mark.django_db
def test_a_404_is_logged_once_in_one_line_without_a_traceback(
    reviewer: User, caplog: pytest.LogCaptureFixture
):
    with caplog.at_level(logging.INFO):
        client_for(reviewer).get("/no-such-page/")

    [record] = request_records(caplog)
    assert record.exc_info is None
    assert record.levelno == logging.WARNING
    assert record.getMessage() == f"404 GET /no-such-page/ user={reviewer.pk} (Not Found)"


@pytest.mark.django_db
def test_a_403_is_logged_once_in_one_line_without_a_traceback(
    reviewer: User, caplog: pytest.LogCaptureFixture
):
    with caplog.at_level(logging.INFO):
        client_for(reviewer).get(reverse("approvals:audit_log"))

    [record] = request_records(caplog)
    assert record.exc_info is None
    assert record.exc_text is None
    assert record.getMessage() == f"403 GET /audit/ user={reviewer.pk} (Forbidden (Permission denied))"


@pytest.mark.urls(__name__)
@pytest.mark.django_db
def test_a_403_raised_by_a_view_is_logged_without_its_traceback(
    reviewer: User, caplog: pytest.LogCaptureFixture
):
    with caplog.at_level(logging.INFO):
        response = client_for(reviewer).get("/test-refuse/")

    assert response.status_code == 403
    [record] = request_records(caplog)
    assert record.exc_info is None
    assert "Traceback" not in caplog.text


@pytest.mark.django_db
def test_a_failed_csrf_check_is_logged_once_with_its_reason(reviewer: User, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.INFO):
        client_for(reviewer, enforce_csrf_checks=True).post(reverse("logout"))

    [record] = request_records(caplog)
    assert record.exc_info is None
    assert record.getMessage().startswith(f"403 POST /accounts/logout/ user={reviewer.pk} (Forbidden (CSRF")


@pytest.mark.django_db
def test_a_4xx_of_somebody_signed_out_logs_no_user(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.INFO):
        client_for(None).get("/no-such-page/")

    [record] = request_records(caplog)
    assert record.getMessage() == "404 GET /no-such-page/ user=- (Not Found)"


@pytest.mark.urls(__name__)
@pytest.mark.django_db
def test_a_500_keeps_its_traceback(reviewer: User, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.INFO):
        client_for(reviewer, raise_request_exception=False).get("/test-boom/")

    [record] = request_records(caplog)
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert record.exc_info[0] is RuntimeError
