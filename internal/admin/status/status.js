// The status page's script: polls /v1/status once a second and fills the
// page. Every value is set as text, never as markup, since hostnames,
// client addresses and layer names come from the network.
"use strict";

const POLL_MS = 1000;
let token = sessionStorage.getItem("edgeproxy-token") || "";
let last = null; // the previous document and when it came, for rates

const $ = (id) => document.getElementById(id);

function fmtInt(n) {
  return Number(n || 0).toLocaleString("en-US");
}

function fmtBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = Number(n || 0);
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i === 0 ? v.toFixed(0) : v.toFixed(1)) + " " + units[i];
}

function setText(id, text) {
  const el = $(id);
  if (el.textContent !== text) el.textContent = text;
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

// fill replaces a table's rows with one per item, or a single row saying
// there is none.
function fill(tableId, items, row, empty) {
  const body = $(tableId).tBodies[0];
  const rows = [];
  for (const it of items || []) rows.push(row(it));
  if (rows.length === 0) {
    const tr = document.createElement("tr");
    tr.className = "empty";
    const td = cell(empty);
    td.colSpan = $(tableId).tHead.rows[0].cells.length;
    tr.appendChild(td);
    rows.push(tr);
  }
  body.replaceChildren(...rows);
}

function tr(...cells) {
  const r = document.createElement("tr");
  r.append(...cells);
  return r;
}

function alarm(id, n) {
  setText(id, fmtInt(n));
  $(id).parentElement.classList.toggle("firing", n > 0);
}

function render(s) {
  const n = s.node;
  setText("node", [n.name, n.role, n.region, n.version, "up " + n.uptime, n.goroutines + " goroutines"].filter(Boolean).join(" · "));
  const t = s.totals;
  setText("conns-active", fmtInt(t.connections_active));
  setText("conns-accepted", fmtInt(t.connections_accepted));
  setText("requests", fmtInt(t.requests));
  setText("errors", fmtInt(t.errors));
  setText("bytes-out", fmtBytes(t.bytes_out));
  alarm("spin-kills", t.spin_kills);
  alarm("zero-progress", t.zero_progress_reads);
  alarm("tripwire-trips", t.tripwire_trips);
  const now = Date.now();
  if (last) {
    const secs = (now - last.at) / 1000;
    const rate = secs > 0 ? (t.requests - last.doc.totals.requests) / secs : 0;
    setText("rps", rate.toFixed(rate < 10 ? 1 : 0));
  }
  last = { doc: s, at: now };

  const rows = [];
  for (const m of s.machines || []) {
    const loads = m.load && m.load.length ? m.load : [null];
    for (const l of loads) rows.push({ m, l });
  }
  fill("machines", rows, ({ m, l }) => {
    const health = !l ? "" : l.healthy ? "healthy" : "failing" + (l.unhealthy ? ": " + l.unhealthy : "");
    return tr(cell(m.app), cell(m.id), cell(m.region), cell(m.state + (m.cordoned ? " (cordoned)" : ""), m.state === "started" ? "good" : "warn"),
      cell(l ? String(l.internal_port) : ""), cell(l ? l.band : "", l && l.band !== "under_soft" ? "warn" : ""),
      cell(l ? fmtInt(l.load) : "", "num"), cell(health, l && !l.healthy ? "bad" : "good"), cell(l && l.response_time ? l.response_time : ""));
  }, "no machines");

  const f = s.fleet;
  $("fleet-section").hidden = !f;
  if (f) {
    setText("fleet-state", f.connected ? "(connected)" : "(disconnected: catalog " + f.catalog_age + " old)");
    $("fleet-state").className = f.connected ? "good" : "bad";
    fill("fleet", f.nodes, (x) => tr(cell(x.name), cell(x.role), cell(x.region), cell(x.version),
      cell(x.heartbeat_age + " ago", x.heartbeat_secs > 30 ? "bad" : "")), "no nodes seen");
  }

  fill("guard", s.guard, (g) => {
    const kills = Object.entries(g.kills || {}).map(([k, v]) => k + " " + v).join(", ");
    return tr(cell(g.layer), cell(fmtInt(g.reads), "num"), cell(fmtInt(g.zero_progress_reads), "num" + (g.zero_progress_reads ? " bad" : "")),
      cell(fmtInt(g.reads_after_eof), "num"), cell(kills || "none", kills ? "bad" : ""));
  }, "no guarded connections yet");
  const tw = s.tripwire;
  setText("tripwire-state", tw.enabled ? "(on: " + fmtInt(tw.trips) + " trips, profiles in " + tw.dir + ")" : "(off)");
  fill("profiles", tw.files, (p) => tr(cell(p.name), cell(p.time), cell(fmtInt(p.bytes), "num")), "no profiles written");

  const conn = (c) => tr(cell(String(c.id)), cell(c.peer), cell(String(c.port)), cell(c.app || ""), cell(c.age, "num"),
    cell(fmtBytes(c.bytes_in), "num"), cell(fmtBytes(c.bytes_out), "num"), cell(c.chain, "chain"));
  fill("busiest", s.busiest, conn, "no open connections");
  fill("oldest", s.oldest, conn, "no open connections");
  setText("updated", new Date().toLocaleTimeString());
}

function setState(text, cls) {
  setText("state", text);
  $("state").className = "state " + cls;
}

async function poll() {
  try {
    const headers = token ? { Authorization: "Bearer " + token } : {};
    const r = await fetch("/v1/status", { headers, cache: "no-store" });
    if (r.status === 401) {
      $("login").hidden = false;
      $("main").hidden = true;
      setState(token ? "token refused" : "token needed", "bad");
      return; // polling resumes when a token is entered
    }
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
    $("login").hidden = true;
    $("main").hidden = false;
    setState("live", "ok");
  } catch (e) {
    setState("unreachable: " + e.message, "bad");
  }
  setTimeout(poll, POLL_MS);
}

$("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token = $("token").value.trim();
  sessionStorage.setItem("edgeproxy-token", token);
  poll();
});

poll();
