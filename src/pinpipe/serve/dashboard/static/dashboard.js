// pinpipe dashboard: polls /api/live and /api/batch every 2 s and redraws in place.
// Plain DOM + inline SVG; data is only ever set with textContent (never parsed as HTML).
"use strict";

const POLL_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

function fmt(n, digits = 0) {
  if (n === null || n === undefined || Number.isNaN(n)) return "-";
  return Number(n).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
}
function seconds(s) {
  if (s === null || s === undefined) return "-";
  return s < 1 ? `${fmt(s * 1000)} ms` : `${fmt(s, 2)} s`;
}
function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}
function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = String(text);
  return node;
}
function fillRows(tableId, rows, emptyText) {
  const body = $(tableId).querySelector("tbody");
  body.replaceChildren();
  if (!rows.length) {
    const tr = el("tr");
    const td = el("td", emptyText, "empty");
    td.colSpan = $(tableId).querySelectorAll("th").length;
    tr.append(td);
    body.append(tr);
    return;
  }
  for (const cells of rows) {
    const tr = el("tr");
    for (const cell of cells) tr.append(cell instanceof Node ? cell : el("td", cell, typeof cell === "number" ? "num" : ""));
    body.append(tr);
  }
}
function badge(text, kind) {
  const td = el("td");
  td.append(el("span", text, `badge ${kind}`));
  return td;
}

// --- charts ----------------------------------------------------------------------------------

function lineChart(node, series, colors) {
  // series: {name: [values]} sharing one x axis (oldest first)
  const w = 800, h = 160, pad = 24;
  node.replaceChildren();
  const all = Object.values(series).flat();
  const max = Math.max(1, ...all);
  const n = Math.max(2, ...Object.values(series).map((v) => v.length));
  node.append(svg("line", { x1: pad, y1: h - pad, x2: w, y2: h - pad, stroke: "#e3e6eb" }));
  node.append(svg("text", { x: 2, y: 12, "font-size": 11, fill: "#6b7280" }, fmt(max)));
  node.append(svg("text", { x: 2, y: h - pad, "font-size": 11, fill: "#6b7280" }, "0"));
  Object.entries(series).forEach(([name, values], i) => {
    const points = values.map((v, j) => `${pad + (j * (w - pad)) / (n - 1)},${h - pad - (v / max) * (h - 2 * pad)}`);
    if (points.length) node.append(svg("polyline", { points: points.join(" "), fill: "none", stroke: colors[i], "stroke-width": 2 }));
    node.append(svg("text", { x: pad + 8 + i * 150, y: h - 4, "font-size": 12, fill: colors[i] }, name));
  });
}

function barChart(node, items, { width = 400, barH = 20, gap = 6, color = "#2563eb", digits = 0 } = {}) {
  // items: [{label, value}] drawn as horizontal bars
  node.replaceChildren();
  const labelW = Math.min(170, width * 0.42);
  const height = Math.max(barH, items.length * (barH + gap));
  node.setAttribute("viewBox", `0 0 ${width} ${height}`);
  node.style.height = `${height}px`;
  if (!items.length) {
    node.append(svg("text", { x: 4, y: 16, "font-size": 12, fill: "#6b7280" }, "no data yet"));
    return;
  }
  const max = Math.max(...items.map((d) => d.value || 0), 1e-9);
  items.forEach((d, i) => {
    const y = i * (barH + gap);
    const bw = Math.max(1, ((d.value || 0) / max) * (width - labelW - 60));
    node.append(svg("text", { x: labelW - 6, y: y + barH * 0.72, "font-size": 12, "text-anchor": "end", fill: "#1d2330" },
      String(d.label).slice(0, 28)));
    node.append(svg("rect", { x: labelW, y, width: bw, height: barH, rx: 3, fill: color }));
    node.append(svg("text", { x: labelW + bw + 4, y: y + barH * 0.72, "font-size": 12, fill: "#1d2330" }, fmt(d.value, digits)));
  });
}

// --- live ------------------------------------------------------------------------------------

function renderLive(live) {
  const ingest = live.ingest || {};
  $("ingest-rate").textContent = ingest.up ? fmt(ingest.accepted_per_s, 1) : "down";
  $("ingest-accepted").textContent = fmt(ingest.accepted_total);
  $("ingest-rejected").textContent = fmt(ingest.rejected_total);
  $("ingest-rejected-rate").textContent = `${fmt(ingest.rejected_per_s, 1)}/s to the dead-letter topic`;
  const history = ingest.history || [];
  lineChart($("rate-chart"), {
    "accepted/s": history.map((p) => p.accepted_per_s),
    "rejected/s": history.map((p) => p.rejected_per_s),
  }, ["#2563eb", "#c8232c"]);

  const stream = live.stream || {};
  $("stream-latency").textContent = stream.latency_p50_s == null ? "-" : `${seconds(stream.latency_p50_s)} / ${seconds(stream.latency_p99_s)}`;
  $("stream-latency-source").textContent = stream.latency_source === "metrics"
    ? "broker → PostgreSQL (stream metrics)"
    : `broker → PostgreSQL, rows of the last ${stream.window_minutes || 5} min · ${fmt(stream.batches)} batches`;

  const rows = live.rows || {};
  const total = (rows.pin || 0) + (rows.geo || 0) + (rows.user || 0);
  $("rows-total").textContent = live.postgres && live.postgres.up ? fmt(total) : "down";
  for (const name of ["pin", "geo", "user", "dead_letter"]) $(`rows-${name}`).textContent = fmt(rows[name]);

  fillRows("components", (live.components || []).map((c) => [
    c.component,
    c.up && c.broker_up === false ? badge("no broker", "bad") : badge(c.up ? "up" : "down", c.up ? "ok" : "bad"),
    c.lag === undefined ? "n/a" : c.lag === null ? "-" : fmt(c.lag),
    c.records_total == null ? "-" : fmt(c.records_total),
    c.up ? c.url : `${c.url} (${c.error})`,
  ]), "no components configured");
  $("pg-status").textContent = live.postgres && !live.postgres.up ? `PostgreSQL: ${live.postgres.error}` : "";
  const lost = (live.components || []).reduce((n, c) => n + (c.records_lost_total || 0), 0);
  $("lost-status").textContent = lost
    ? `LOST ${fmt(lost)} acknowledged records: the broker came back empty before the lake had them (pinpipe lake verify names them)`
    : "";

  const rt = live.realtime || {};
  barChart($("categories-chart"), (rt.categories || []).map((c) => ({ label: c.category, value: c.events })));
  fillRows("posters", (rt.posters || []).map((p) => [p.poster_name, p.posts, p.max_follower_count == null ? "-" : fmt(p.max_follower_count)]), "no posts in the current window yet");
  fillRows("countries", (rt.countries || []).map((c) => [c.country, c.events]), "no geo events yet");
}

