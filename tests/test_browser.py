"""The reviewer's pages in a real browser: Debian's Chromium driven by Playwright.

pytest-django's `live_server` serves the app from a thread against the test database, and a
real Celery worker (tests/workers.py) runs the graphs, so a decision taken in the browser
resumes the thread for real. The worker shares the test process's broker: the on-disk one
under SIGNOFF_VAR_DIR on SQLite, CELERY_BROKER_URL on PostgreSQL.

Chromium is found at SIGNOFF_CHROMIUM (default /usr/bin/chromium); `make test` installs it
(bin/setup-browser). Playwright's own browser downloads are never used.

The screenshots (the queue and a review page with a few demo threads) go to
SIGNOFF_VAR_DIR/screenshots; with SIGNOFF_SCREENSHOTS=docs/screenshots they refresh the
ones the README shows.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.utils import timezone
from playwright.sync_api import Browser, BrowserContext, Dialog, Locator, Page, expect, sync_playwright

from approvals import links
from approvals import services as approvals
from approvals.models import Decision, Review
from tests.factories import make_user
from tests.workers import ROOT, Worker, wait_for
from workflows import registry, services
from workflows.management.commands.seed_demo_threads import DEMO_THREADS
from workflows.models import Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.workers, pytest.mark.slow]

CHROMIUM = os.environ.get("SIGNOFF_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "password"  # tests.factories.make_user's
WAIT_MS = 30_000  # the longest any expectation waits


# -- the browser and the worker, once per module -------------------------------------------


@pytest.fixture(scope="module")
def browser(worker: Worker) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"The browser tests need Chromium at {CHROMIUM}: run bin/setup-browser "
            "(apt-get install chromium), or set SIGNOFF_CHROMIUM to its path."
        )
    # Playwright's sync API keeps an event loop running in this thread, so Django takes the
    # test's ORM calls for calls from async code. They are not: allow them while the browser
    # is open. (The worker, started first, does not inherit this.)
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        expect.set_options(timeout=WAIT_MS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def worker(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    from config.celery import app

    # Messages other tests' services left in the broker are for threads that no longer exist.
    app.control.purge()
    worker = Worker(tmp_path_factory.mktemp("browser-worker"), "browser").start()
    yield worker
    worker.stop()


@pytest.fixture(autouse=True)
def _empty_queue(worker: Worker) -> None:
    from config.celery import app

    app.control.purge()


@pytest.fixture
def new_page(browser: Browser, live_server: Any) -> Iterator[Callable[[], Page]]:
    """Pages in fresh browser contexts (separate cookies: one per person)."""
    contexts: list[BrowserContext] = []

    def open_page() -> Page:
        context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
        context.set_default_timeout(WAIT_MS)
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()


# -- helpers -------------------------------------------------------------------------------


def start(workflow: str, input: dict[str, Any], title: str = "") -> Thread:
    return services.start_thread(workflow=workflow, input=input, actor=None, title=title)


def expense(employee: str, description: str, amount: float, category: str = "travel") -> dict[str, Any]:
    return {"employee": employee, "description": description, "amount": amount, "category": category}


def review_of(thread: Thread, *, timeout: float = 60) -> Review:
    """The thread's open review, once the worker has run the thread to it."""

    def found() -> Review | None:
        return Review.objects.filter(thread=thread, status=Review.Status.OPEN).order_by("id").first()

    thread.refresh_from_db()
    review: Review = wait_for(found, timeout=timeout, what=f"a review of {thread.title!r} ({thread.status})")
    return review


def log_in(page: Page, username: str) -> None:
    page.goto("/accounts/login/?next=/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Reviews waiting")).to_be_visible()
    # htmx is served from our static files; without it nothing on these pages is live.
    assert page.evaluate("typeof window.htmx") == "object", "htmx did not load"


def mark_page(page: Page) -> None:
    """Tag the loaded document: if the tag survives, the page was updated without a reload."""
    page.evaluate("window.__notReloaded = true")


