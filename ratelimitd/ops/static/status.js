// ratelimitd status page: polls /v1/status (in pages, without history) and redraws in place.
// No library and nothing fetched from elsewhere: it works offline, from the daemon alone.
"use strict";

const POLL_MS = 1000;
const WINDOW_S = 300; // the chart's last minutes
const PAGE = 1000; // providers per status request
const MAX_EVENTS = 50;
const PERIOD_NAMES = { 1: "s", 60: "min", 3600: "h", 86400: "day" };

const series = new Map(); // "provider/bucket" -> [{t, rate, baseline, shadow}]
const lastReason = new Map(); // "provider/bucket" -> "reason@since", to see new events
const events = [];
let first = true;

// The one rate format of ratelimitd (core/rates.py format_rate): 4 significant digits, the
// limit's own period, thousands separated from 10,000 up.
function formatRate(perSecond, period) {
  if (typeof perSecond !== "number" || !isFinite(perSecond) || perSecond < 0) return "-";
  if (!period || period <= 0) {
    period = 86400;
    for (const seconds of [1, 60, 3600]) {
      if (perSecond * seconds >= 1) { period = seconds; break; }
    }
  }
  const amount = perSecond * period;
  const text = amount >= 10000
    ? Math.round(amount).toLocaleString("en-US")
    : String(Number(amount.toPrecision(4)));
  return `${text}/${PERIOD_NAMES[period] || `${period}s`}`;
}

