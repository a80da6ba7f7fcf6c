// The inbox's keys (approvals/inbox.html): j/k move the selection in the list, Enter opens it,
// a/r approve/reject the open review, e/c go to its first editable field/its comment, x ticks
// the selected row for bulk approve, ? lists the keys. Each key only presses what the page
// already has (a link, the decision form's submit, a checkbox), so the server's checks apply
// unchanged, and each has a visible button for those who do not use keys.
(function () {
  "use strict";

  // The selected review's pk, kept across the list's refreshes, which replace its rows.
  var chosen = null;
  // Where a key is text: a ticked checkbox or a pressed radio is not, so j/k go on working.
  var TYPING = "input:not([type=checkbox]):not([type=radio]):not([type=button]):not([type=submit]):not([type=reset]), " +
    "textarea, select, [contenteditable]:not([contenteditable=false])";

  function inbox() { return document.getElementById("inbox"); }
  function rows() {
    var root = inbox();
    return root ? Array.prototype.slice.call(root.querySelectorAll("table.reviews tbody tr[id^='review-']")) : [];
  }
  function selected() { return rows().filter(function (row) { return row.classList.contains("is-selected"); })[0]; }
  function openPk() {
    var pane = document.getElementById("inbox-review");
    return pane ? pane.getAttribute("data-review") : null;
  }

  function say(text) {
    var notice = document.querySelector(".inbox-keys .key-notice");
    if (notice) { notice.textContent = text; }
  }

  function select(row) {
    rows().forEach(function (other) {
      other.classList.remove("is-selected");
      other.removeAttribute("aria-selected");
    });
    chosen = row ? row.id.replace("review-", "") : null;
    if (!row) { return; }
    row.classList.add("is-selected");
    row.setAttribute("aria-selected", "true");
    row.scrollIntoView({ block: "nearest" });
  }

  // After the list refreshes (every 10 s, after a decision), keep the selection on the same
  // review, else on the open one.
  var shown = null;  // the review open in the pane when restore() last ran

  function restore() {
    var list = rows();
    // A review just opened (a click, Enter, the next one after a decision) takes the selection.
    if (openPk() !== shown) { shown = openPk(); chosen = shown || chosen; }
    var row = (chosen && document.getElementById("review-" + chosen)) || (openPk() && document.getElementById("review-" + openPk()));
    list.forEach(function (other) { other.classList.toggle("is-open", other.id === "review-" + openPk()); });
    if (row && list.indexOf(row) >= 0) { select(row); }
  }

  function move(step) {
    var list = rows();
    if (!list.length) { say("Nothing waiting."); return; }
    var at = list.indexOf(selected());
    var next = at < 0 ? (step > 0 ? 0 : list.length - 1) : Math.min(list.length - 1, Math.max(0, at + step));
    select(list[next]);
  }

  function open() {
    var row = selected();
    var link = row && row.querySelector("a[href]");
    if (link) { link.click(); } else { say("Select a review first (j / k)."); }
  }

  function decide(action) {
    var form = document.getElementById("decision-form");
    if (!form) { say("No review open to decide."); return; }
    var choice = form.querySelector("input[name=action][value=" + action + "]");
    if (!choice) { say("This review cannot be " + (action === "approve" ? "approved" : "rejected") + " here."); return; }
    if (choice.disabled) { say(choice.title || "That decision is not yours to give."); return; }
    choice.checked = true;
    // The form's own submit button, as a click would: htmx posts it with the CSRF token.
    form.requestSubmit(form.querySelector("button[type=submit]:not([formaction])") || undefined);
  }

  function focusFirst(selector, missing) {
    var form = document.getElementById("decision-form");
    var field = form && Array.prototype.slice.call(form.querySelectorAll(selector)).filter(function (el) {
      return !el.disabled && el.type !== "hidden";
    })[0];
    if (field) { field.focus(); } else { say(missing); }
  }

  function tick() {
    var row = selected();
    var box = row && row.querySelector("input[type=checkbox][name=review]");
    if (box) { box.click(); } else { say("Select a review first (j / k)."); }
  }

  function help() {
    var dialog = document.getElementById("keys-dialog");
    if (dialog && !dialog.open) { dialog.showModal(); }
  }

  var ACTIONS = {
    j: function () { move(1); },
    k: function () { move(-1); },
    Enter: open,
    a: function () { decide("approve"); },
    r: function () { decide("reject"); },
    e: function () { focusFirst("[name^='state__'], [name=args], [name=response]", "This review has no editable field."); },
    c: function () { focusFirst("[name=comment]", "No comment box: no review open to decide."); },
    x: tick,
    "?": help,
  };

  document.addEventListener("keydown", function (event) {
    if (!inbox() || event.ctrlKey || event.metaKey || event.altKey || event.isComposing) { return; }
    var target = event.target;
    if (target instanceof Element && target.closest(TYPING)) { return; }
    if (document.querySelector("dialog[open]")) { return; }
    // Enter on a link or a button already does what it says.
    if (event.key === "Enter" && target instanceof Element && target.closest("a, button, summary")) { return; }
    var action = ACTIONS[event.key];
    if (!action) { return; }
    event.preventDefault();
    say("");
    action();
  });

  document.addEventListener("click", function (event) {
    var button = event.target instanceof Element && event.target.closest(".inbox-keys [data-key]");
    if (!button) { return; }
    say("");
    ACTIONS[button.getAttribute("data-key")]();
  });

  document.addEventListener("htmx:afterSettle", restore);

  document.addEventListener("DOMContentLoaded", function () {
    var keys = document.querySelector(".inbox-keys");
    if (keys) { keys.hidden = false; }
    restore();
  });
})();
