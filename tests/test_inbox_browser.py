"""The inbox in a real browser (Debian's Chromium, tests/test_browser.py's fixtures): each key of
static/js/keys.js does what it says and none fires while typing, the URL follows the open
review, and without JavaScript the same links and forms open, decide and bulk-approve."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from approvals.models import Decision, Review
from tests import test_browser
from tests.factories import make_user
from tests.test_browser import (
    PASSWORD,
    WAIT_MS,
    assert_not_reloaded,
    expense,
    log_in,
    mark_page,
    review_of,
    screenshot_dir,
    start,
)
from workflows import registry

# test_browser's fixtures: one Chromium and one Celery worker for the module, fresh contexts.
browser = test_browser.browser
worker = test_browser.worker
new_page = test_browser.new_page
_empty_queue = test_browser._empty_queue

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.workers, pytest.mark.slow]

TITLES = ("Expense: Ada, Lyon", "Expense: Bo, Paris", "Expense: Cy, Rome")


@pytest.fixture
def three() -> list[Review]:
    """Three expense claims waiting for rita, oldest first (the inbox's order)."""
    make_user("rita", groups=["finance"])
    reviews = []
    for title, (who, what, amount) in zip(
        TITLES, (("Ada", "Train", 120.0), ("Bo", "Hotel", 210.0), ("Cy", "Taxi", 25.0)), strict=True
    ):
        reviews.append(review_of(start("expense_approval", expense(who, what, amount), title)))
    return reviews


def inbox(new_page: Callable[[], Page], path: str = "/inbox/") -> Page:
    page = new_page()
    log_in(page, "rita")
    page.goto(path)
    expect(page.get_by_role("heading", name="Inbox")).to_be_visible()
    expect(page.locator(".inbox-keys")).to_be_visible()  # keys.js loaded and showed its buttons
    return page


def row(page: Page, review: Review) -> Any:
    return page.locator(f"#review-{review.pk}")


def pane_heading(page: Page, title: str) -> Any:
    return page.locator("#inbox-review").get_by_role("heading", name=title, exact=True)


def test_j_and_k_move_the_selection_and_enter_opens_it_with_the_url_following(
    new_page: Callable[[], Page], three: list[Review]
) -> None:
    page = inbox(new_page)
    mark_page(page)
    page.keyboard.press("j")
    expect(row(page, three[0])).to_have_class(re.compile("is-selected"))
    page.keyboard.press("j")
    page.keyboard.press("j")
    expect(row(page, three[2])).to_have_class(re.compile("is-selected"))
    page.keyboard.press("j")  # stays on the last
    page.keyboard.press("k")
    expect(row(page, three[1])).to_have_class(re.compile("is-selected"))
    expect(page.locator("tr.is-selected")).to_have_count(1)

    page.keyboard.press("Enter")
    expect(pane_heading(page, TITLES[1])).to_be_visible()
    expect(page).to_have_url(re.compile(rf"/inbox/{three[1].pk}/$"))
    expect(page.locator("#inbox-review #claim")).to_contain_text("You are reviewing this")
    # The list and the review side by side on a wide screen.
    list_box = page.locator(".inbox-list").bounding_box()
    pane_box = page.locator("#inbox-review").bounding_box()
    assert list_box is not None
    assert pane_box is not None
    assert pane_box["x"] > list_box["x"] + list_box["width"] - 1
    assert_not_reloaded(page)
    page.screenshot(path=screenshot_dir() / "inbox.png", full_page=True)

    # Back goes to the inbox as it was (historyCacheSize 0: htmx fetches it again).
    page.go_back()
    expect(page).to_have_url(re.compile(r"/inbox/$"))
    expect(page.locator("#inbox-review")).to_contain_text("Open a review from the list")


def test_a_row_clicked_opens_in_the_pane_and_narrow_screens_stack_the_two(
    new_page: Callable[[], Page], three: list[Review]
) -> None:
    page = inbox(new_page)
    mark_page(page)
    row(page, three[2]).get_by_role("link").click()
    expect(pane_heading(page, TITLES[2])).to_be_visible()
    expect(page).to_have_url(re.compile(rf"/inbox/{three[2].pk}/$"))
    expect(row(page, three[2])).to_have_class(re.compile("is-open"))
    assert_not_reloaded(page)

    page.set_viewport_size({"width": 700, "height": 900})
    list_box = page.locator(".inbox-list").bounding_box()
    pane_box = page.locator("#inbox-review").bounding_box()
    assert list_box is not None
    assert pane_box is not None
    assert pane_box["y"] >= list_box["y"] + list_box["height"] - 1


def test_a_approves_the_open_review_and_the_next_one_opens(
    new_page: Callable[[], Page], three: list[Review]
) -> None:
    page = inbox(new_page, f"/inbox/{three[0].pk}/")
    expect(page.locator("#inbox-review #claim")).to_contain_text("You are reviewing this")
    mark_page(page)

    page.keyboard.press("a")

    expect(pane_heading(page, TITLES[1])).to_be_visible()
    expect(page).to_have_url(re.compile(rf"/inbox/{three[1].pk}/$"))
    expect(page.locator("#inbox-review")).to_contain_text(f"{TITLES[0]}: decision recorded.")
    expect(row(page, three[0])).to_have_count(0)  # the list refreshed without it
    expect(row(page, three[1])).to_have_class(re.compile("is-selected"))
    decision = Decision.objects.get(review=three[0])
    assert (decision.action, decision.actor.username) == ("approve", "rita")
    assert_not_reloaded(page)


def test_r_rejects_the_open_review(new_page: Callable[[], Page], three: list[Review]) -> None:
    page = inbox(new_page, f"/inbox/{three[2].pk}/")
    expect(page.locator("#inbox-review #claim")).to_contain_text("You are reviewing this")

    page.keyboard.press("r")

    # The last one decided: the next is the first of the list.
    expect(pane_heading(page, TITLES[0])).to_be_visible()
    expect(page).to_have_url(re.compile(rf"/inbox/{three[0].pk}/$"))
    assert Decision.objects.get(review=three[2]).action == "reject"


def test_e_and_c_focus_the_fields_and_no_key_fires_while_typing_in_them(
    new_page: Callable[[], Page], three: list[Review]
) -> None:
    page = inbox(new_page, f"/inbox/{three[0].pk}/")
    expect(page.locator("#inbox-review #claim")).to_contain_text("You are reviewing this")
    # The open review is the selected row.
    expect(row(page, three[0])).to_have_class(re.compile("is-selected"))

    page.keyboard.press("c")
    comment = page.locator("#decision-form [name=comment]")
    expect(comment).to_be_focused()
    page.keyboard.type("jar kx?e")
    expect(comment).to_have_value("jar kx?e")

    page.keyboard.press("Escape")
    page.locator("h1", has_text="Inbox").click()  # focus leaves the field
    page.keyboard.press("e")
    amount = page.locator("#decision-form [name=state__amount]")
    expect(amount).to_be_focused()
    page.keyboard.press("Control+a")
    page.keyboard.type("99")
    expect(amount).to_have_value("99")

    # Nothing moved, ticked, opened or decided while typing.
    expect(row(page, three[0])).to_have_class(re.compile("is-selected"))
    expect(page.locator("input[name=review]:checked")).to_have_count(0)
    expect(page.locator("#keys-dialog")).not_to_be_visible()
    assert not Decision.objects.filter(review__in=three).exists()
    expect(page).to_have_url(re.compile(rf"/inbox/{three[0].pk}/$"))


def test_x_ticks_the_selected_row_and_question_mark_lists_the_keys(
    new_page: Callable[[], Page], three: list[Review]
) -> None:
    page = inbox(new_page)
    page.keyboard.press("j")
    page.keyboard.press("x")
    expect(row(page, three[0]).locator("input[name=review]")).to_be_checked()
    page.keyboard.press("x")
    expect(row(page, three[0]).locator("input[name=review]")).not_to_be_checked()
    # Keys held with Ctrl, Alt or Meta are the browser's, not the inbox's.
    page.keyboard.press("Alt+j")
    page.keyboard.press("Control+x")
    expect(row(page, three[0])).to_have_class(re.compile("is-selected"))
    expect(row(page, three[0]).locator("input[name=review]")).not_to_be_checked()
    # A box ticked with the mouse has the focus; it is not a text field, so the keys still act.
    row(page, three[2]).locator("input[name=review]").click()
    page.keyboard.press("j")
    expect(row(page, three[1])).to_have_class(re.compile("is-selected"))
    page.keyboard.press("k")

    page.keyboard.press("?")
    dialog = page.locator("#keys-dialog")
    expect(dialog).to_be_visible()
    for key in ("j", "k", "Enter", "a", "r", "e", "c", "x", "?"):
        expect(dialog.locator("kbd", has_text=key).first).to_be_visible()
    page.keyboard.press("j")  # the dialog is open: no key acts behind it
    expect(row(page, three[0])).to_have_class(re.compile("is-selected"))
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).not_to_be_visible()


