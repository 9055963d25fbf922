// nbjobs dashboard, pages of job groups: a pipeline run (graph, tasks, cancel/repair, live log)
// and a sweep (sortable results table). Both follow their group's event stream. Uses app.js's
// helpers (csrf, stream, setBadge, setStateClass, postJson, FINAL); the pages are complete without this script.
"use strict";

const RUN_FINAL = new Set(["succeeded", "succeeded_with_failures", "failed", "cancelled"]);
const REPAIRABLE = new Set(["failed", "timed_out", "kernel_died", "memory_exceeded", "cancelled", "lost", "skipped"]);

function shown(value) {
  // As the server writes a cell: text as it is, anything else as JSON.
  if (value === null || value === undefined) return "";
  return typeof value === "string" ? value : JSON.stringify(value);
}

function seconds(value) {
  if (value === null || value === undefined) return "";
  return value < 120 ? `${value.toFixed(1)} s` : `${(value / 60).toFixed(1)} min`;
}

function fillValues(cell, mapping) {
  cell.replaceChildren();
  const entries = Object.entries(mapping || {});
  if (!entries.length) return;
  const list = document.createElement("dl");
  list.className = "values";
  for (const [key, value] of entries) {
    const term = document.createElement("dt");
    term.textContent = key;
    const code = document.createElement("code");
    code.textContent = shown(value);
    const detail = document.createElement("dd");
    detail.append(code);
    list.append(term, detail);
  }
  cell.append(list);
}

// ------------------------------------------------------------------ pipeline run

function runPage(body) {
  const id = body.dataset.runId;
  const runState = document.getElementById("run-state");
  const runReason = document.getElementById("run-reason");
  const runEnded = document.getElementById("run-ended");
  const cancel = document.getElementById("cancel-run");
  const repair = document.getElementById("repair-run");
  const log = document.getElementById("log");
  const rows = new Map([...document.querySelectorAll("#tasks tbody tr")].map((tr) => [tr.dataset.jobId, tr]));
  const nodes = new Map([...document.querySelectorAll("svg.graph .node")].map((a) => [a.dataset.jobId, a]));
  const atLineStart = new Map();
  let refreshTimer = null;
  let settling = 0; // refreshes left while every task has ended but the run not yet

  function taskState(jobId, state, reason) {
    const node = nodes.get(String(jobId));
    if (node) {
      setStateClass(node, state);
      node.querySelector(".label").textContent = state;
      node.querySelector("title").textContent = `${node.dataset.task}: ${state}${reason ? " (" + reason + ")" : ""}`;
      node.setAttribute("aria-label", `task ${node.dataset.task}: ${state}`);
    }
    const row = rows.get(String(jobId));
    if (row) {
      setBadge(row.querySelector('[data-role="state"]'), state);
      if (reason !== undefined) row.querySelector('[data-role="reason"]').textContent = reason || "";
    }
  }

  function apply(run) {
    setBadge(runState, run.state);
    runReason.textContent = run.reason || "";
    runEnded.textContent = run.ended ? ` · ended ${when(run.ended)}` : "";
    for (const task of run.tasks) {
      taskState(task.job_id, task.state, task.reason || task.queue_reason);
      const row = rows.get(String(task.job_id));
      if (!row) continue;
      row.querySelector('[data-role="attempts"]').textContent = task.attempts;
      row.querySelector('[data-role="duration"]').textContent = seconds(task.duration);
      fillValues(row.querySelector('[data-role="parameters"]'), task.parameters);
      fillValues(row.querySelector('[data-role="results"]'), task.results);
    }
    cancel.hidden = run.state !== "running";
    repair.hidden = run.state === "running" || !run.tasks.some((t) => REPAIRABLE.has(t.state));
    // The run's own end comes a dispatcher pass after its last task's: look again until it does.
    const tasksEnded = run.tasks.every((t) => FINAL.has(t.state));
    if (run.state === "running" && tasksEnded && settling > 0) {
      settling -= 1;
      refresh(1000);
    }
  }

  async function load() {
    const answer = await fetch(`/api/pipelines/runs/${id}`, { credentials: "same-origin" });
    if (answer.ok) apply(await answer.json());
  }

  function refresh(delay) {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(() => load().catch(() => {}), delay);
  }

  function appendLog(jobId, text) {
    const name = rows.get(String(jobId))?.dataset.task || `job ${jobId}`;
    const follow = log.scrollTop + log.clientHeight >= log.scrollHeight - 20;
    let out = "";
    for (const piece of text.split(/(?<=\n)/)) {
      if (atLineStart.get(jobId) !== false) out += `${name} | `;
      out += piece;
      atLineStart.set(jobId, piece.endsWith("\n"));
    }
    log.append(document.createTextNode(out));
    if (log.textContent.length > LOG_LIMIT) log.textContent = "…" + log.textContent.slice(-LOG_LIMIT / 2);
    if (follow) log.scrollTop = log.scrollHeight;
  }

  stream(`/api/pipelines/runs/${id}/events?after=${body.dataset.lastEvent}`, {
    state: (e) => {
      taskState(e.job_id, e.state, e.reason);
      settling = 10;
      refresh(FINAL.has(e.state) ? 300 : 800); // results, resolved parameters, the run's state
    },
    log: (e) => appendLog(e.job_id, e.text),
  });

  for (const button of [cancel, repair]) {
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        apply(await postJson(`/api/pipelines/runs/${id}/${button.dataset.action}`));
      } catch (error) {
        runReason.textContent = error.message;
      } finally {
        button.disabled = false;
      }
    });
  }
}