def assert_not_reloaded(page: Page) -> None:
    assert page.evaluate("window.__notReloaded === true"), "the page was reloaded"


def queue_row(page: Page, title: str) -> Locator:
    return page.locator("table.reviews tbody tr").filter(has=page.get_by_role("link", name=title, exact=True))


def screenshot_dir() -> Path:
    wanted = os.environ.get("SIGNOFF_SCREENSHOTS")
    directory = Path(wanted) if wanted else Path(settings.VAR_DIR) / "screenshots"
    directory = directory if directory.is_absolute() else ROOT / directory
    directory.mkdir(parents=True, exist_ok=True)
    return directory


# -- the tests -------------------------------------------------------------------------------


def test_a_reviewer_approves_an_expense_with_edits_and_watches_it_complete(
    new_page: Callable[[], Page], worker: Worker
) -> None:
    rita = make_user("rita", groups=["finance", "editors"])
    # No email address, so no notification for the worker to deliver: it is frozen below, and
    # frozen in the middle of a delivery's write it would hold SQLite's write lock, and the
    # decision would wait on it (a 503 after the busy timeout).
    User.objects.filter(pk=rita.pk).update(email="")
    claim = start("expense_approval", expense("Ada", "Train to Lyon", 120.0), "Expense: Ada, train to Lyon")
    post = start("content_review", {"topic": "release notes", "audience": "customers"}, "Post: release notes")
    review = review_of(claim)
    review_of(post)

    page = new_page()
    log_in(page, "rita")
    expect(queue_row(page, "Post: release notes")).to_have_count(1)
    page.locator("select[name=workflow]").select_option("expense_approval")
    expect(queue_row(page, "Post: release notes")).to_have_count(0)
    expect(page).to_have_url(re.compile(r"workflow=expense_approval"))

    queue_row(page, "Expense: Ada, train to Lyon").get_by_role("link").click()
    expect(page.get_by_role("heading", name="Expense: Ada, train to Lyon")).to_be_visible()
    expect(page.locator("#claim")).to_contain_text("You are reviewing this")
    page.locator("input[name=state__amount]").fill("99.5")
    page.locator("input[name=state__approved]").check()
    page.get_by_role("button", name="Preview changes").click()
    preview = page.locator("#preview")
    expect(preview).to_contain_text("Your changes")
    expect(preview.locator("tr", has_text="amount")).to_contain_text("120.0")
    expect(preview.locator("tr", has_text="amount")).to_contain_text("99.5")
    expect(preview.locator("tr", has_text="approved")).to_contain_text("true")

    # Freeze the worker so the thread page is seen queued first, then following the run live.
    worker.signal(signal.SIGSTOP)
    try:
        page.get_by_role("button", name="Submit decision").click()
        expect(page).to_have_url(re.compile(rf"/threads/{claim.public_id}/$"))
        status = page.locator("#status [data-status]")
        expect(status).to_have_text(re.compile("Queued|Running"))
        mark_page(page)
    finally:
        worker.signal(signal.SIGCONT)
    expect(status).to_have_text("Completed")
    assert_not_reloaded(page)
    expect(page.locator("#status dl.values .field", has_text="outcome")).to_contain_text("paid 99.50")
    expect(page.locator("#status .spinner")).to_have_count(0)

    decision = Decision.objects.get(review=review)
    assert (decision.action, decision.actor.username) == ("approve", "rita")
    assert decision.updates == {"after": {"amount": 99.5, "approved": True}}
    claim.refresh_from_db()
    assert claim.status == Thread.Status.COMPLETED


