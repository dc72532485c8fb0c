//! `/dashboard/`: plugins with their state and a restart button, recent tasks,
//! updated live by a little script; served from the binary (no CDN).

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
body { font-family: system-ui, sans-serif; margin: 0; padding: 1.5rem; color: #1d1d1f; background: #fafafa; }
h1 { font-size: 1.4rem; margin: 0 0 1rem; }
h2 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #e5e5e5; font-size: .92rem; }
th { background: #f0f0f0; }
.state { font-weight: 600; }
.state-ready { color: #137333; } .state-failed { color: #c5221f; }
.state-starting, .state-backoff, .state-stopping { color: #b06000; }
.status-SUCCESS { color: #137333; } .status-FAILURE { color: #c5221f; }
#token { width: 24rem; } #notice { margin: .5rem 0; min-height: 1.2rem; color: #555; }
button { cursor: pointer; }
</style>
</head>
<body>
<h1>Corral</h1>
<label>Admin token (for restarts and the task list; for everything with --require-auth):
  <input id="token" type="password" autocomplete="off"></label>
<div id="notice" role="status"></div>
<h2>Plugins</h2>
<table id="plugins"><thead><tr><th>Plugin</th><th>Host</th><th>Version</th><th>State</th><th>PID</th>
<th>Restarts</th><th>Last exit</th><th title="tasks waiting for a step">Waiting</th>
<th title="tasks whose call runs">Running</th><th></th></tr></thead><tbody></tbody></table>
<h2>Hosts</h2>
<table id="hosts"><thead><tr><th>Supervisor</th><th>State</th><th>Ready plugins</th>
<th title="this gateway's calls running there">In flight</th></tr></thead><tbody></tbody></table>
<h2>Gateways</h2>
<table id="gateways"><thead><tr><th>Lease</th><th>Address</th><th>State</th>
<th title="running tasks it owns">Running</th><th>Started</th></tr></thead><tbody></tbody></table>
<h2>Recent tasks</h2>
<table id="tasks"><thead><tr><th>Task</th><th>Plugin</th><th>Status</th><th>Created</th></tr></thead>
<tbody></tbody></table>
<script>
"use strict";
const tokenInput = document.getElementById("token");
tokenInput.value = sessionStorage.getItem("corral-token") || "";
tokenInput.addEventListener("change", () => { sessionStorage.setItem("corral-token", tokenInput.value); refresh(); });
const notice = document.getElementById("notice");

function headers() {
  const token = tokenInput.value.trim();
  return token ? { "Authorization": "Bearer " + token } : {};
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) { td.className = className; }
  row.appendChild(td);
  return td;
}

async function fetchJson(url, options) {
  const response = await fetch(url, Object.assign({ headers: headers() }, options || {}));
  const body = await response.json().catch(() => ({}));
  if (!response.ok) { throw new Error(body.message || response.statusText); }
  return body;
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
      for (const name of ["name", "host", "version", "state", "pid", "restarts", "exit", "waiting", "running"]) { cell(row, "", name); }
      const action = cell(row, "");
      const button = document.createElement("button");
      button.textContent = "Restart";
      button.className = "restart";
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
}

function showRows(selector, rows) {
  const body = document.querySelector(selector + " tbody");
  body.replaceChildren();
  for (const cells of rows) {
    const row = document.createElement("tr");
    for (const [text, className] of cells) { cell(row, text, className); }
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
    return [[gateway.id], [gateway.url], [live ? "live" : "expired", live ? "state-ready" : "state-failed"],
      [String(gateway.running)], [new Date(gateway.startedAt).toLocaleString()]];
  }));
}

function showTasks(tasks) {
  const body = document.querySelector("#tasks tbody");
  body.replaceChildren();
  for (const task of tasks) {
    const row = document.createElement("tr");
    const link = document.createElement("a");
    link.href = "../tasks/" + encodeURIComponent(task.id) + "/";
    link.textContent = task.id;
    const first = document.createElement("td");
    first.appendChild(link);
    row.appendChild(first);
    cell(row, task.plugin);
    cell(row, task.status, "status-" + task.status);
    cell(row, new Date(task.createdAt).toLocaleString());
    body.appendChild(row);
  }
}

async function restart(plugin, host, button) {
  button.disabled = true;
  notice.textContent = "Restarting " + plugin + "…";
  try {
    const on = host ? "?host=" + encodeURIComponent(host) : "";
    const status = await fetchJson("../admin/plugins/" + encodeURIComponent(plugin) + "/restart/" + on, { method: "POST" });
    notice.textContent = "Restarted " + plugin + " (pid " + status.pid + ").";
    await refresh();
  } catch (error) {
    notice.textContent = "Could not restart " + plugin + ": " + error.message;
  } finally {
    button.disabled = false;
  }
}

let refreshing = false;
async function refresh() {
  if (refreshing) { return; }
  refreshing = true;
  try {
    const plugins = await fetchJson("../admin/plugins/");
    // Everyone's tasks are for admins: without a token the list stays empty.
    const tasks = tokenInput.value.trim()
      ? await fetchJson("../admin/tasks/?limit=20")
      : { tasks: [] };
    showPlugins(plugins.plugins);
    showHosts(plugins.hosts);
    showGateways(plugins.gateways);
    showTasks(tasks.tasks);
    document.body.dataset.loaded = "true";
    if (notice.textContent.startsWith("Could not load")) { notice.textContent = ""; }
  } catch (error) {
    notice.textContent = "Could not load: " + error.message;
  } finally {
    refreshing = false;
  }
}

refresh();
setInterval(refresh, 1500);
</script>
</body>
</html>
"##;