def test_every_key_has_a_button_that_does_the_same(new_page: Callable[[], Page], three: list[Review]) -> None:
    page = inbox(new_page)
    keys = page.locator(".inbox-keys")
    keys.get_by_role("button", name="Next").click()
    keys.get_by_role("button", name="Next").click()
    expect(row(page, three[1])).to_have_class(re.compile("is-selected"))
    keys.get_by_role("button", name="Previous").click()
    expect(row(page, three[0])).to_have_class(re.compile("is-selected"))
    keys.get_by_role("button", name="Tick").click()
    expect(row(page, three[0]).locator("input[name=review]")).to_be_checked()
    keys.get_by_role("button", name="Open").click()
    expect(pane_heading(page, TITLES[0])).to_be_visible()
    keys.get_by_role("button", name="Comment").click()
    expect(page.locator("#decision-form [name=comment]")).to_be_focused()
    keys.get_by_role("button", name="Edit").click()
    expect(page.locator("#decision-form [name=state__amount]")).to_be_focused()
    keys.get_by_role("button", name="Keys").click()
    expect(page.locator("#keys-dialog")).to_be_visible()
    page.locator("#keys-dialog").get_by_role("button", name="Close").click()
    keys.get_by_role("button", name="Reject").click()
    expect(pane_heading(page, TITLES[1])).to_be_visible()
    assert Decision.objects.get(review=three[0]).action == "reject"
    keys.get_by_role("button", name="Approve").click()
    expect(pane_heading(page, TITLES[2])).to_be_visible()
    assert Decision.objects.get(review=three[1]).action == "approve"


