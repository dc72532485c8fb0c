//! `/dashboard/`: plugins with their state and a restart button, hosts,
//! gateways, and the tasks (filtered, a page at a time, one in detail with
//! cancel and retry), updated live by a little script; served from the binary
//! (no CDN). Below 1080px wide the tables become cards, so a phone never
//! scrolls sideways.

use axum::response::Html;

/// `GET /dashboard/`.
pub(crate) async fn page() -> Html<&'static str> {
    Html(PAGE)
}

const PAGE: &str = r##"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Corral</title>
<style>
*, *::before, *::after { box-sizing: border-box; }
body { font-family: system-ui, sans-serif; margin: 0; padding: 1.5rem; color: #1d1d1f; background: #fafafa; line-height: 1.4; overflow-wrap: break-word; }
h1 { font-size: 1.4rem; margin: 0 0 1rem; }
h2 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
h3 { font-size: 1.05rem; margin: 0; }
h4 { font-size: .95rem; margin: 1rem 0 .35rem; }
a { color: #0b57d0; }
button { cursor: pointer; font: inherit; padding: .3rem .8rem; }
input, select { font: inherit; padding: .3rem .4rem; max-width: 100%; }
.token label { display: block; font-weight: 600; }
.token p { margin: .2rem 0 .4rem; color: #555; font-size: .9rem; }
#token { width: 24rem; max-width: 100%; }
#notice { margin: .5rem 0; min-height: 1.2rem; color: #555; }
/* A message stays in sight while the page scrolls (e.g. to a task's buttons). */
#notice:not(:empty) { position: sticky; top: 0; z-index: 1; color: #1d1d1f; background: #fff8d6;
  border: 1px solid #eadb9c; border-radius: 4px; padding: .35rem .6rem; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid #e5e5e5; font-size: .92rem; vertical-align: top; }
th { background: #f0f0f0; }
.state { font-weight: 600; }
.state-ready { color: #137333; } .state-failed { color: #c5221f; }
.state-starting, .state-backoff, .state-stopping { color: #b06000; }
.status-SUCCESS { color: #137333; } .status-FAILURE { color: #c5221f; } .status-PENDING { color: #b06000; }
.id { font-family: ui-monospace, monospace; font-size: .85rem; }
.filters { display: flex; flex-wrap: wrap; gap: .5rem .75rem; align-items: flex-end; margin: 0 0 .6rem; }
.filters label { display: flex; flex-direction: column; font-size: .85rem; color: #444; }
.filters input, .filters select { min-height: 2.2rem; }
.filter-actions { display: flex; gap: .5rem; }
.phase { color: #666; }
#tasks tr.selected td { background: #eef3fd; }
.pager { display: flex; align-items: center; gap: .75rem; margin: .5rem 0; }
.hint { color: #666; font-size: .9rem; }
#task-detail { scroll-margin-top: 6rem; background: #fff; border: 1px solid #ddd; border-radius: 8px; padding: .75rem 1rem; margin: 1rem 0; }
.detail-head { display: flex; flex-wrap: wrap; justify-content: space-between; align-items: baseline; gap: .5rem; }
.actions { display: flex; flex-wrap: wrap; gap: .5rem; margin: .6rem 0; }
#task-fields { display: grid; grid-template-columns: minmax(6rem, max-content) minmax(0, 1fr); gap: .2rem 1rem; margin: .5rem 0; }
#task-fields div { display: contents; }
#task-fields dt { color: #666; }
#task-fields dd { margin: 0; overflow-wrap: anywhere; }
#task-inputs { table-layout: fixed; }
#task-inputs th { width: 14rem; background: none; font-weight: 600; }
td.exit { min-width: 11rem; overflow-wrap: anywhere; }
td.host { min-width: 7rem; overflow-wrap: anywhere; }
#task-inputs td, #task-inputs th { overflow-wrap: anywhere; }
#task-log { background: #f4f4f4; border: 1px solid #e5e5e5; padding: .5rem .6rem; margin: 0; max-height: 22rem; overflow: auto;
  white-space: pre-wrap; overflow-wrap: anywhere; font-size: .85rem; }
#task-log:empty::before { content: "empty"; color: #888; }
#task-detail ul { margin: 0; padding-left: 1.2rem; }
#task-detail li { overflow-wrap: anywhere; }
/* Under 1080px the tables become cards, a label over each value. */
@media (max-width: 1080px) {
  body { padding: 1rem .75rem; }
  table.cards { background: none; }
  table.cards thead { display: none; }
  table.cards tbody, table.cards td { display: block; }
  table.cards tr { display: grid; grid-template-columns: repeat(auto-fill, minmax(8.5rem, 1fr)); gap: .3rem .9rem;
    background: #fff; border: 1px solid #ddd; border-radius: 8px; padding: .55rem .75rem; margin: 0 0 .6rem; }
  table.cards td { border: 0; padding: 0; min-width: 0; overflow-wrap: anywhere; }
  table.cards td::before { content: attr(data-label); display: block; font-size: .75rem; color: #666; font-weight: normal; }
  table.cards tr { position: relative; }
  table.cards td.title { grid-column: 1 / -1; font-weight: 600; }
  table.cards td.exit { grid-column: 1 / -1; order: 1; }
  table.cards td.title::before, table.cards td.action::before { content: none; }
  /* The card's button sits beside its title. */
  table.cards td.action { position: absolute; top: .4rem; right: .6rem; }
  table.cards tr:has(td.action) td.title { padding-right: 6rem; }
  table.cards .optional { display: none; }
  #tasks.cards tr.selected { border-color: #0b57d0; }
  #tasks.cards tr.selected td { background: none; }
  .filters label { flex: 1 1 9rem; }
  .filters input, .filters select { width: 100%; }
  #task-detail { padding: .6rem .7rem; }
  #task-inputs th { width: 35%; }
}
</style>
</head>
<body>
<h1>Corral</h1>
<div class="token">
<label for="token">Admin token</label>
<p id="token-help">For restarts and the tasks (and for everything with --require-auth): the admin token in the
data directory's <code>admin-token</code> file (<code>corral serve</code> prints where at start), or a JWT with the admin role.</p>
<input id="token" type="password" autocomplete="off" aria-describedby="token-help">
</div>
<div id="notice" role="status"></div>
<h2>Plugins</h2>
<div class="table-wrap">
<table id="plugins" class="cards"><thead><tr><th>Plugin</th><th>Host</th><th>Version</th><th>State</th><th>PID</th>
<th>Restarts</th><th>Last exit</th><th title="tasks waiting for a step">Waiting</th>
<th title="tasks whose call runs">Running</th><th><span hidden>Action</span></th></tr></thead><tbody></tbody></table>
</div>
<h2>Hosts</h2>
<div class="table-wrap">
<table id="hosts" class="cards"><thead><tr><th>Supervisor</th><th>State</th><th>Ready plugins</th>
<th title="this gateway's calls running there">In flight</th></tr></thead><tbody></tbody></table>
</div>
<h2>Gateways</h2>
<div class="table-wrap">
<table id="gateways" class="cards"><thead><tr><th>Lease</th><th>Address</th><th>State</th>
<th title="running tasks it owns">Running</th><th>Started</th></tr></thead><tbody></tbody></table>
</div>
<h2 id="tasks-heading">Tasks</h2>
<section id="task-detail" hidden aria-labelledby="task-detail-title">
<div class="detail-head"><h3 id="task-detail-title">Task <span id="task-detail-id" class="id"></span></h3>
<a href="#" id="task-detail-close">Close</a></div>
<div class="actions">
<button type="button" id="task-cancel" hidden>Cancel task</button>
<button type="button" id="task-retry" hidden>Retry task</button>
</div>
<dl id="task-fields"></dl>
<h4>Inputs</h4>
<table id="task-inputs"><tbody></tbody></table>
<h4>Log</h4>
<pre id="task-log"></pre>
<h4>Steps</h4>
<ul id="task-steps"></ul>
<h4>Outputs</h4>
<ul id="task-outputs"></ul>
</section>
<form id="task-filter" class="filters" aria-labelledby="tasks-heading">
<label>Plugin <input id="filter-plugin" name="plugin" list="plugin-identifiers" placeholder="any" autocomplete="off"></label>
<datalist id="plugin-identifiers"></datalist>
<label>Status <select id="filter-status" name="status">
<option value="">any</option><option>PENDING</option><option value="RUNNING">RUNNING (a call runs)</option>
<option value="WAITING">WAITING (for a step)</option><option>SUCCESS</option><option>FAILURE</option></select></label>
<label>Created since <input id="filter-since" name="since" type="datetime-local"></label>
<label>Created before <input id="filter-until" name="until" type="datetime-local"></label>
<div class="filter-actions"><button type="submit" id="filter-apply">Show</button>
<button type="reset" id="filter-clear">Clear</button></div>
</form>
<p id="tasks-hint" class="hint">The tasks show with the admin token.</p>
<div class="table-wrap">
<table id="tasks" class="cards"><thead><tr><th>Task</th><th>Plugin</th><th>Status</th><th>Created</th>
<th class="optional">Updated</th><th>Attempts</th></tr></thead><tbody></tbody></table>
</div>
<div class="pager">
<button type="button" id="tasks-previous" disabled>Previous</button>
<span id="tasks-page">Page 1</span>
<button type="button" id="tasks-next" disabled>Next</button>
</div>
<script>
"use strict";
const TOKEN_KEY = "corral-token";
// A token in the address (?token=…, as a start message may print it) is kept
// for the session and taken out of the address bar and the history.
const pageQuery = new URLSearchParams(location.search);
if (pageQuery.has("token")) {
  sessionStorage.setItem(TOKEN_KEY, pageQuery.get("token"));
  pageQuery.delete("token");
  const rest = pageQuery.toString();
  history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
}
const tokenInput = document.getElementById("token");
tokenInput.value = sessionStorage.getItem(TOKEN_KEY) || "";
tokenInput.addEventListener("change", () => {
  sessionStorage.setItem(TOKEN_KEY, tokenInput.value);
  firstTasksPage();
  refresh();
  showDetailFromHash();
});
const notice = document.getElementById("notice");

function hasToken() {
  return tokenInput.value.trim() !== "";
}

function headers() {
  const token = tokenInput.value.trim();
  return token ? { "Authorization": "Bearer " + token } : {};
}

function say(...parts) {
  notice.replaceChildren(...parts);
}

function element(name, text, className) {
  const node = document.createElement(name);
  if (text !== undefined && text !== null) { node.textContent = text; }
  if (className) { node.className = className; }
  return node;
}

function link(href, text) {
  const anchor = element("a", text);
  anchor.href = href;
  return anchor;
}

function cell(row, text, className, label) {
  const td = element("td", text, className);
  if (label) { td.dataset.label = label; }
  row.appendChild(td);
  return td;
}

function time(millis) {
  return millis ? new Date(millis).toLocaleString() : "-";
}

function shortTime(millis) {
  return millis ? new Date(millis).toLocaleString([], { dateStyle: "short", timeStyle: "medium" }) : "-";
}

// The message of an error body: `message`, or a 422's messages by field.
function describe(body, response) {
  if (body && body.errors && typeof body.errors === "object") {
    const lines = [];
    for (const fields of Object.values(body.errors)) {
      for (const [field, messages] of Object.entries(fields || {})) {
        lines.push(field + ": " + [].concat(messages).join(" "));
      }
    }
    if (lines.length) { return lines.join("; "); }
  }
  return (body && body.message) || response.status + " " + response.statusText;
}

async function fetchJson(url, options) {
  const response = await fetch(url, Object.assign({ headers: headers() }, options || {}));
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(describe(body, response));
    error.status = response.status;
    throw error;
  }
  return { body, url: response.url, status: response.status };
}

// Rows are updated in place (keyed by plugin and host), so a button keeps
// working while the page refreshes under the pointer.
function showPlugins(plugins) {
  const body = document.querySelector("#plugins tbody");
  const seen = new Set();
  for (const plugin of plugins) {
    const host = plugin.host || "";
    seen.add(host + "\n" + plugin.plugin);
    let row = body.querySelector('tr[data-plugin="' + CSS.escape(plugin.plugin) + '"][data-host="' + CSS.escape(host) + '"]');
    if (!row) {
      row = document.createElement("tr");
      row.dataset.plugin = plugin.plugin;
      row.dataset.host = host;
      const columns = [["name title", "Plugin"], ["host", "Host"], ["version", "Version"], ["state", "State"],
        ["pid", "PID"], ["restarts", "Restarts"], ["exit", "Last exit"], ["waiting", "Waiting"], ["running", "Running"]];
      for (const [name, label] of columns) { cell(row, "", name, label); }
      const action = cell(row, "", "action");
      const button = element("button", "Restart", "restart");
      button.type = "button";
      button.addEventListener("click", () => restart(plugin.plugin, host, button));
      action.appendChild(button);
      body.appendChild(row);
    }
    const set = (name, text) => { row.querySelector("td." + name).textContent = text; };
    set("name", plugin.plugin);
    set("host", host);
    set("version", plugin.version || "-");
    set("state", plugin.state);
    row.querySelector("td.state").className = "state state-" + plugin.state;
    set("pid", plugin.pid ? String(plugin.pid) : "-");
    set("restarts", String(plugin.restarts));
    set("exit", plugin.error || plugin.lastExitReason || "-");
    set("waiting", String(plugin.waitingTasks || 0));
    set("running", String(plugin.runningTasks || 0));
  }
  for (const row of Array.from(body.rows)) {
    if (!seen.has(row.dataset.host + "\n" + row.dataset.plugin)) { row.remove(); }
  }
  const identifiers = new Set(plugins.map((plugin) => plugin.identifier).filter(Boolean));
  const list = document.getElementById("plugin-identifiers");
  const listed = Array.from(list.options).map((option) => option.value);
  const wanted = Array.from(identifiers).sort();
  if (listed.join("\n") !== wanted.join("\n")) {
    list.replaceChildren(...wanted.map((identifier) => {
      const option = document.createElement("option");
      option.value = identifier;
      return option;
    }));
  }
}

// Fills a table's body with rows of [text, className, label] cells; the
// first cell is the card's title on a small screen.
function showRows(selector, rows) {
  const body = document.querySelector(selector + " tbody");
  const labels = Array.from(document.querySelectorAll(selector + " thead th")).map((th) => th.textContent);
  body.replaceChildren();
  for (const cells of rows) {
    const row = document.createElement("tr");
    cells.forEach(([text, className], index) => {
      const classes = ((index === 0 ? "title " : "") + (className || "")).trim();
      cell(row, text, classes, labels[index]);
    });
    body.appendChild(row);
  }
}

function showHosts(hosts) {
  showRows("#hosts", (hosts || []).map((host) => {
    const state = !host.connected ? "unreachable" : host.draining ? "draining" : "up";
    const style = state === "up" ? "state-ready" : state === "draining" ? "state-stopping" : "state-failed";
    return [[host.url], [state, style], [String(host.ready)], [String(host.inFlight)]];
  }));
}

function showGateways(gateways) {
  showRows("#gateways", (gateways || []).map((gateway) => {
    const live = gateway.live === 1;
    return [[gateway.id, "id"], [gateway.url], [live ? "live" : "expired", live ? "state-ready" : "state-failed"],
      [String(gateway.running)], [new Date(gateway.startedAt).toLocaleString()]];
  }));
}

async function restart(plugin, host, button) {
  button.disabled = true;
  say("Restarting " + plugin + "…");
  try {
    const on = host ? "?host=" + encodeURIComponent(host) : "";
    const { body: status } = await fetchJson("../admin/plugins/" + encodeURIComponent(plugin) + "/restart/" + on, { method: "POST" });
    say("Restarted " + plugin + " (pid " + status.pid + ").");
    await refresh();
  } catch (error) {
    say("Could not restart " + plugin + ": " + error.message);
  } finally {
    button.disabled = false;
  }
}

// The task list: a filter, and pages followed through the answer's `next`
// link. `pages` holds the URL of every page up to the shown one (Previous).
const tasks = { pages: [], generation: 0, next: null };
const filterForm = document.getElementById("task-filter");

function firstTasksPage() {
  const query = new URLSearchParams();
  const data = new FormData(filterForm);
  for (const name of ["plugin", "status"]) {
    const value = String(data.get(name) || "").trim();
    if (value) { query.set(name, value); }
  }
  for (const name of ["since", "until"]) {
    // datetime-local is the browser's local time; the API takes Unix ms.
    const value = String(data.get(name) || "");
    const millis = value ? new Date(value).getTime() : NaN;
    if (!Number.isNaN(millis)) { query.set(name, String(millis)); }
  }
  query.set("limit", "20");
  tasks.pages = [new URL("../admin/tasks/?" + query, location.href).href];
  tasks.generation += 1;
}

filterForm.addEventListener("submit", (event) => {
  event.preventDefault();
  firstTasksPage();
  loadTasks();
});
filterForm.addEventListener("reset", () => {
  // After the form has cleared its fields.
  setTimeout(() => { firstTasksPage(); loadTasks(); });
});
document.getElementById("tasks-next").addEventListener("click", () => {
  if (tasks.next) { tasks.pages.push(tasks.next); tasks.generation += 1; loadTasks(); }
});
document.getElementById("tasks-previous").addEventListener("click", () => {
  if (tasks.pages.length > 1) { tasks.pages.pop(); tasks.generation += 1; loadTasks(); }
});

// Loads the shown page of tasks; an answer to an older request (the filter
// or page changed meanwhile) is dropped.
async function loadTasks() {
  const hint = document.getElementById("tasks-hint");
  if (!hasToken()) {
    hint.hidden = false;
    showTaskRows([]);
    tasks.next = null;
    showPager();
    return;
  }
  hint.hidden = true;
  const request = tasks.generation;
  const url = tasks.pages[tasks.pages.length - 1];
  try {
    const { body, url: answered } = await fetchJson(url);
    if (request !== tasks.generation) { return; }
    showTaskRows(body.tasks || []);
    tasks.next = body.next ? new URL(body.next, answered || url).href : null;
    showPager();
    if (notice.textContent.startsWith("Could not load tasks")) { say(""); }
  } catch (error) {
    if (request !== tasks.generation) { return; }
    if (error.status === 422) { showTaskRows([]); tasks.next = null; showPager(); }
    say("Could not load tasks: " + error.message);
  }
}

function showPager() {
  document.getElementById("tasks-previous").disabled = tasks.pages.length <= 1;
  document.getElementById("tasks-next").disabled = !tasks.next;
  document.getElementById("tasks-page").textContent = "Page " + Math.max(tasks.pages.length, 1);
}

// In place, keyed by task id, like the plugins: a link stays clickable while
// the list refreshes.
function showTaskRows(list) {
  const body = document.querySelector("#tasks tbody");
  const rows = new Map(Array.from(body.rows).map((row) => [row.dataset.task, row]));
  const shown = [];
  for (const task of list) {
    let row = rows.get(task.id);
    if (!row) {
      row = document.createElement("tr");
      row.dataset.task = task.id;
      const first = cell(row, "", "title id", "Task");
      first.appendChild(link("#task=" + encodeURIComponent(task.id), task.id));
      for (const [name, label] of [["plugin", "Plugin"], ["status", "Status"], ["created", "Created"],
        ["updated optional", "Updated"], ["attempts", "Attempts"]]) {
        cell(row, "", name, label);
      }
      row.querySelector("td.status").append(element("span"), " ", element("span", "", "phase"));
    }
    const set = (name, text) => { row.querySelector("td." + name).textContent = text; };
    row.classList.toggle("selected", task.id === detail.id);
    set("plugin", task.plugin);
    const [status, phase] = row.querySelectorAll("td.status span");
    status.textContent = task.status;
    status.className = "status-" + task.status;
    phase.textContent = task.phase ? "(" + task.phase + ")" : "";
    set("created", shortTime(task.createdAt));
    set("updated", shortTime(task.updatedAt));
    set("attempts", task.attempts === undefined ? "-" : String(task.attempts));
    shown.push(row);
  }
  for (const [id, row] of rows) {
    if (!list.some((task) => task.id === id)) { row.remove(); }
  }
  // A row moves only when its place changed (a moved link loses the focus).
  shown.forEach((row, index) => {
    if (body.rows[index] !== row) { body.insertBefore(row, body.rows[index] || null); }
  });
}

function markSelected() {
  for (const row of document.querySelectorAll("#tasks tbody tr")) {
    row.classList.toggle("selected", row.dataset.task === detail.id);
  }
}

// The detail of the task named in the address (#task=<id>).
const detail = { id: null, task: null, request: 0, scroll: false };
const detailPanel = document.getElementById("task-detail");
const cancelButton = document.getElementById("task-cancel");
const retryButton = document.getElementById("task-retry");

function hashTaskId() {
  const match = /^#task=([^&]+)/.exec(location.hash);
  return match ? decodeURIComponent(match[1]) : null;
}

function ended(task) {
  return task.status === "SUCCESS" || task.status === "FAILURE" || Boolean(task.finishedAt);
}

function showDetailFromHash() {
  const id = hashTaskId();
  if (!id) {
    detail.id = null;
    detail.task = null;
    detailPanel.hidden = true;
    markSelected();
    return;
  }
  const opened = id !== detail.id;
  detail.id = id;
  detailPanel.hidden = false;
  markSelected();
  document.getElementById("task-detail-id").textContent = id;
  if (opened) {
    detail.task = null;
    detail.scroll = true;
    showDetail(null);
  }
  // Before the first refresh, that refresh loads it (below the filled tables).
  if (document.body.dataset.loaded) { loadDetail(); }
}

window.addEventListener("hashchange", showDetailFromHash);
document.getElementById("task-detail-close").addEventListener("click", (event) => {
  event.preventDefault();
  history.replaceState(null, "", location.pathname + location.search);
  showDetailFromHash();
});

async function loadDetail() {
  const id = detail.id;
  if (!id) { return; }
  if (!hasToken()) {
    showDetail(null, "The task shows with the admin token.");
    return;
  }
  const request = ++detail.request;
  try {
    const { body } = await fetchJson("../admin/tasks/" + encodeURIComponent(id) + "/");
    if (request !== detail.request || id !== detail.id) { return; }
    detail.task = body;
    showDetail(body);
    // Once, when it opens: the tables above have their rows by now.
    if (detail.scroll) {
      detail.scroll = false;
      detailPanel.scrollIntoView({ block: "start" });
    }
  } catch (error) {
    if (request !== detail.request || id !== detail.id) { return; }
    showDetail(null, "Could not load the task: " + error.message);
  }
}

function field(list, name, label, value) {
  const wrapper = document.createElement("div");
  wrapper.dataset.field = name;
  const term = element("dt", label);
  const definition = element("dd");
  if (value instanceof Node) { definition.appendChild(value); } else { definition.textContent = value; }
  wrapper.append(term, definition);
  list.appendChild(wrapper);
  return definition;
}

function taskLinks(ids) {
  const span = document.createElement("span");
  ids.forEach((id, index) => {
    if (index > 0) { span.append(", "); }
    span.appendChild(link("#task=" + encodeURIComponent(id), id));
  });
  return span;
}

function showDetail(task, message) {
  const fields = document.getElementById("task-fields");
  const inputs = document.querySelector("#task-inputs tbody");
  const log = document.getElementById("task-log");
  const steps = document.getElementById("task-steps");
  const outputs = document.getElementById("task-outputs");
  cancelButton.hidden = !task || ended(task);
  retryButton.hidden = !task || !ended(task);
  if (!task) {
    fields.replaceChildren();
    if (message) { field(fields, "message", "", message); }
    inputs.replaceChildren();
    log.textContent = "";
    steps.replaceChildren();
    outputs.replaceChildren();
    return;
  }
  fields.replaceChildren();
  const status = field(fields, "status", "Status", task.status);
  status.className = "status-" + task.status;
  field(fields, "phase", "Phase", task.phase || (ended(task) ? "ended" : "-"));
  field(fields, "plugin", "Plugin", task.plugin);
  field(fields, "created", "Created", time(task.createdAt));
  field(fields, "updated", "Updated", time(task.updatedAt));
  field(fields, "finished", "Finished", time(task.finishedAt));
  field(fields, "attempts", "Attempts", task.attempts === undefined ? "-" : String(task.attempts));
  const owner = task.owner;
  field(fields, "gateway", "Gateway", owner ? owner.id + (owner.url ? " (" + owner.url + ")" : "") : "-");
  field(fields, "host", "Host", task.host || "-");
  if (task.progress) {
    const progress = task.progress;
    field(fields, "progress", "Progress", progress.value + " of " + progress.target + (progress.unit ? " " + progress.unit : ""));
  }
  field(fields, "retryOf", "Retry of", task.retryOf ? taskLinks([task.retryOf]) : "-");
  const retries = (task.retries || []).map((retry) => (typeof retry === "string" ? retry : retry.id));
  field(fields, "retries", "Retries", retries.length ? taskLinks(retries) : "-");
  field(fields, "href", "Task URL", task.href ? link(task.href, task.href) : "-");

  inputs.replaceChildren();
  const entries = Object.entries(task.inputs || {});
  for (const [name, value] of entries) {
    const row = document.createElement("tr");
    row.appendChild(element("th", name));
    row.appendChild(element("td", typeof value === "string" ? value : JSON.stringify(value)));
    inputs.appendChild(row);
  }
  if (!entries.length) {
    const row = document.createElement("tr");
    row.appendChild(element("td", "none", "hint"));
    inputs.appendChild(row);
  }

  // A reader at the end of the log stays at the end as lines come.
  const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  if (log.textContent !== (task.log || "")) {
    log.textContent = task.log || "";
    if (atEnd) { log.scrollTop = log.scrollHeight; }
  }

  steps.replaceChildren();
  (task.steps || []).forEach((step, index) => {
    const item = element("li", (step.stepId || "step " + (index + 1)) + (step.cleared ? ": submitted " : ": waiting "));
    if (step.uiHref && !step.cleared && !ended(task)) { item.appendChild(link(step.uiHref, "open its form")); }
    steps.appendChild(item);
  });
  if (!steps.children.length) { steps.appendChild(element("li", "none", "hint")); }

  outputs.replaceChildren();
  for (const output of task.outputs || []) {
    const item = document.createElement("li");
    item.appendChild(link(output.href, output.name || output.dataType || "output"));
    if (output.contentType) { item.append(" (" + output.contentType + ")"); }
    outputs.appendChild(item);
  }
  if (!outputs.children.length) {
    outputs.appendChild(element("li", ended(task) ? "none" : "when the task has ended", "hint"));
  }
}

cancelButton.addEventListener("click", async () => {
  const id = detail.id;
  if (!id) { return; }
  cancelButton.disabled = true;
  say("Cancelling task " + id + "…");
  try {
    const { body } = await fetchJson("../admin/tasks/" + encodeURIComponent(id) + "/cancel/", { method: "POST" });
    say("Cancelled task " + id + ": " + body.status + ".");
    if (id === detail.id) { detail.task = body; showDetail(body); }
    loadTasks();
  } catch (error) {
    say("Could not cancel task " + id + ": " + error.message);
  } finally {
    cancelButton.disabled = false;
  }
});

retryButton.addEventListener("click", async () => {
  const id = detail.id;
  if (!id) { return; }
  retryButton.disabled = true;
  say("Retrying task " + id + "…");
  try {
    const { body } = await fetchJson("../admin/tasks/" + encodeURIComponent(id) + "/retry/", { method: "POST" });
    say("Retried task " + id + " as ", link("#task=" + encodeURIComponent(body.id), body.id), ".");
    loadDetail();
    loadTasks();
  } catch (error) {
    say("Could not retry task " + id + ": " + error.message);
  } finally {
    retryButton.disabled = false;
  }
});

let refreshing = false;
async function refresh() {
  if (refreshing) { return; }
  refreshing = true;
  try {
    const { body: plugins } = await fetchJson("../admin/plugins/");
    showPlugins(plugins.plugins);
    showHosts(plugins.hosts);
    showGateways(plugins.gateways);
    // Everyone's tasks are for admins: without a token the list stays empty.
    await loadTasks();
    if (detail.id && (!detail.task || !ended(detail.task))) { await loadDetail(); }
    document.body.dataset.loaded = "true";
    if (notice.textContent.startsWith("Could not load:")) { say(""); }
  } catch (error) {
    say("Could not load: " + error.message);
  } finally {
    refreshing = false;
  }
}

firstTasksPage();
showDetailFromHash();
refresh();
setInterval(refresh, 1500);
</script>
</body>
</html>
"##;