def test_state_with_markup_is_shown_as_text_and_never_runs(new_page: Callable[[], Page]) -> None:
    script = "<script>alert(1)</script>"
    img = "<img src=x onerror=alert(1)>"
    make_user("rita", groups=["finance"])
    thread = start("expense_approval", expense(img, f"Taxi {script}", 42.0), f"Expense {script} {img}")
    review = review_of(thread)

    page = new_page()
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    log_in(page, "rita")
    title = f"Expense {script} {img}"
    pages = [
        ("the queue", "/", queue_row(page, title)),
        ("the review", f"/reviews/{review.pk}/", page.locator("section.state")),
        ("the thread", f"/threads/{thread.public_id}/", page.locator("#status")),
    ]
    for name, url, shown in pages:
        page.goto(url)
        expect(shown.get_by_text(script).first, f"{name} shows the script tag as text").to_be_visible()
        expect(shown.get_by_text(img).first, f"{name} shows the img tag as text").to_be_visible()
        if name != "the queue":
            expect(page.get_by_role("heading", name=title, exact=True)).to_be_visible()
        # Neither became an element: the only scripts are the page's own, and there are no images.
        assert page.locator("main script").count() == 0, name
        assert page.locator("img").count() == 0, name
        if name != "the queue":
            assert page.evaluate("document.title").startswith(title), name
    assert dialogs == []


def test_two_reviewers_decide_the_same_review_one_wins_the_other_sees_who(
    new_page: Callable[[], Page],
) -> None:
    make_user("rita", groups=["finance"])
    make_user("oscar", groups=["finance"])
    thread = start("expense_approval", expense("Ada", "Hotel in Lyon", 310.0), "Expense: Ada, hotel")
    review = review_of(thread)
    url = f"/reviews/{review.pk}/"

    rita, oscar = new_page(), new_page()
    log_in(rita, "rita")
    log_in(oscar, "oscar")
    rita.goto(url)
    expect(rita.locator("#claim")).to_contain_text("You are reviewing this")
    oscar.goto(url)
    expect(oscar.locator("#claim")).to_contain_text("Being reviewed by rita")
    # Opening the review claimed it for rita, but oscar still has the form to submit.
    expect(oscar.get_by_role("button", name="Submit decision")).to_be_visible()

    rita.locator("input[name=state__approved]").check()
    rita.get_by_role("button", name="Submit decision").click()
    expect(rita).to_have_url(re.compile(rf"/threads/{thread.public_id}/$"))

    oscar.locator("input[name=state__amount]").fill("1")
    with oscar.expect_response(re.compile(rf"/reviews/{review.pk}/decide/$")) as answer:
        oscar.get_by_role("button", name="Submit decision").click()
    assert answer.value.status == 409
    conflict = oscar.locator("#decision [role=alert]")
    expect(conflict).to_contain_text("Your decision was not applied")
    expect(conflict).to_contain_text(re.compile(r"already decided \(approve\) by rita at \d{4}-\d\d-\d\d"))

    decision = Decision.objects.get(review__thread=thread)
    assert decision.actor.username == "rita"
    assert decision.updates == {"after": {"approved": True}}


