// nst-bench study page: answers by click or key (preference 1 / 2 / 0, deception p / f), sent as JSON with the
// voter's CSRF token; the next question is the page itself, reloaded. No external code.
(function () {
  "use strict";
  var body = document.body;
  var assignment = body.dataset.assignment;
  if (!assignment) { return; }
  var kind = body.dataset.kind;
  var keys = kind === "preference" ? { "1": "left", "2": "right", "0": "tie" } : { "p": "painting", "f": "photo" };
  var shown = performance.now();
  var busy = false;
  var status = document.getElementById("status");
  window.addEventListener("load", function () { shown = performance.now(); });  // images loaded: the clock starts

  function send(answer) {
    if (busy) { return; }
    busy = true;
    var buttons = document.querySelectorAll("button");
    buttons.forEach(function (b) { b.disabled = true; });
    fetch("answer", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": body.dataset.csrf },
      body: JSON.stringify({ assignment: assignment, answer: answer, response_ms: Math.round(performance.now() - shown) })
    }).then(function (r) {
      if (r.ok || r.status === 409) { window.location.reload(); return; }
      return r.json().catch(function () { return {}; }).then(function (j) {
        status.textContent = "Not saved (" + r.status + "): " + (typeof j.detail === "string" ? j.detail : "try again");
        busy = false;
        buttons.forEach(function (b) { b.disabled = false; });
      });
    }).catch(function () {
      status.textContent = "Not saved: the server cannot be reached; try again.";
      busy = false;
      buttons.forEach(function (b) { b.disabled = false; });
    });
  }

  document.querySelectorAll("button[data-answer]").forEach(function (b) {
    b.addEventListener("click", function () { send(b.dataset.answer); });
  });
  document.addEventListener("keydown", function (e) {
    if (e.altKey || e.ctrlKey || e.metaKey) { return; }
    var answer = keys[e.key.toLowerCase()];
    if (answer) { e.preventDefault(); send(answer); }
  });
})();