# -- without JavaScript ----------------------------------------------------------------------


@pytest.fixture
def plain_page(browser: Browser, live_server: Any, three: list[Review]) -> Iterator[Page]:
    """A page in a browser with JavaScript off, logged in as rita (whom `three` makes)."""
    context = browser.new_context(
        base_url=live_server.url, java_script_enabled=False, viewport={"width": 1280, "height": 900}
    )
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.goto("/accounts/login/?next=/inbox/")
    page.get_by_label("Username").fill("rita")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Inbox")).to_be_visible()
    yield page
    context.close()


def test_without_javascript_a_row_opens_and_a_decision_goes_to_the_next_review(
    plain_page: Page, three: list[Review]
) -> None:
    page = plain_page
    page.reload()
    expect(page.locator(".inbox-keys")).to_be_hidden()  # no keys without JavaScript
    row(page, three[0]).get_by_role("link").click()
    expect(page).to_have_url(re.compile(rf"/inbox/{three[0].pk}/$"))
    expect(pane_heading(page, TITLES[0])).to_be_visible()

    page.locator("#decision-form input[name=action][value=approve]").check()
    page.get_by_role("button", name="Submit decision").click()

    expect(page).to_have_url(re.compile(rf"/inbox/{three[1].pk}/$"))
    expect(page.locator(".messages")).to_contain_text(f"{TITLES[0]}: decision recorded.")
    expect(pane_heading(page, TITLES[1])).to_be_visible()
    assert Decision.objects.get(review=three[0]).action == "approve"


def test_without_javascript_bulk_approve_asks_to_confirm_then_approves(
    plain_page: Page, three: list[Review], monkeypatch: pytest.MonkeyPatch
) -> None:
    shown_in_rows(monkeypatch)
    page = plain_page
    row(page, three[0]).locator("input[name=review]").check()
    row(page, three[1]).locator("input[name=review]").check()
    page.get_by_role("button", name="Approve selected").click()

    expect(page.get_by_role("heading", name="Approve 2 reviews?")).to_be_visible()
    assert not Decision.objects.filter(review__in=three).exists()
    page.get_by_role("button", name="Confirm: approve 2").click()

    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.locator(".messages")).to_contain_text(f"{TITLES[0]}: approved")
    expect(page.locator(".messages")).to_contain_text(f"{TITLES[1]}: approved")
    assert Decision.objects.filter(review__in=three[:2], action="approve").count() == 2
    assert not Decision.objects.filter(review=three[2]).exists()


def test_select_all_ticks_every_row_and_bulk_approve_confirms_in_place(
    new_page: Callable[[], Page], three: list[Review], monkeypatch: pytest.MonkeyPatch
) -> None:
    shown_in_rows(monkeypatch)
    page = inbox(new_page)
    mark_page(page)
    everything = page.locator("#select-all")
    everything.check()
    expect(page.locator("input[name=review]:checked")).to_have_count(3)
    row(page, three[2]).locator("input[name=review]").uncheck()
    assert everything.evaluate("box => box.indeterminate")
    page.get_by_role("button", name="Approve selected").click()

    result = page.locator("#bulk-result")
    expect(result.get_by_role("heading", name="Approve 2 reviews?")).to_be_visible()
    result.get_by_role("button", name="Confirm: approve 2").click()
    expect(result).to_contain_text(f"{TITLES[0]}: approved")
    expect(row(page, three[0])).to_have_count(0)  # the list refreshed
    expect(row(page, three[2])).to_have_count(1)
    assert_not_reloaded(page)
    assert Decision.objects.filter(review__in=three[:2], action="approve").count() == 2


def shown_in_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """expense_approval's rows show all its editable fields (summary_fields), so bulk approve
    may approve what they show. The web side (live_server's thread) reads the registry."""
    spec = registry.get("expense_approval")
    shown = spec.summary_names
    summary = (
        *spec.summary_fields,
        *(registry.summary_field(name) for name in spec.editable if name not in shown),
    )
    monkeypatch.setitem(registry._registry, spec.name, dataclasses.replace(spec, summary_fields=summary))