def test_two_approvers_in_two_browsers_the_second_sees_the_first_ones_edits_and_completes_it(
    new_page: Callable[[], Page],
) -> None:
    """Four-eyes (tests.fake_workflows.test_four_eyes needs two approvals): the first approval
    keeps the review open ("1 of 2"), the second approver sees the first one's edit as a diff,
    and their approval resumes the thread once, with that edit."""
    make_user("quinn", groups=["quorum"])
    make_user("fred", groups=["quorum"])
    thread = start("test_four_eyes", expense("Ada", "Taxi to the airport", 120.0), "Four eyes: Ada's taxi")
    review = review_of(thread)
    url = f"/reviews/{review.pk}/"

    quinn, fred = new_page(), new_page()
    log_in(quinn, "quinn")
    log_in(fred, "fred")
    expect(queue_row(quinn, "Four eyes: Ada's taxi")).to_contain_text("0 of 2 approvals")
    quinn.goto(url)
    expect(quinn.locator("#claim")).to_contain_text("You are reviewing this")
    expect(quinn.locator("#approvals")).to_contain_text("it still needs 2 more approvals")
    quinn.locator("input[name=state__amount]").fill("99.5")
    quinn.get_by_label("Comment").fill("the receipt says 99.50")
    quinn.get_by_role("button", name="Submit decision").click()
    # A partial approval comes back to the review, open, with the approval listed.
    expect(quinn).to_have_url(re.compile(rf"/reviews/{review.pk}/$"))
    expect(quinn.locator("#approvals [data-progress]")).to_have_text("1 of 2")
    expect(quinn.locator("#approve-refusal")).to_contain_text("You already approved this review")
    expect(quinn.locator("input[name=action][value=approve]")).to_be_disabled()
    # Quinn's page did not claim the review again: Fred takes it.
    expect(quinn.locator("#claim")).to_contain_text("Claim this review")

    fred.goto("/")
    expect(queue_row(fred, "Four eyes: Ada's taxi")).to_contain_text("1 of 2 approvals")
    queue_row(fred, "Four eyes: Ada's taxi").get_by_role("link").click()
    expect(fred.locator("#claim")).to_contain_text("You are reviewing this")
    approval = fred.locator("#approvals li[data-approver=quinn]")
    expect(approval).to_contain_text("the receipt says 99.50")
    expect(approval.locator("tr", has_text="amount")).to_contain_text("120.0")
    expect(approval.locator("tr", has_text="amount")).to_contain_text("99.5")
    expect(fred.locator("input[name=state__amount]")).to_have_value("99.5")
    fred.get_by_role("button", name="Submit decision").click()
    expect(fred).to_have_url(re.compile(rf"/threads/{thread.public_id}/$"))
    expect(fred.locator("#status [data-status]")).to_have_text("Completed")
    expect(fred.locator("#status dl.values .field", has_text="outcome")).to_contain_text("paid 99.50")

    decision = Decision.objects.get(review=review)
    assert decision.actor.username == "fred"
    assert decision.updates == {"after": {"amount": 99.5, "approved": True}}
    assert [approval.actor.username for approval in review.approvals.order_by("id")] == ["quinn", "fred"]
    assert thread.runs.filter(kind="resume").count() == 1


def test_the_queue_shows_new_reviews_without_a_reload(new_page: Callable[[], Page]) -> None:
    make_user("rita", groups=["finance"])
    review_of(start("expense_approval", expense("Ada", "Train to Lyon", 120.0), "Expense: Ada, Lyon"))
    review_of(start("expense_approval", expense("Bo", "Hotel in Paris", 210.0), "Expense: Bo, Paris"))

    page = new_page()
    log_in(page, "rita")
    search = page.get_by_label("Search")
    search.press_sequentially("Lyon")  # typed, key by key
    expect(queue_row(page, "Expense: Bo, Paris")).to_have_count(0)
    expect(queue_row(page, "Expense: Ada, Lyon")).to_have_count(1)
    expect(page).to_have_url(re.compile(r"q=Lyon"))
    mark_page(page)

    review_of(start("expense_approval", expense("Cy", "Flight to Lyon", 330.0), "Expense: Cy, Lyon"))
    review_of(start("expense_approval", expense("Di", "Taxi in Rome", 25.0), "Expense: Di, Rome"))
    # The queue polls every 10 s.
    expect(queue_row(page, "Expense: Cy, Lyon")).to_have_count(1, timeout=20_000)
    expect(queue_row(page, "Expense: Di, Rome")).to_have_count(0)
    expect(queue_row(page, "Expense: Bo, Paris")).to_have_count(0)
    expect(search).to_have_value("Lyon")
    expect(page.locator("[data-scope=all]")).to_have_text("2")
    assert_not_reloaded(page)


