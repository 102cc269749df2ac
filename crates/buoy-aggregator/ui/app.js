// Buoy's status page: polls /api/v1/overview and draws it. Every text from the server (plugin
// and node names, messages, reasons) goes in through textContent, never as markup.
"use strict";

const POLL_MS = 1500;
const DONE_POLL_MS = 10000;
const PAGE = 200;
const cards = new Map();
let lastOk = 0;

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
const fmt = (n) => Number(n).toLocaleString("en-US");
function bytes(n) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}
const WORDS = {
  "running": "● Running", "post-processing": "◐ Post-processing",
  "complete": "✓ Complete", "failed": "✗ Failed", "lost": "✗ Aggregator unreachable",
};

function stat(n, label) {
  const d = el("div", "stat");
  d.append(el("div", "n", fmt(n)), el("div", "l", label));
  return d;
}

function drawTotals(o) {
  const t = { expected: 0, complete: 0, failed: 0, remaining: 0 };
  for (const p of o.plugins) for (const k in t) t[k] += p[k];
  document.getElementById("totals").replaceChildren(
    stat(o.plugins.length, o.plugins.length === 1 ? "plugin" : "plugins"),
    stat(t.expected, "results expected"),
    stat(t.complete, "received"),
    stat(t.failed, "failed"),
    stat(t.remaining, "remaining"),
  );
}

function drawTarball(o) {
  const box = document.getElementById("tarball");
  if (!o.tarball) { box.hidden = true; return; }
  const a = el("a", null, "Download " + o.tarball.name);
  a.href = "/api/v1/tarball";
  a.setAttribute("download", o.tarball.name);
  const p = el("div");
  p.append(el("strong", null, "✓ Results sealed. "), a, el("span", "muted", " (" + bytes(o.tarball.size) + ")"));
  box.replaceChildren(p, el("div", "sha", "SHA-256 " + o.tarball.sha256));
  box.hidden = false;
}

// One card per plugin; built once so an open node list and its page survive updates.
function card(name) {
  let c = cards.get(name);
  if (c) return c;
  const root = el("article", "card");
  root.dataset.plugin = name;
  const h = el("h2");
  const state = el("span", "badge");
  h.append(el("span", "name", name), state);
  const counts = el("div", "counts");
  const bar = el("div", "bar");
  bar.setAttribute("role", "img");
  const ok = el("span", "ok"), bad = el("span", "bad");
  bar.append(ok, bad);
  const legend = el("div", "legend");
  const progress = el("div", "progress");
  const results = el("div", "results");
  const errors = el("div", "errors");
  const nodes = el("details", "nodes");
  const sum = el("summary", null, "Nodes");
  nodes.append(sum);
  const view = { offset: 0, state: "" };
  nodes.addEventListener("toggle", () => { if (nodes.open) loadNodes(name, c); });
  root.append(h, counts, bar, legend, progress, results, errors, nodes);
  document.getElementById("plugins").append(root);
  c = { root, state, counts, bar, ok, bad, legend, progress, results, errors, nodes, sum, view, body: null };
  cards.set(name, c);
  return c;
}

function legendItem(cls, text) {
  const s = el("span");
  s.append(el("span", "sw " + cls), document.createTextNode(text));
  return s;
}

