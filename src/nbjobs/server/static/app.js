// nbjobs dashboard: live updates from the Server-Sent Events stream, and the cancel/retry buttons.
// Pages are complete without this script; it only keeps them current.
"use strict";

const FINAL = new Set(["succeeded", "failed", "timed_out", "kernel_died", "memory_exceeded", "cancelled", "lost", "skipped"]);
const LOG_LIMIT = 200000; // characters of log kept on the page

function csrf() {
  return document.querySelector('meta[name="csrf-token"]').content;
}

function when(iso) {
  // The same shape as the server's pages: YYYY-MM-DD HH:MM:SS, local time.
  const d = new Date(iso);
  const two = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

function setStateClass(el, state) {
  // Works on SVG elements too, whose className is not a string.
  for (const name of [...el.classList]) if (name.startsWith("state-")) el.classList.remove(name);
  el.classList.add("state-" + state);
}

function setBadge(el, state) {
  setStateClass(el, state);
  el.textContent = state;
}

async function postJson(url) {
  const answer = await fetch(url, { method: "POST", headers: { "X-CSRF-Token": csrf() }, credentials: "same-origin" });
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok) throw new Error(body.detail || `error ${answer.status}`);
  return body;
}

function stream(url, handlers) {
  const source = new EventSource(url);
  for (const [kind, handle] of Object.entries(handlers)) {
    source.addEventListener(kind, (e) => handle(JSON.parse(e.data)));
  }
  return source;
}

function jobPage(body) {
  const id = body.dataset.jobId;
  const state = document.getElementById("state");
  const reason = document.getElementById("reason");
  const log = document.getElementById("log");
  const cells = document.getElementById("cells");
  const history = document.querySelector("#history tbody");
  const cancel = document.getElementById("cancel");
  const retry = document.getElementById("retry");
  let attempt = null;

  function cell(index, status, title) {
    let li = cells.querySelector(`li[data-index="${index}"]`);
    if (!li) {
      cells.querySelector("li.none")?.remove();
      li = document.createElement("li");
      li.dataset.index = index;
      li.innerHTML = `<span>${Number(index)}</span>`;
      cells.append(li);
    }
    li.className = "cell cell-" + status;
    li.title = title || `cell ${index}: ${status}`;
  }

  function newAttempt(number) {
    if (attempt !== null && number !== attempt) {
      for (const li of cells.querySelectorAll("li.cell")) li.className = "cell cell-pending";
      log.textContent = "";
    }
    attempt = number;
  }

  stream(`/api/jobs/${id}/events?after=${body.dataset.lastEvent}`, {
    state: (e) => {
      setBadge(state, e.state);
      reason.textContent = e.reason || "";
      const row = history.insertRow();
      row.innerHTML = "<td></td><td><span class='badge'></span></td><td></td><td></td>";
      row.cells[0].textContent = when(e.at);
      setBadge(row.cells[1].firstChild, e.state);
      row.cells[2].textContent = e.attempt;
      row.cells[3].textContent = e.reason || "";
      const ended = FINAL.has(e.state);
      cancel.hidden = ended;
      retry.hidden = !ended;
      if (e.state === "running" || ended) {
        const frame = document.getElementById("notebook");
        if (frame) setTimeout(() => { frame.src = frame.src.split("?")[0] + "?t=" + Date.now(); }, 500);
        else if (ended) document.getElementById("no-notebook")?.classList.add("ready");
      }
    },
    cell_started: (e) => { newAttempt(e.attempt); cell(e.index, "running"); },
    cell_finished: (e) => { newAttempt(e.attempt); cell(e.index, e.status, `cell ${e.index}: ${e.status} in ${e.duration} s`); },
    cell_skipped: (e) => cell(e.index, "skipped"),
    log: (e) => {
      newAttempt(e.attempt);
      const follow = log.scrollTop + log.clientHeight >= log.scrollHeight - 20;
      log.append(document.createTextNode(e.text));
      if (log.textContent.length > LOG_LIMIT) log.textContent = "…" + log.textContent.slice(-LOG_LIMIT / 2);
      if (follow) log.scrollTop = log.scrollHeight;
    },
  });

  for (const button of [cancel, retry]) {
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await postJson(`/api/jobs/${id}/${button.dataset.action}`);
      } catch (error) {
        reason.textContent = error.message;
      } finally {
        button.disabled = false;
      }
    });
  }
}

function jobsPage(body) {
  const firstPage = !new URLSearchParams(location.search).has("before");
  const notice = document.getElementById("new-jobs");
  stream(`/api/events?after=${body.dataset.lastEvent}`, {
    state: (e) => {
      const badge = document.querySelector(`tr[data-job-id="${e.job_id}"] [data-role="state"]`);
      if (badge) setBadge(badge, e.state);
      else if (firstPage && e.state === "queued") notice.hidden = false;
    },
  });
}

function queuePage(body) {
  let timer = null;
  stream(`/api/events?after=${body.dataset.lastEvent}`, {
    state: () => {
      clearTimeout(timer);
      timer = setTimeout(() => location.reload(), 1000);
    },
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const body = document.body;
  const pages = { job: jobPage, jobs: jobsPage, queue: queuePage };
  pages[body.dataset.page]?.(body);
});
