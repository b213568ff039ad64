// augur's live dashboard. Polls /admin/dashboard/state once a second with the token from the page's
// fragment (#token=...), keeps the last five minutes of those counters, and draws rates, shares and
// percentiles from their differences. No libraries: the page must open where no CDN is reachable.
"use strict";

const POLL_MS = 1000;
const KEEP = 300; // snapshots: five minutes at one a second
const RECENT_S = 10; // "right now" is the last ten seconds
const COLORS = ["#2a6fb0", "#c8362f", "#2f8a3c", "#8a4fb0", "#c77d00", "#16879a", "#7a5c3e", "#b0407a"];
const CLASSES = ["1xx", "2xx", "3xx", "4xx", "5xx"];

const snapshots = [];
let token = takeToken();
const filters = {}; // per pool: the backend filter typed in

function takeToken() {
  const match = location.hash.match(/token=([^&]+)/);
  if (match) {
    sessionStorage.setItem("augur-token", decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname); // keep the token out of the address bar
  }
  return sessionStorage.getItem("augur-token");
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "style") node.style.cssText = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function setStatus(text, error) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.className = error ? "error" : "";
}

function showLogin(message) {
  setStatus(message, true);
  const form = document.getElementById("login");
  form.style.display = "flex";
  form.onsubmit = (event) => {
    event.preventDefault();
    token = document.getElementById("token").value.trim();
    sessionStorage.setItem("augur-token", token);
    form.style.display = "none";
    poll();
  };
}

async function poll() {
  if (!token) {
    showLogin("Give the admin or read-only token (or open /dashboard#token=...).");
    return;
  }
  let response;
  try {
    response = await fetch("/admin/dashboard/state", { headers: { Authorization: "Bearer " + token } });
  } catch (e) {
    setStatus("cannot reach the proxy: " + e.message, true);
    setTimeout(poll, POLL_MS * 3);
    return;
  }
  if (response.status === 401 || response.status === 403) {
    showLogin("The token was refused (" + response.status + ").");
    return;
  }
  if (!response.ok) {
    setStatus("the proxy answered " + response.status, true);
    setTimeout(poll, POLL_MS * 3);
    return;
  }
  const state = await response.json();
  snapshots.push(state);
  if (snapshots.length > KEEP) snapshots.shift();
  render();
  setStatus("updated " + new Date(state.time_unix_ms).toLocaleTimeString() + " · config generation " + state.generation);
  document.body.dataset.polls = String(snapshots.length);
  setTimeout(poll, POLL_MS);
}

// --- numbers over time ---------------------------------------------------------------------------

function poolAt(snapshot, name) {
  return snapshot.pools.find((p) => p.name === name);
}

/** One point per interval between snapshots: f(previous, current, seconds) for pool `name`. */
function series(name, f) {
  const points = [];
  for (let i = 1; i < snapshots.length; i++) {
    const a = poolAt(snapshots[i - 1], name);
    const b = poolAt(snapshots[i], name);
    if (!a || !b) continue;
    const dt = (snapshots[i].time_unix_ms - snapshots[i - 1].time_unix_ms) / 1000;
    if (dt <= 0) continue;
    points.push([snapshots[i].time_unix_ms, f(a, b, dt)]);
  }
  return points;
}

/** The q quantile of the observations between two states of a histogram, as Prometheus'
 *  histogram_quantile interpolates it; null when nothing was observed. */
function quantile(q, before, after) {
  if (!before || !after) return null;
  const total = after.count - before.count;
  if (total <= 0) return null;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (let i = 0; i < after.le.length; i++) {
    const count = after.cumulative[i] - (before.cumulative[i] || 0);
    if (count >= rank) {
      const inBucket = count - below;
      const upper = after.le[i];
      return inBucket > 0 ? lower + (upper - lower) * ((rank - below) / inBucket) : upper;
    }
    lower = after.le[i];
    below = count;
  }
  return after.le[after.le.length - 1]; // beyond the last bound: the bound, as Prometheus does
}