function drawPlugin(p) {
  const c = card(p.plugin);
  const r = c.root.dataset;
  r.expected = p.expected; r.complete = p.complete; r.failed = p.failed; r.remaining = p.remaining;
  const pct = (n) => (p.expected ? (100 * n) / p.expected : 0);
  c.ok.style.width = pct(p.complete) + "%";
  c.bad.style.width = pct(p.failed) + "%";
  const done = p.remaining === 0;
  const word = !done ? "running" : p.failed ? "failed" : "complete";
  c.state.className = "badge " + word;
  c.state.textContent = !done ? "● Running" : p.failed ? "✗ " + fmt(p.failed) + " failed" : "✓ All received";
  let text = fmt(p.complete) + " of " + fmt(p.expected) + " received";
  if (p.failed) text += " · " + fmt(p.failed) + " failed" + (p.timed_out ? " (" + fmt(p.timed_out) + " timed out)" : "");
  if (p.remaining) text += " · " + fmt(p.remaining) + " remaining";
  c.counts.textContent = text;
  c.bar.setAttribute("aria-label", text);
  c.legend.replaceChildren(
    legendItem("ok", "received " + fmt(p.complete)),
    legendItem("bad", "failed " + fmt(p.failed)),
    legendItem("todo", "remaining " + fmt(p.remaining)),
  );

  c.progress.replaceChildren();
  if (p.progress) {
    const g = p.progress;
    const line = el("div");
    line.append(el("strong", null, "Progress: "));
    if (g.total > 0) line.append(fmt(g.completed) + " of " + fmt(g.total));
    else if (g.completed > 0) line.append(fmt(g.completed) + " done");
    if (g.failures) line.append(" · " + fmt(g.failures) + " failing");
    c.progress.append(line);
    if (g.total > 0) {
      const t = el("div", "tests"), f = el("span");
      f.style.width = Math.min(100, (100 * g.completed) / g.total) + "%";
      t.setAttribute("role", "progressbar");
      t.setAttribute("aria-valuemin", "0");
      t.setAttribute("aria-valuemax", String(g.total));
      t.setAttribute("aria-valuenow", String(g.completed));
      t.append(f);
      c.progress.append(t);
    }
    if (g.msg) {
      const m = el("div");
      m.append(el("span", "msg", g.msg), el("span", "muted", "  — " + g.node + (g.timestamp ? ", " + g.timestamp.replace("T", " ").replace(/\.\d+/, "") : "")));
      c.progress.append(m);
    }
  }

  c.results.replaceChildren();
  if (p.results) {
    const s = p.results;
    const line = el("div");
    line.append(el("strong", null, "Results: "), el("span", "verdict " + (s.status === "passed" ? "passed" : "failed"), s.status === "passed" ? "✓ passed" : "✗ " + s.status));
    line.append(" · " + fmt(s.total) + " total · " + fmt(s.passed) + " passed · " + fmt(s.failed) + " failed · " + fmt(s.skipped) + " skipped");
    c.results.append(line);
    if (s.error) c.results.append(el("div", "retry", s.error));
    if (s.failed_tests.length) {
      const d = el("details");
      d.open = s.failed_tests.length <= 10;
      d.append(el("summary", null, "Failed tests (" + fmt(s.failed_tests_total) + ")"));
      const ul = el("ul", "list");
      for (const t of s.failed_tests) ul.append(el("li", null, t));
      if (s.failed_tests_total > s.failed_tests.length) ul.append(el("li", "muted", "and " + fmt(s.failed_tests_total - s.failed_tests.length) + " more: buoy results TARBALL"));
      d.append(ul);
      c.results.append(d);
    }
  }

  c.errors.replaceChildren();
  if (p.errors_total) {
    c.errors.append(el("strong", null, "Errors (" + fmt(p.errors_total) + ")"));
    const ul = el("ul", "list");
    for (const e of p.errors) {
      const li = el("li");
      li.append(el("span", "node", e.node), document.createTextNode(": "));
      if (e.retrying) li.append(el("span", "retry", "upload failed, waiting for a retry: "));
      li.append(document.createTextNode(e.reason));
      ul.append(li);
    }
    if (p.errors_total > p.errors.length) ul.append(el("li", "muted", "and " + fmt(p.errors_total - p.errors.length) + " more (open Nodes, filter failed)"));
    c.errors.append(ul);
  }

  c.sum.textContent = "Nodes (" + fmt(p.expected) + ")";
  if (c.nodes.open) loadNodes(p.plugin, c);
}

