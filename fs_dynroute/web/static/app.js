// fs-dynroute admin page: the Enabled switch saves at once, statistics stay live, deletes ask first.
"use strict";
const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

function enabledSwitches() {
  document.querySelectorAll("form.switch-form input[name=enabled]").forEach((box) => {
    box.addEventListener("change", async () => {
      const form = box.form, error = form.parentElement.querySelector(".switch-error");
      const body = new FormData(form);
      error.textContent = "";
      try {
        const answer = await fetch(form.action, {method: "POST", body, credentials: "same-origin",
          headers: {"X-CSRFToken": csrf(), "X-Requested-With": "fetch"}});
        const data = await answer.json();
        if (!answer.ok) { box.checked = !box.checked; error.textContent = data.error; }
      } catch (e) { box.checked = !box.checked; error.textContent = "not saved: " + e; }
    });
  });
}

function liveStats() {
  const table = document.getElementById("rules");
  if (!table) return;
  setInterval(async () => {
    const answer = await fetch("stats.json", {credentials: "same-origin"});
    if (!answer.ok) return;
    const stats = await answer.json();
    table.querySelectorAll("tr[data-rule]").forEach((row) => {
      const s = stats[row.dataset.rule];
      if (!s) return;
      row.querySelector('[data-stat="calls_today"]').textContent = s.calls_today;
      row.querySelector('[data-stat="hit_rate_today"]').textContent =
        s.hit_rate_today === null ? "–" : Math.floor(s.hit_rate_today * 100) + "%";
      row.querySelector('[data-stat="last_hit"]').textContent = s.last_hit || "–";
    });
  }, 5000);
}

function confirmations() {
  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => { if (!confirm(form.dataset.confirm)) event.preventDefault(); });
  });
}

document.addEventListener("DOMContentLoaded", () => { enabledSwitches(); liveStats(); confirmations(); });