function sum(values) {
  return values.reduce((a, b) => a + b, 0);
}

function format(value, unit) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (unit === "ms") return value >= 1000 ? (value / 1000).toFixed(2) + " s" : value.toFixed(value < 10 ? 1 : 0) + " ms";
  if (unit === "/s") return (value >= 100 ? value.toFixed(0) : value.toFixed(1)) + "/s";
  if (unit === "%") return (value * 100).toFixed(1) + "%";
  return value >= 100 ? value.toFixed(0) : value.toFixed(value < 10 ? 2 : 1);
}

// --- charts --------------------------------------------------------------------------------------

/** A line chart of named series of [time_ms, value] points over the window kept, with its scale. */
function chart(lines, unit, height = 160) {
  const width = 560;
  const left = 62, right = 8, top = 8, bottom = 22;
  const all = lines.flatMap((l) => l.points.filter((p) => p[1] !== null && Number.isFinite(p[1])));
  if (all.length === 0) return el("div", { class: "empty" }, "No data yet: this fills in as requests arrive.");
  const now = snapshots[snapshots.length - 1].time_unix_ms;
  const from = Math.min(now - 60_000, snapshots[0].time_unix_ms);
  const max = Math.max(...all.map((p) => p[1])) * 1.1 || 1;
  const x = (t) => left + ((t - from) / (now - from || 1)) * (width - left - right);
  const y = (v) => top + (1 - v / max) * (height - top - bottom);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", "100%");
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    svg.append(node);
  };
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    add("line", { x1: left, x2: width - right, y1: y(v), y2: y(v), class: "axis" });
    add("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end" }, format(v, unit));
  }
  const span = (now - from) / 1000;
  for (const ago of [span, span / 2, 0]) {
    add("text", { x: x(now - ago * 1000), y: height - 6, "text-anchor": ago === 0 ? "end" : ago === span ? "start" : "middle" },
      ago === 0 ? "now" : "-" + Math.round(ago) + " s");
  }
  lines.forEach((line, i) => {
    const path = line.points
      .map((p) => (p[1] === null || !Number.isFinite(p[1]) ? null : `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`))
      .filter(Boolean)
      .join(" ");
    add("polyline", { points: path, fill: "none", stroke: line.color || COLORS[i % COLORS.length], "stroke-width": 2,
      "stroke-dasharray": line.dashed ? "5 4" : "none" });
  });
  const legend = el("div", { class: "legend" },
    lines.map((line, i) => el("span", { style: `--c:${line.color || COLORS[i % COLORS.length]}` },
      line.name + " " + format(lastValue(line.points), unit))));
  return el("div", {}, svg, legend);
}

function lastValue(points) {
  for (let i = points.length - 1; i >= 0; i--) if (points[i][1] !== null && Number.isFinite(points[i][1])) return points[i][1];
  return null;
}

// --- the page ------------------------------------------------------------------------------------

function render() {
  const latest = snapshots[snapshots.length - 1];
  const pools = document.getElementById("pools");
  if (latest.pools.length === 0) {
    pools.replaceChildren(el("section", { class: "card" }, el("div", { class: "empty" }, "The config has no pools.")));
  } else {
    // Each pool's card is built once and its parts refilled, so a filter being typed keeps its focus.
    pools.replaceChildren(...latest.pools.map((pool) => {
      const card = cards.get(pool.name) || poolCard(pool.name);
      cards.set(pool.name, card);
      fillPool(card, pool);
      return card.root;
    }));
  }
  renderHints(latest);
  renderModels(latest);
}

const cards = new Map();