async function loadNodes(name, c) {
  const q = new URLSearchParams({ plugin: name, offset: c.view.offset, limit: PAGE });
  if (c.view.state) q.set("state", c.view.state);
  let page;
  try {
    const r = await fetch("/api/v1/nodes?" + q);
    if (!r.ok) return;
    page = await r.json();
  } catch (_) { return; }
  if (!c.body) {
    const pager = el("div", "pager");
    const filter = el("select");
    filter.setAttribute("aria-label", "Show nodes");
    for (const [v, t] of [["", "all nodes"], ["running", "running"], ["complete", "received"], ["failed", "failed"]]) {
      const o = el("option", null, t); o.value = v; filter.append(o);
    }
    const prev = el("button", null, "‹ Previous"), next = el("button", null, "Next ›");
    const where = el("span", "muted");
    filter.addEventListener("change", () => { c.view.state = filter.value; c.view.offset = 0; loadNodes(name, c); });
    prev.addEventListener("click", () => { c.view.offset = Math.max(0, c.view.offset - PAGE); loadNodes(name, c); });
    next.addEventListener("click", () => { c.view.offset += PAGE; loadNodes(name, c); });
    pager.append(filter, prev, next, where);
    const table = el("table", "nodes");
    const head = el("tr");
    for (const t of ["Node", "Status", "Result", "Progress", "Error"]) head.append(el("th", null, t));
    const thead = el("thead"); thead.append(head);
    const tbody = el("tbody");
    table.append(thead, tbody);
    c.nodes.append(pager, table);
    c.body = { tbody, prev, next, where };
  }
  const b = c.body;
  const rows = page.nodes.map((n) => {
    const tr = el("tr");
    const sym = { complete: "✓ received", failed: "✗ failed", running: "● running" }[n.status] || n.status;
    let prog = "";
    if (n.progress) prog = (n.progress.total > 0 ? n.progress.completed + "/" + n.progress.total + " " : "") + n.progress.msg;
    tr.append(el("td", null, n.node), el("td", "st-" + n.status, sym), el("td", null, n.result_status || ""), el("td", null, prog), el("td", null, n.error || ""));
    return tr;
  });
  b.tbody.replaceChildren(...rows);
  const last = Math.min(page.offset + page.nodes.length, page.total);
  b.where.textContent = page.total ? fmt(page.offset + 1) + "–" + fmt(last) + " of " + fmt(page.total) : "none";
  b.prev.disabled = page.offset === 0;
  b.next.disabled = last >= page.total;
}

function drawRun(o) {
  document.body.dataset.status = o.status;
  const s = document.getElementById("run-state");
  s.className = "badge " + o.status;
  s.textContent = WORDS[o.status] || o.status;
  document.getElementById("run-detail").textContent = (o.seal_error ? "sealing failed (retrying): " + o.seal_error + " · " : "") + "updated " + new Date().toLocaleTimeString();
  document.title = (WORDS[o.status] || o.status).replace(/^\S+ /, "") + " · Buoy";
}

function draw(o) {
  drawRun(o);
  drawTotals(o);
  drawTarball(o);
  for (const p of o.plugins) drawPlugin(p);
  if (!document.body.dataset.ready) {
    document.body.dataset.loadMs = Math.round(performance.now());
    document.body.dataset.ready = "1";
  }
}

async function poll() {
  let next = POLL_MS;
  try {
    const r = await fetch("/api/v1/overview", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    const o = await r.json();
    lastOk = Date.now();
    document.getElementById("link").textContent = "";
    draw(o);
    if (o.status === "complete") next = DONE_POLL_MS;
  } catch (e) {
    const s = document.getElementById("run-state");
    s.className = "badge lost";
    s.textContent = WORDS.lost;
    document.getElementById("link").textContent = lastOk
      ? "Last contact " + new Date(lastOk).toLocaleTimeString() + "; showing what was known then. Retrying…"
      : "Cannot reach the aggregator (" + e.message + "). Retrying…";
    next = 3000;
  }
  setTimeout(poll, next);
}

poll();
