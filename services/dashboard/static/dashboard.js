// recsys dashboard: load the strategy lists after the page, post the test review, reload and mark
// the lists that changed. Plain JavaScript, served by the dashboard itself (no CDN, no framework).
"use strict";

function asinsOf(el) {
  return Array.from(el.querySelectorAll("[data-asin]")).map((li) => li.dataset.asin).join(",");
}

async function loadFragment(el) {
  el.classList.add("loading");
  try {
    const r = await fetch(el.dataset.src, { headers: { "X-Requested-With": "fetch" }, cache: "no-store" });
    el.innerHTML = await r.text();
  } catch (e) {
    el.innerHTML = '<h3>' + el.dataset.strategy + '</h3><p class="down"><span class="badge bad">down</span> dashboard: ' + e + "</p>";
  }
  el.classList.remove("loading");
  el.dataset.loaded = String(Date.now());
}

function loadAll() {
  return Promise.all(Array.from(document.querySelectorAll("[data-src]")).map(loadFragment));
}

async function postTestReview(ev) {
  ev.preventDefault();
  const form = ev.target;
  const status = document.getElementById("test-review-status");
  const button = form.querySelector("button");
  const top = document.querySelector("#strategy-hybrid [data-asin]");
  form.elements.parent_asin.value = top ? top.dataset.asin : "";
  const before = {};
  document.querySelectorAll("[data-src]").forEach((el) => { before[el.id] = asinsOf(el); });
  button.disabled = true;
  status.textContent = "posting…";
  try {
    const r = await fetch(form.action, {
      method: "POST", body: new URLSearchParams(new FormData(form)), headers: { "X-Requested-With": "fetch" },
    });
    status.innerHTML = await r.text();
    if (r.ok) {
      await loadAll();
      let changed = 0;
      document.querySelectorAll("[data-src]").forEach((el) => {
        const now = asinsOf(el);
        const differs = now !== before[el.id];
        el.classList.toggle("changed", differs);
        el.dataset.changed = differs ? "yes" : "no";
        if (differs) changed += 1;
      });
      const done = document.createElement("span");
      done.id = "lists-changed";
      done.dataset.count = String(changed);
      done.textContent = " " + changed + " of 4 lists changed.";
      status.appendChild(done);
    }
  } catch (e) {
    status.textContent = "failed: " + e;
  }
  button.disabled = false;
}

document.addEventListener("DOMContentLoaded", () => {
  loadAll();
  const form = document.getElementById("test-review");
  if (form) form.addEventListener("submit", postTestReview);
});