// ------------------------------------------------------------------ sweep

function sortValue(cell) {
  return cell.dataset.sort === undefined ? undefined : JSON.parse(cell.dataset.sort);
}

function compareValues(a, b) {
  // As the CLI sorts: numbers before text, then lists and mappings by their JSON.
  const rank = (v) => (typeof v === "number" || typeof v === "boolean" ? 0 : typeof v === "string" ? 1 : 2);
  if (rank(a) !== rank(b)) return rank(a) - rank(b);
  if (rank(a) === 0) return Number(a) - Number(b);
  const [x, y] = rank(a) === 1 ? [a, b] : [JSON.stringify(a), JSON.stringify(b)];
  return x < y ? -1 : x > y ? 1 : 0;
}

function sortTable(table, column, descending) {
  const tbody = table.tBodies[0];
  const rows = [...tbody.rows];
  const present = rows.filter((r) => sortValue(r.cells[column]) !== undefined);
  const missing = rows.filter((r) => sortValue(r.cells[column]) === undefined);
  present.sort((r, s) => {
    const order = compareValues(sortValue(r.cells[column]), sortValue(s.cells[column]));
    return descending ? -order : order;
  });
  tbody.append(...present, ...missing); // rows without a value (not run yet) last, either way
  for (const th of table.tHead.rows[0].cells) th.removeAttribute("aria-sort");
  table.tHead.rows[0].cells[column].setAttribute("aria-sort", descending ? "descending" : "ascending");
}

function sortable(table) {
  table.tHead.addEventListener("click", (event) => {
    const th = event.target.closest("th");
    if (!th) return;
    const again = th.getAttribute("aria-sort") === "ascending";
    sortTable(table, th.cellIndex, again);
  });
}

function sweepPage(body) {
  const id = body.dataset.sweepId;
  const table = document.getElementById("results");
  const header = table.tHead.rows[0];
  const counter = document.getElementById("counts");
  const counts = JSON.parse(counter.dataset.counts);
  const partial = body.dataset.partial === "1"; // not every row is here: counts would drift
  sortable(table);

  function showCounts() {
    counter.replaceChildren();
    for (const state of Object.keys(counts).sort()) {
      if (counts[state] <= 0) continue;
      const badge = document.createElement("span");
      badge.className = "badge";
      setBadge(badge, state);
      badge.textContent = `${state} ${counts[state]}`;
      counter.append(badge, " ");
    }
  }

  function resultColumn(name) {
    // A result no element had when the page was made gets its column, before duration.
    let th = [...header.cells].find((c) => c.dataset.result === name);
    if (th) return th.cellIndex;
    const at = header.querySelector('[data-role="duration"]').cellIndex;
    th = document.createElement("th");
    th.dataset.result = name;
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = name;
    th.append(button);
    header.insertBefore(th, header.cells[at]);
    for (const row of table.tBodies[0].rows) row.insertCell(at);
    return at;
  }

  function setCell(cell, value) {
    cell.textContent = shown(value);
    if (value === null || value === undefined) delete cell.dataset.sort;
    else cell.dataset.sort = JSON.stringify(value);
  }

  async function ended(row, jobId) {
    const answer = await fetch(`/api/jobs/${jobId}`, { credentials: "same-origin" });
    if (!answer.ok) return;
    const job = await answer.json();
    for (const [name, value] of Object.entries(job.results || {})) setCell(row.cells[resultColumn(name)], value);
    const duration = row.cells[header.querySelector('[data-role="duration"]').cellIndex];
    duration.textContent = seconds(job.duration);
    if (job.duration === null) delete duration.dataset.sort;
    else duration.dataset.sort = JSON.stringify(job.duration);
  }

  stream(`/api/sweeps/${id}/events?after=${body.dataset.lastEvent}`, {
    state: (e) => {
      const row = table.querySelector(`tbody tr[data-job-id="${e.job_id}"]`);
      if (!row) return;
      const badge = row.querySelector('[data-role="state"]');
      const before = badge.textContent;
      if (!partial && before !== e.state) {
        counts[before] = (counts[before] || 0) - 1;
        counts[e.state] = (counts[e.state] || 0) + 1;
        showCounts();
      }
      setBadge(badge, e.state);
      badge.title = e.reason || "";
      badge.parentElement.dataset.sort = JSON.stringify(e.state);
      if (FINAL.has(e.state)) ended(row, e.job_id).catch(() => {});
    },
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const pages = { run: runPage, sweep: sweepPage };
  pages[document.body.dataset.page]?.(document.body);
});