// A duration for people, as `ratelimitd status` writes it: 0.4s, 12s, 3m05s, 2h03m, 4d02h.
function formatAge(seconds) {
  seconds = Math.max(0, seconds);
  if (seconds < 10) return `${seconds.toFixed(1)}s`;
  const s = Math.floor(seconds);
  const pad = (n) => String(n).padStart(2, "0");
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${pad(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${pad(Math.floor((s % 3600) / 60))}m`;
  return `${Math.floor(s / 86400)}d${pad(Math.floor((s % 86400) / 3600))}h`;
}

function ago(at, now) {
  return typeof at === "number" ? `${formatAge(now - at)} ago` : "-";
}

async function fetchStatus() {
  const providers = {};
  let daemon = null;
  let after = null;
  do {
    const query = new URLSearchParams({ history: "false", limit: String(PAGE) });
    if (after) query.set("after", after);
    const response = await fetch(`v1/status?${query}`, { cache: "no-store" });
    if (!response.ok) throw new Error(`/v1/status answered ${response.status}`);
    const body = await response.json();
    Object.assign(providers, body.providers || {});
    daemon = body.daemon || daemon;
    after = typeof body.next === "string" ? body.next : null;
  } while (after);
  return { providers, daemon };
}

function primary(bucket) {
  const limits = bucket.limits || {};
  const unit = "requests" in limits ? "requests" : Object.keys(limits)[0];
  return unit ? { unit, ...limits[unit] } : null;
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function drawChart(canvas, points, now) {
  const ratio = window.devicePixelRatio || 1;
  const width = 220, height = 40;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  ctx.clearRect(0, 0, width, height);
  if (points.length === 0) return;
  const top = Math.max(...points.map((p) => Math.max(p.rate, p.baseline, p.shadow))) * 1.1 || 1;
  // The span shown grows with what this page has seen (at least 30 s), up to WINDOW_S.
  const span = Math.min(WINDOW_S, Math.max(30, now - points[0].t));
  const x = (t) => width - ((now - t) / span) * width;
  const y = (v) => height - 2 - (v / top) * (height - 4);
  const line = (key, color, dash) => {
    ctx.beginPath();
    ctx.setLineDash(dash);
    ctx.strokeStyle = color;
    ctx.lineWidth = 1.5;
    points.forEach((p, i) => (i ? ctx.lineTo(x(p.t), y(p[key])) : ctx.moveTo(x(p.t), y(p[key]))));
    if (points.length === 1) ctx.lineTo(width, y(points[0][key]));
    ctx.stroke();
  };
  line("baseline", "#9ca3af", [4, 3]);
  line("shadow", "#a16207", [1, 2]);
  line("rate", "#1d4ed8", []);
}

function noteEvents(providers, now) {
  for (const [name, provider] of Object.entries(providers)) {
    for (const [bucketName, bucket] of Object.entries(provider.buckets || {})) {
      const ev = bucket.events || {};
      if (typeof ev.reason !== "string") continue;
      const key = `${name}/${bucketName}`;
      const mark = `${ev.reason}@${ev.reason_since}`;
      if (lastReason.get(key) === mark) continue;
      lastReason.set(key, mark);
      const limit = primary(bucket);
      const entry = {
        at: ev.reason_since, key, reason: ev.reason, state: bucket.state,
        rate: limit ? formatRate(limit.rate, limit.period) : "-",
      };
      // Steps of one climb (or one storm) are one line: the bucket's latest, updated.
      const latest = events.find((e) => e.key === key);
      if (latest && latest.reason === entry.reason) Object.assign(latest, entry);
      else events.unshift(entry);
    }
  }
  events.sort((a, b) => b.at - a.at);
  events.splice(MAX_EVENTS);
}

function renderEvents(now) {
  const list = document.getElementById("events");
  list.replaceChildren(...events.map((ev) => {
    const li = document.createElement("li");
    const time = document.createElement("time");
    time.textContent = new Date(ev.at * 1000).toLocaleTimeString();
    time.title = `${formatAge(now - ev.at)} ago`;
    li.append(time, `${ev.key}: ${ev.reason} → ${ev.state}, rate ${ev.rate}`);
    return li;
  }));
  document.getElementById("no-events").hidden = events.length > 0;
}

function renderDaemon(daemon) {
  const badge = document.getElementById("daemon");
  const problems = [];
  if (daemon && daemon.ready === false) {
    badge.dataset.state = "not-ready";
    badge.textContent = "not ready";
    for (const [k, v] of Object.entries(daemon.not_ready || {})) problems.push(`${k}: ${v}`);
  } else {
    badge.dataset.state = "ready";
    badge.textContent = "ready";
  }
  const reload = (daemon && daemon.reload) || {};
  if (reload.ok === false) problems.push(`the last reload failed (running the previous configuration): ${reload.error}`);
  const box = document.getElementById("problems");
  box.textContent = problems.join(" · ");
  box.hidden = problems.length === 0;
}

function render(providers, daemon) {
  const now = Date.now() / 1000;
  renderDaemon(daemon);
  noteEvents(providers, now);
  const body = document.querySelector("#buckets tbody");
  const rows = [];
  for (const name of Object.keys(providers).sort()) {
    for (const [bucketName, bucket] of Object.entries(providers[name].buckets || {})) {
      const key = `${name}/${bucketName}`;
      const limit = primary(bucket);
      const points = series.get(key) || [];
      if (limit) {
        points.push({ t: now, rate: limit.rate, baseline: limit.baseline, shadow: limit.shadow_rate });
        while (points.length && points[0].t < now - WINDOW_S) points.shift();
        series.set(key, points);
      }
      const ev = bucket.events || {};
      const row = document.createElement("tr");
      row.dataset.key = key;
      row.dataset.state = bucket.state;
      if (limit && limit.rate < limit.baseline) row.classList.add("cut");
      cell(row, name);
      cell(row, bucketName);
      const state = cell(row, "");
      const badge = document.createElement("span");
      badge.className = `state state-${bucket.state}`;
      badge.textContent = bucket.state;
      state.appendChild(badge);
      const rate = limit ? formatRate(limit.rate, limit.period) : "-";
      const baseline = limit ? formatRate(limit.baseline, limit.period) : "-";
      cell(row, rate === baseline ? rate : `${rate} / ${baseline}`, "rate");
      cell(row, limit ? formatRate(limit.shadow_rate, limit.period) : "-", "shadow");
      cell(row, typeof ev.reason === "string" ? `${ev.reason} ${ago(ev.reason_since, now)}` : (bucket.why || "-"), "why");
      const wait = bucket.available_in;
      cell(row, typeof wait === "number" && wait > 0 ? `in ${formatAge(wait)}` : (bucket.state === "ok" || !bucket.why || bucket.why === "rate_limited" ? "now" : "-"), "available");
      cell(row, String((bucket.reports || {})["429"] || 0), "num n429");
      cell(row, ago(ev.last_429, now), "last429");
      cell(row, String(bucket.granted ?? "-"), "num");
      cell(row, String(bucket.waiters ?? "-"), "num");
      const canvas = document.createElement("canvas");
      canvas.className = "chart";
      cell(row, "").appendChild(canvas);
      drawChart(canvas, points, now);
      rows.push(row);
    }
  }
  body.replaceChildren(...rows);
  document.getElementById("empty").hidden = rows.length > 0;
  renderEvents(now);
  document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
}

async function poll() {
  try {
    const { providers, daemon } = await fetchStatus();
    render(providers, daemon);
    first = false;
  } catch (error) {
    const badge = document.getElementById("daemon");
    badge.dataset.state = "down";
    badge.textContent = first ? "cannot reach the daemon" : "the daemon stopped answering";
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

document.getElementById("window").textContent = String(WINDOW_S / 60);
poll();