function poolCard(name) {
  const part = () => el("div");
  const parts = { badges: el("span"), distribution: part(), latency: part(), traffic: part(), prediction: part(), demand: part(), backends: part() };
  const filter = el("input", { type: "search", placeholder: "filter by address or state" });
  filter.addEventListener("input", () => { filters[name] = filter.value; render(); });
  const root = el("section", { class: "card pool", "data-pool": name },
    el("h2", {}, "Pool " + name, parts.badges),
    el("div", { class: "grid" },
      el("div", {}, el("h3", {}, "Request distribution (last " + RECENT_S + " s; attempts since start)"), parts.distribution),
      el("div", {}, el("h3", {}, "Latency percentiles, arrival to the end of the response"), parts.latency)),
    el("div", { class: "grid" },
      el("div", {}, el("h3", {}, "Responses per second by class, and ejections"), parts.traffic),
      el("div", {}, el("h3", {}, "Predicted against observed latency (mean)"), parts.prediction)),
    el("div", { class: "grid" },
      el("div", {}, el("h3", {}, "Demand against its forecast"), parts.demand),
      el("div", {}, el("h3", {}, "Backends ", filter), parts.backends)));
  return { root, parts };
}

function fillPool(card, pool) {
  const badges = [el("span", { class: "badge" }, pool.policy)];
  if (pool.panic) badges.push(el("span", { class: "badge bad" }, "panic: routing to every backend"));
  if (pool.scores_with_models === true) badges.push(el("span", { class: "badge ok" }, "scoring with models"));
  if (pool.scores_with_models === false) badges.push(el("span", { class: "badge bad" }, "no usable models: P2C fallback"));
  const { parts } = card;
  parts.badges.replaceChildren(...badges);
  parts.distribution.replaceChildren(distribution(pool));
  parts.latency.replaceChildren(latencyChart(pool.name));
  parts.traffic.replaceChildren(trafficChart(pool.name));
  parts.prediction.replaceChildren(predictionChart(pool));
  parts.demand.replaceChildren(demandChart(pool));
  parts.backends.replaceChildren(backendTable(pool));
}

/** Each backend's share of the attempts over the last seconds, and its attempts since start. */
function distribution(pool) {
  const before = snapshotAgo(RECENT_S);
  const earlier = before ? poolAt(before, pool.name) : null;
  const recent = pool.backends.map((b) => {
    const old = earlier ? earlier.backends.find((o) => o.address === b.address) : null;
    return { backend: b, recent: b.attempts - (old ? old.attempts : 0) };
  });
  const total = sum(recent.map((r) => r.recent));
  const totalSince = sum(pool.backends.map((b) => b.attempts));
  if (pool.backends.length === 0) return el("div", { class: "empty" }, "No backends: discovery has found none yet.");
  recent.sort((a, b) => b.recent - a.recent || b.backend.attempts - a.backend.attempts);
  const rows = recent.map(({ backend, recent: n }) => {
    const share = total > 0 ? n / total : 0;
    return el("tr", { "data-backend": backend.address, "data-attempts": backend.attempts, "data-share": share.toFixed(4) },
      el("td", {}, backend.address),
      el("td", { class: "share" }, el("div", { class: "bar" + (backend.available ? "" : " off"), style: `width:${(share * 100).toFixed(1)}%` })),
      el("td", { class: "num" }, format(share, "%")),
      el("td", { class: "num attempts" }, backend.attempts),
      el("td", { class: "num" }, totalSince > 0 ? format(backend.attempts / totalSince, "%") : "–"));
  });
  const note = total === 0 ? el("div", { class: "empty" }, "No requests in the last " + RECENT_S + " s.") : null;
  return el("div", {}, note, el("div", { class: "scroll" }, el("table", { class: "distribution" },
    el("thead", {}, el("tr", {}, el("th", {}, "backend"), el("th", {}, "share now"), el("th", { class: "num" }, "now"),
      el("th", { class: "num" }, "attempts"), el("th", { class: "num" }, "of all"))),
    el("tbody", {}, rows))));
}