def test_screenshots_of_the_queue_and_a_review(new_page: Callable[[], Page]) -> None:
    """A realistic queue (the demo threads of `make run`) and one review with a change previewed."""
    rita = make_user("rita", groups=["finance", "editors", "contracts", "purchasing"])
    oscar = make_user("oscar", groups=["finance", "editors", "contracts", "purchasing"])
    threads = {
        title: start(workflow, data, title)
        for workflow, title, data in DEMO_THREADS
        if workflow != "seed_demo"  # it fails on purpose; it never opens a review
    }
    reviews = {title: review_of(thread) for title, thread in threads.items()}
    # A queue that has been open for a while: reviews waiting from minutes to days, one overdue.
    now = timezone.now()
    for age, thread in zip((50, 26, 8, 5, 3, 1, 0.5), threads.values(), strict=True):
        opened = now - timedelta(hours=age)
        Review.objects.filter(thread=thread).update(created_at=opened, due_at=opened + timedelta(hours=48))
    approvals.claim_review(review=reviews["Post: how we review expenses"], actor=oscar)
    lunch = reviews["Expense: Grace Hopper, team lunch"]
    directory = screenshot_dir()

    page = new_page()
    log_in(page, rita.username)
    for title in threads:
        expect(queue_row(page, title).first).to_be_visible()
    expect(queue_row(page, "Post: how we review expenses")).to_contain_text("oscar")
    page.set_viewport_size({"width": 1280, "height": 600})  # the full page is as tall as its content
    page.screenshot(path=directory / "queue.png", full_page=True)

    page.goto(f"/reviews/{lunch.pk}/")
    expect(page.locator("#claim")).to_contain_text("You are reviewing this")
    page.locator("input[name=state__amount]").fill("180")
    page.locator("input[name=state__approved]").check()
    page.get_by_label("Comment").fill("Capped at the team-lunch limit of 180.")
    page.get_by_role("button", name="Preview changes").click()
    expect(page.locator("#preview")).to_contain_text("Your changes")
    page.screenshot(path=directory / "review.png", full_page=True)

    laptop = reviews["Expense: Alan Turing, laptop"]
    page.set_viewport_size({"width": 1500, "height": 900})
    page.goto(f"/inbox/{laptop.pk}/")
    expect(page.locator("#inbox-review")).to_contain_text("Replacement laptop")
    page.screenshot(path=directory / "inbox.png")

    for name in ("queue.png", "review.png", "inbox.png"):
        assert (directory / name).stat().st_size > 10_000, name


def test_a_one_click_link_decides_in_a_browser_without_javascript_or_a_session(
    browser: Browser, live_server: Any, worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    rita = make_user("rita", groups=["finance"])
    spec = registry.get("expense_approval")
    # The web side (live_server's thread) reads the flag; the worker only resumes the thread.
    monkeypatch.setitem(registry._registry, spec.name, dataclasses.replace(spec, email_decisions=True))
    monkeypatch.setattr(settings, "SIGNOFF_BASE_URL", live_server.url)
    claim = start("expense_approval", expense("Ada", "Train to Lyon", 120.0), "Expense: Ada, train to Lyon")
    review = review_of(claim)
    urls = links.links_for(recipient=rita, review=review)

    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(urls["approve"])
        expect(page.get_by_role("heading", name="Approve “Expense: Ada, train to Lyon”?")).to_be_visible()
        assert Decision.objects.filter(review=review).count() == 0
        page.get_by_role("button", name="Approve").click()
        expect(page.get_by_role("heading", name="Approved: “Expense: Ada, train to Lyon”")).to_be_visible()
        page.goto(urls["approve"])
        expect(page.get_by_role("alert")).to_contain_text("already decided (approve) by rita")
    finally:
        context.close()

    decision = Decision.objects.get(review=review)
    assert (decision.action, decision.actor.username) == ("approve", "rita")
    wait_for(
        lambda: Thread.objects.filter(pk=claim.pk, status=Thread.Status.COMPLETED).first(),
        timeout=60,
        what="the thread to complete",
    )