// --- batch -----------------------------------------------------------------------------------

const NUMERIC = /count|median|number|follower/;

function renderAnswer(name, answer) {
  const box = el("div", null, "answer");
  box.id = `answer-${name}`;
  box.append(el("h3", name.replaceAll("_", " ")));
  const cols = answer.columns || [];
  const rows = answer.rows || [];
  if (!rows.length) {
    box.append(el("p", "no rows yet: run the batch job", "empty"));
    return box;
  }
  const valueCol = cols.length - 1;
  if (NUMERIC.test(cols[valueCol]) && rows.length <= 25) {
    const chart = svg("svg", { role: "img", "aria-label": name });
    box.append(chart);
    barChart(chart, rows.map((r) => ({
      label: r.slice(0, valueCol).filter((v) => v !== null).join(" · "),
      value: r[valueCol],
    })), { width: 420, barH: 14, gap: 4, color: "#c8232c", digits: cols[valueCol].startsWith("median") ? 1 : 0 });
  }
  const table = el("table");
  const head = el("tr");
  cols.forEach((c) => head.append(el("th", c)));
  table.append(el("thead"));
  table.tHead.append(head);
  const body = el("tbody");
  for (const r of rows) {
    const tr = el("tr");
    r.forEach((v, i) => {
      const plain = typeof v !== "number" || cols[i].endsWith("year");  // 2018, not 2,018
      tr.append(el("td", plain ? v : fmt(v, Number.isInteger(v) ? 0 : 1), typeof v === "number" ? "num" : ""));
    });
    body.append(tr);
  }
  table.append(body);
  box.append(table);
  return box;
}

function renderBatch(batch) {
  const counts = batch.run_counts || {};
  const last = batch.last_success ? new Date(batch.last_success * 1000).toLocaleString() : "never";
  $("batch-runs-summary").textContent = `(runs: ${fmt(counts.success)} succeeded, ${fmt(counts.failed)} failed · last success ${last})`;
  fillRows("runs", (batch.runs || []).map((r) => [
    r.run_id,
    badge(r.status, r.status === "success" ? "ok" : r.status === "failed" ? "bad" : "warn"),
    r.started_at ? new Date(r.started_at).toLocaleString() : "-",
    r.finished_at ? new Date(r.finished_at).toLocaleString() : "-",
    r.dates || "",
    r.error || "",
  ]), "no batch run recorded yet");

  const container = $("answers");
  container.replaceChildren(...Object.entries(batch.answers || {}).map(([name, answer]) => renderAnswer(name, answer)));

  const quality = batch.quality;
  const qb = $("quality-badge");
  if (!quality) {
    qb.textContent = "no report yet";
    qb.className = "badge";
    fillRows("quality", [], "the batch job writes <lake>/answers/_quality_report.json");
    $("quality-counts").replaceChildren();
    return;
  }
  qb.textContent = quality.passed ? "all checks passed" : "checks failed";
  qb.className = `badge ${quality.passed ? "ok" : "bad"}`;
  const checks = [...(quality.checks || [])].sort((a, b) => Number(a.passed) - Number(b.passed));
  fillRows("quality", checks.map((c) => [c.name, badge(c.passed ? "pass" : "fail", c.passed ? "ok" : "bad"), c.detail]), "no checks");
  const tables = (quality.figures && quality.figures.tables) || [];
  const t = el("table");
  t.append(el("thead"));
  const head = el("tr");
  ["table", "raw", "clean", "duplicates", "quarantined"].forEach((c) => head.append(el("th", c)));
  t.tHead.append(head);
  const body = el("tbody");
  for (const row of tables) {
    const tr = el("tr");
    [row.table, row.raw, row.clean, row.duplicates, row.quarantined].forEach((v, i) => tr.append(el("td", i ? fmt(v) : v, i ? "num" : "")));
    body.append(tr);
  }
  t.append(body);
  $("quality-counts").replaceChildren(t);
}

// --- polling ---------------------------------------------------------------------------------

async function getJSON(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

async function poll() {
  const conn = $("conn");
  try {
    const [live, batch] = await Promise.all([getJSON("/api/live"), getJSON("/api/batch")]);
    renderLive(live);
    renderBatch(batch);
    $("updated").textContent = new Date().toLocaleTimeString();
    conn.textContent = "live";
    conn.className = "badge ok";
  } catch (error) {
    conn.textContent = `not updating: ${error.message}`;
    conn.className = "badge bad";
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