function snapshotAgo(seconds) {
  const latest = snapshots[snapshots.length - 1];
  for (let i = snapshots.length - 1; i >= 0; i--) {
    if (latest.time_unix_ms - snapshots[i].time_unix_ms >= seconds * 1000) return snapshots[i];
  }
  return snapshots.length > 1 ? snapshots[0] : null;
}

function latencyChart(name) {
  const line = (q, label) => ({ name: label, points: series(name, (a, b) => {
    const v = quantile(q, a.latency, b.latency);
    return v === null ? null : v * 1000;
  }) });
  return chart([line(0.5, "p50"), line(0.9, "p90"), line(0.99, "p99")], "ms");
}

function trafficChart(name) {
  const perClass = CLASSES.map((cls, i) => ({
    name: cls, color: ["#999", "#2f8a3c", "#2a6fb0", "#c77d00", "#c8362f"][i],
    points: series(name, (a, b, dt) => (b.responses[i] - a.responses[i]) / dt),
  })).filter((line) => line.points.some((p) => p[1] > 0));
  const ejections = { name: "ejections", color: "#000", dashed: true,
    points: series(name, (a, b) => sum(b.backends.map((x) => x.ejections)) - sum(a.backends.map((x) => x.ejections))) };
  const lines = perClass.length ? perClass : [{ name: "2xx", points: series(name, () => 0) }];
  return chart(lines.concat(ejections.points.some((p) => p[1] > 0) ? [ejections] : []), "/s");
}

function predictionChart(pool) {
  if (!pool.predictions) return el("div", { class: "empty" }, "Not a predictive pool (policy " + pool.policy + ").");
  if (pool.predictions.error.count === 0) return el("div", { class: "empty" }, "No request placed by the models yet.");
  const mean = (field) => series(pool.name, (a, b) => {
    const n = b.predictions.error.count - a.predictions.error.count;
    return n > 0 ? ((b.predictions[field] - a.predictions[field]) / n) * 1000 : null;
  });
  return chart([{ name: "predicted", points: mean("predicted_s"), dashed: true }, { name: "observed", points: mean("observed_s") }], "ms");
}

function demandChart(pool) {
  const latest = snapshots[snapshots.length - 1];
  if (!latest.hints) return el("div", { class: "empty" }, "Autoscaling hints are off: add a [hints] section.");
  if (!pool.forecast) return el("div", { class: "empty" }, "No forecast yet: the first comes at the end of the pool's first full bucket.");
  const observed = series(pool.name, (a, b, dt) => (b.arrivals - a.arrivals) / dt);
  // A forecast made at t for t + h is drawn at t + h, where the demand it forecast arrives.
  const forecasts = new Map();
  for (const snapshot of snapshots) {
    const p = poolAt(snapshot, pool.name);
    if (!p || !p.forecast || p.forecast.forecast.length === 0) continue;
    const first = p.forecast.forecast[0];
    const at = Date.parse(p.forecast.time) + first.horizon_s * 1000;
    forecasts.set(at, first);
  }
  const byTime = [...forecasts.entries()].sort((a, b) => a[0] - b[0]);
  const horizon = pool.forecast.forecast.length ? pool.forecast.forecast[0].horizon_s : 0;
  const f = pool.forecast;
  const summary = el("div", { class: "legend" },
    el("span", { style: "--c:#000" }, `replicas: ${f.current_replicas} now, ${f.desired_replicas ?? "–"} asked for`),
    el("span", { style: "--c:#000" }, f.forecaster.kind === "model"
      ? `forecaster: model ${f.forecaster.version} (${f.forecaster.methods.join(", ")})`
      : `forecaster: fallback (${f.forecaster.why})`),
    el("span", { style: "--c:#000" }, `hints raised: ${f.hints}`));
  return el("div", {}, chart([
    { name: "arrived", points: observed },
    { name: `forecast +${horizon} s`, points: byTime.map(([t, h]) => [t, h.mean_rps]), dashed: true },
    { name: "upper bound", points: byTime.map(([t, h]) => [t, h.upper_rps]), dashed: true, color: "#c77d00" },
  ], "/s"), summary, el("div", { class: "empty" }, f.reason));
}

