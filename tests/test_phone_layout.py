"""On a 390-px phone screen (an iPhone 12 to 15: 390 x 844) no page is wider than the screen:
the queue, a review with its preview, a thread, the audit trail and an error page. Tables
become cards there (static/css/app.css, "Phone layout"). Chromium and the worker are
tests/test_browser.py's."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Browser, Page, expect

from tests.factories import make_user
from tests.pages import grant

# The browser, the worker it needs and the broker purge between tests: tests/test_browser.py's.
from tests.test_browser import (  # noqa: F401
    WAIT_MS,
    _empty_queue,
    browser,
    expense,
    log_in,
    review_of,
    screenshot_dir,
    start,
    worker,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.workers, pytest.mark.slow]

PHONE = {"width": 390, "height": 844}
# Words no browser may break by itself: a link pasted in a description, a long reference.
LONG_URL = (
    "https://expenses.example.com/receipts/2026/03/taxi-from-the-airport-to-the-hotel-at-night-0123456789"
)
LONG_WORD = "INV-" + "0123456789" * 6

# Every element drawn (every <details> opened first, so folded values count too) whose box
# reaches past either edge of the screen; and how wide the document scrolls.
MEASURE = """() => {
  for (const details of document.querySelectorAll("details")) details.open = true;
  const screen = document.documentElement.clientWidth;
  const wide = [];
  for (const element of document.body.querySelectorAll("*")) {
    const box = element.getBoundingClientRect();
    if (box.width === 0 || box.height === 0) continue;
    if (box.left < -0.5 || box.right > screen + 0.5) {
      const classes = typeof element.className === "string" ? element.className.trim() : "";
      const name = element.tagName.toLowerCase() + (element.id ? "#" + element.id : "")
        + (classes ? "." + classes.split(/\\s+/).join(".") : "");
      wide.push(`${name} ${Math.round(box.left)}..${Math.round(box.right)}`);
    }
  }
  return {screen, scrollWidth: document.documentElement.scrollWidth, wide};
}"""


@pytest.fixture
def phone(browser: Browser, live_server: Any) -> Iterator[Callable[[], Page]]:  # noqa: F811 - the imported fixture
    """Pages on a phone-sized screen, each in its own browser context."""
    contexts = []

    def open_page() -> Page:
        context = browser.new_context(
            base_url=live_server.url, viewport=PHONE, is_mobile=True, has_touch=True
        )
        context.set_default_timeout(WAIT_MS)
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()


def assert_fits(page: Page, what: str) -> None:
    # Kept with test_browser's screenshots (var/screenshots): to see the cards, not only measure them.
    name = re.sub(r"\W+", "-", what).strip("-")
    page.screenshot(path=screenshot_dir() / f"phone-{name}.png", full_page=True)
    measured = page.evaluate(MEASURE)
    assert measured["screen"] == PHONE["width"], what
    assert measured["scrollWidth"] <= PHONE["width"], f"{what}: the page scrolls sideways ({measured})"
    assert measured["wide"] == [], f"{what}: wider than the screen: {measured['wide']}"


@pytest.fixture
def auditing_reviewer() -> User:
    """A finance reviewer on the staff who may also read the audit trail (the widest header)."""
    return grant(make_user("aude", groups=["finance"], staff=True), "view_auditevent")


def test_the_queue_inbox_review_thread_threads_and_audit_pages_fit_a_phone_screen(
    phone: Callable[[], Page], auditing_reviewer: User
) -> None:
    long_one = start(
        "expense_approval",
        expense("Grace Hopper", f"Taxi, receipt at {LONG_URL}, reference {LONG_WORD}", 48.5),
        title=f"Expense: Grace Hopper, airport taxi {LONG_WORD}",
    )
    others = [start("expense_approval", expense(f"Person {n}", "Team lunch", 20 + n)) for n in range(3)]
    review = review_of(long_one)
    for thread in others:
        review_of(thread)

    page = phone()
    log_in(page, auditing_reviewer.username)
    expect(page.locator("table.reviews tbody tr")).to_have_count(4)
    assert_fits(page, "the queue")

    page.goto(f"/reviews/{review.pk}/")
    page.locator("input[name=state__amount]").fill("40")
    page.get_by_label("Comment").fill(f"Capped; see {LONG_URL}")
    page.get_by_role("button", name="Preview changes").click()
    expect(page.locator("#preview")).to_contain_text("Your changes")
    assert_fits(page, "the review with its preview")

    page.get_by_role("button", name="Submit decision").click()
    expect(page).to_have_url(re.compile(rf"/threads/{long_one.public_id}/$"))
    expect(page.locator("#status [data-status]")).to_have_text("Completed")
    assert_fits(page, "the thread")

    page.goto(f"/inbox/{review.pk}/")
    expect(page.locator("#inbox-review")).to_be_visible()
    assert_fits(page, "the inbox with a review open")

    page.goto("/threads/")
    expect(page.locator(f'a[href="/threads/{long_one.public_id}/"]').first).to_be_visible()
    assert_fits(page, "the threads page")

    page.goto("/audit/")
    expect(page.locator("table.audit-events tbody tr").first).to_be_visible()
    assert_fits(page, "the audit trail")

    page.goto(f"/audit/threads/{long_one.public_id}/")
    assert_fits(page, "a thread's audit trail")

    page.goto("/no-such-page/")
    expect(page.get_by_role("heading", name="Not found (404)")).to_be_visible()
    assert_fits(page, "the 404 page")
