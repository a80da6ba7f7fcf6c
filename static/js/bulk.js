// The queue's "select all" box (templates/approvals/queue.html): it ticks or clears every row
// of its form, and shows itself half-ticked when only some are. Hidden without JavaScript,
// where it could do nothing.
(function () {
  "use strict";

  function boxes(form) { return form ? Array.prototype.slice.call(form.querySelectorAll("input[type=checkbox][name=review]")) : []; }

  function sync() {
    document.querySelectorAll("[data-select-all]").forEach(function (all) {
      var rows = boxes(all.form);
      var ticked = rows.filter(function (box) { return box.checked; }).length;
      all.hidden = rows.length === 0;
      all.checked = rows.length > 0 && ticked === rows.length;
      all.indeterminate = ticked > 0 && ticked < rows.length;
    });
  }

  document.addEventListener("change", function (event) {
    var target = event.target;
    if (!(target instanceof HTMLInputElement)) { return; }
    if (target.hasAttribute("data-select-all")) {
      boxes(target.form).forEach(function (box) { box.checked = target.checked; });
    }
    sync();
  });
  // x in the inbox ticks with a click, which fires change; the list's refreshes replace rows.
  document.addEventListener("htmx:afterSettle", sync);
  document.addEventListener("DOMContentLoaded", sync);
})();