function backendTable(pool) {
  const filter = (filters[pool.name] || "").toLowerCase();
  const shown = pool.backends.filter((b) => !filter || b.address.toLowerCase().includes(filter) || b.state.includes(filter));
  const counts = {};
  for (const b of pool.backends) counts[b.state] = (counts[b.state] || 0) + 1;
  const rows = shown.map((b) => el("tr", { "data-backend": b.address, "data-state": b.state },
    el("td", {}, b.address),
    el("td", { class: "state state-" + b.state }, b.state),
    el("td", { class: "num" }, b.weight),
    el("td", { class: "num" }, b.in_flight),
    el("td", { class: "num" }, format(b.rtt_estimate_ms, "ms")),
    el("td", { class: "num" }, b.failures),
    el("td", { class: "num" }, b.ejections),
    el("td", {}, Object.entries(b.labels).map(([k, v]) => k + "=" + v).join(" "))));
  return el("div", {},
    el("div", { class: "legend" }, Object.entries(counts).map(([state, n]) => el("span", { class: "state-" + state, style: "--c:currentColor" }, n + " " + state)),
      filter ? el("span", { style: "--c:transparent" }, `${shown.length} shown`) : null),
    el("div", { class: "scroll" }, el("table", { class: "backends" },
      el("thead", {}, el("tr", {}, ["backend", "state", "weight", "in flight", "rtt", "failures", "ejections", "labels"].map((h, i) =>
        el("th", { class: i >= 2 && i <= 6 ? "num" : "" }, h)))),
      el("tbody", {}, rows))));
}

function renderHints(latest) {
  const card = document.getElementById("hints");
  const body = !latest.hints
    ? el("div", { class: "empty" }, "Autoscaling hints are off: add a [hints] section.")
    : latest.hints.recent.length === 0
      ? el("div", { class: "empty" }, "No hint raised yet: the replicas asked for have not changed.")
      : el("div", { class: "scroll" }, el("table", {},
        el("thead", {}, el("tr", {}, ["when", "pool", "change", "by", "deliveries"].map((h) => el("th", {}, h)))),
        el("tbody", {}, latest.hints.recent.slice().reverse().map((h) => el("tr", {},
          el("td", {}, new Date(h.time).toLocaleTimeString()),
          el("td", {}, h.pool + " #" + h.sequence),
          el("td", {}, `${h.direction} ${h.from} → ${h.to}`),
          el("td", {}, h.forecaster),
          el("td", { class: "wrap" }, Object.entries(h.deliveries).map(([sink, state]) => el("div", {},
            el("span", { class: state === "delivered" ? "state-healthy" : state === "queued" || state === "retrying" ? "state-warming" : "state-ejected" }, state),
            " " + sink))))))));
  card.replaceChildren(el("h2", {}, "Autoscaling hints"), body);
}

function renderModels(latest) {
  const card = document.getElementById("models");
  const m = latest.models;
  const events = m.history.slice().reverse().map((e) => el("tr", {},
    el("td", {}, new Date(e.at_unix_s * 1000).toLocaleString()),
    e.version ? el("td", { class: "state-healthy" }, "loaded " + e.version) : el("td", { class: "state-ejected" }, "refused: " + e.refused)));
  card.replaceChildren(el("h2", {}, "Models", el("span", { class: "badge" + (m.version ? " ok" : "") }, m.version ? "in force: " + m.version : "none loaded")),
    events.length ? el("div", { class: "scroll" }, el("table", {}, el("tbody", {}, events)))
      : el("div", { class: "empty" }, "No model set loaded or refused since the proxy started."));
}

poll();
