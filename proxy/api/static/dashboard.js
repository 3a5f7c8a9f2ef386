/* stratum-proxy dashboard.
 *
 * Plain browser JavaScript, no libraries, no build step. Polls the proxy's REST API every 2 s
 * (status, pools, events, rentals, one page of rigs) and the per-minute history every 15 s.
 * Everything shown comes from the API; every string from it is inserted as text, never as
 * markup (a worker name is whatever a rig sent). Writes carry the operator's token from
 * sessionStorage; the API's refusal text is shown as is.
 */
"use strict";
(() => {
  const POLL_MS = 2000;
  const HISTORY_MS = 15000;
  const FETCH_TIMEOUT_MS = 6000;
  const TOKEN_KEY = "stratum-proxy.api-token";
  const LATENCY_WINDOW_S = 3600;
  const LIVE_LATENCY_POINTS = 1800;  // one hour of 2 s samples per pool
  const COLORS = ["#1f5fd6", "#1f9d55", "#d98b00", "#8a3fd1", "#0a8ea8", "#d0443a", "#5b6472", "#c2417e"];
  const STATES = ["healthy", "suspect", "degraded", "down", "disabled"];

  const $ = (id) => document.getElementById(id);

  const S = {
    status: null,
    pools: [],
    listeners: [],           // rig ports (GET /api/v1/listeners): the SV1 one and each GPU one
    historyListener: "",     // the rig port whose pools the chart stacks ("" = the first)
    rentals: null,
    history: null,
    historyError: "",
    historyAt: 0,
    historyMinutes: 60,
    events: new Map(),
    eventFilter: "all",
    eventsShown: "",
    latency: new Map(),      // pool name -> [[wall, p50, p99], ...] seen by this page
    colors: new Map(),
    rig: { offset: 0, limit: 50, sort: "worker", q: "", pool: "" },
    rigs: null,
    rigSeq: 0,
    skew: 0,                 // proxy wall clock minus this browser's clock, seconds
    lastOk: 0,
    failing: false,
    busy: false,
    again: false,
    timer: 0,
    chartTarget: null,
  };

  let token = "";
  try { token = sessionStorage.getItem(TOKEN_KEY) || ""; } catch (_) { token = ""; }

  // ------------------------------------------------------------------ DOM helpers

  function el(tag, props, ...kids) {
    const node = document.createElement(tag);
    setProps(node, props);
    for (const kid of kids.flat()) {
      if (kid == null || kid === false) continue;
      node.append(kid instanceof Node ? kid : String(kid));
    }
    return node;
  }

  function setProps(node, props) {
    if (!props) return;
    for (const [key, value] of Object.entries(props)) {
      if (value == null || value === false) continue;
      if (key === "class") node.setAttribute("class", value);
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
  }

  // the SVG namespace, from the inline <svg> the HTML parser placed in it (no URL in the page)
  const SVG_NS = $("svg-ns").namespaceURI;
  function svg(tag, attrs, ...kids) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value != null) node.setAttribute(key, String(value));
    }
    for (const kid of kids.flat()) {
      if (kid == null || kid === false) continue;
      node.append(kid instanceof Node ? kid : String(kid));
    }
    return node;
  }

  function setText(id, text) {
    const node = $(id);
    if (node.textContent !== text) node.textContent = text;
  }

  // ------------------------------------------------------------------ formatting

  const num = (v) => typeof v === "number" && Number.isFinite(v);
  const toNum = (v) => {
    if (num(v)) return v;
    if (typeof v === "string" && v.trim() !== "" && Number.isFinite(Number(v))) return Number(v);
    return null;
  };

  function fmtHs(h) {
    if (!num(h)) return "—";
    if (h === 0) return "0 H/s";
    const units = ["H/s", "kH/s", "MH/s", "GH/s", "TH/s", "PH/s", "EH/s", "ZH/s"];
    let v = Math.abs(h);
    let i = 0;
    while (v >= 999.5 && i < units.length - 1) { v /= 1000; i += 1; }
    const digits = v >= 99.95 ? 0 : v >= 9.995 ? 1 : 2;
    return `${h < 0 ? "-" : ""}${v.toFixed(digits)} ${units[i]}`;
  }

  function fmtCount(n) {
    return num(n) ? n.toLocaleString("en-US") : "—";
  }

  function fmtCompact(v) {
    if (!num(v)) return "—";
    const a = Math.abs(v);
    if (a === 0) return "0";
    if (a < 0.01) return v.toExponential(2).replace("e-", "e−");
    if (a < 1000) return String(Number(v.toPrecision(4)));
    const units = ["k", "M", "G", "T", "P", "E"];
    let x = a;
    let i = -1;
    while (x >= 999.5 && i < units.length - 1) { x /= 1000; i += 1; }
    return `${v < 0 ? "-" : ""}${Number(x.toPrecision(3))}${units[i]}`;
  }

  function fmtMs(ms) {
    if (!num(ms)) return "—";
    if (ms < 10) return ms.toFixed(2);
    if (ms < 100) return ms.toFixed(1);
    return ms.toFixed(0);
  }

  function fmtPct(x) {
    if (!num(x)) return "—";
    const p = x * 100;
    return `${p >= 10 || p === 0 ? p.toFixed(0) : p.toFixed(1)}%`;
  }

  function fmtAge(s) {
    if (!num(s)) return "—";
    if (s < 1) return "<1 s";
    if (s < 90) return `${Math.round(s)} s`;
    if (s < 90 * 60) return `${Math.round(s / 60)} min`;
    if (s < 48 * 3600) return `${(s / 3600).toFixed(1)} h`;
    return `${(s / 86400).toFixed(1)} d`;
  }

  function fmtDuration(s) {
    if (!num(s)) return "—";
    const d = Math.floor(s / 86400);
    const h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    if (d) return `${d}d ${h}h`;
    if (h) return `${h}h ${m}m`;
    if (m) return `${m}m ${Math.floor(s % 60)}s`;
    return `${Math.floor(s)}s`;
  }

  // "2 min ago": event times read relative to the proxy's clock (the absolute time is the tooltip)
  function fmtAgo(wall) {
    if (!num(wall)) return "—";
    const d = serverNow() - wall;
    return d < 2 ? "just now" : `${fmtAge(d)} ago`;
  }

  // BTC amounts and prices arrive as decimal strings: at most 8 places (a satoshi), trailing
  // zeros dropped, at least `minPlaces` (a price keeps the marketplace's precision)
  function fmtDecimal(v, minPlaces = 0) {
    const x = toNum(v);
    if (x == null) return v == null || v === "" ? "—" : String(v);
    let text = x.toFixed(8).replace(/\.?0+$/, "");
    const places = text.includes(".") ? text.split(".")[1].length : 0;
    if (places < minPlaces) text = x.toFixed(minPlaces);
    return text;
  }

  const fmtBtc = (v) => `${fmtDecimal(v)} BTC`;
  // BTC per PH/s per day, to the decimals of the marketplace's price step (rentals API)
  const fmtPrice = (v) => `${fmtDecimal(v, num(S.rentals && S.rentals.price_decimals) ? S.rentals.price_decimals : 0)} BTC/PH/day`;

  // the hashprice (BTC per PH/s per day) to 4 significant digits: it is an estimate, not money
  function fmtHashprice(v) {
    const x = toNum(v);
    return x == null ? "unknown" : `${x >= 1e4 ? fmtCompact(x) : String(Number(x.toPrecision(4)))} BTC/PH/day`;
  }

  // one field of an event, by the unit its name carries: limit_hs 16201.4 -> "limit 16.2 kH/s"
  function fmtField(name, v) {
    const label = name.replace(/_(hs|btc|s)$/, "").replace(/_/g, " ");
    if (/_hs$/.test(name)) return `${label} ${fmtHs(toNum(v))}`;
    if (name === "hashprice") return `${label} ${fmtHashprice(v)}`;
    if (name === "price" || /_price$/.test(name)) return `${label} ${fmtPrice(v)}`;
    if (/_btc$/.test(name) || name === "amount") return `${label} ${fmtBtc(v)}`;
    if (/_s$/.test(name) && toNum(v) != null) return `${label} ${fmtAge(toNum(v))}`;
    if (num(v)) return `${label} ${Number.isInteger(v) ? fmtCount(v) : fmtCompact(v)}`;
    return `${label} ${v}`;
  }

  const pad = (n) => String(n).padStart(2, "0");
  function fmtClock(wall, withSeconds = true) {
    if (!num(wall)) return "—";
    const d = new Date(wall * 1000);
    const t = `${pad(d.getHours())}:${pad(d.getMinutes())}${withSeconds ? `:${pad(d.getSeconds())}` : ""}`;
    const today = new Date(serverNow() * 1000);
    if (d.toDateString() === today.toDateString()) return t;
    return `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${t}`;
  }

  const serverNow = () => Date.now() / 1000 + S.skew;

  function poolColor(name) {
    if (!S.colors.has(name)) S.colors.set(name, COLORS[S.colors.size % COLORS.length]);
    return S.colors.get(name);
  }

  // --- rig ports: the SV1 one and each GPU one (EthereumStratum, getwork), each with its pools

  // the API says "sv1", "EthereumStratum/1.0.0" or "ethproxy" (the getwork dialect)
  const PROTOCOLS = { sv1: "Stratum V1", ethstratum: "EthereumStratum/1.0.0", ethproxy: "getwork (eth-proxy)" };
  const protocolName = (p) => PROTOCOLS[p] || String(p || "?");
  // GPU pools say their listener (pools API); the others are the SV1 port's
  const isGpu = (p) => typeof p.listener === "string" && p.protocol !== "sv1";
  const sv1Pools = () => S.pools.filter((p) => !isGpu(p));
  const gpuListeners = () => S.listeners.filter((l) => l && l.protocol !== "sv1");
  const multiPort = () => gpuListeners().length > 0 || S.pools.some(isGpu);
  const sv1Name = () => (S.listeners.find((l) => l && l.protocol === "sv1") || { name: "main" }).name;
  const listenerOf = (p) => (isGpu(p) ? p.listener : sv1Name());
  const listenerInfo = (name) => S.listeners.find((l) => l && l.name === name);

  // ------------------------------------------------------------------ HTTP

  class Unreachable extends Error {}

  class Refused extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function request(method, path, body, withToken) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (withToken && token) headers.Authorization = `Bearer ${token}`;
    let text;
    let resp;
    try {
      resp = await fetch(path, {
        method, headers, cache: "no-store", credentials: "same-origin", signal: ctl.signal,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      text = await resp.text();
    } catch (err) {
      throw new Unreachable(err && err.name === "AbortError"
        ? `no answer within ${FETCH_TIMEOUT_MS / 1000} s` : "connection failed");
    } finally {
      clearTimeout(timer);
    }
    let data = null;
    try { data = JSON.parse(text); } catch (_) { data = null; }
    if (!resp.ok) {
      const why = data && typeof data.error === "string" ? data.error : (text.slice(0, 300) || resp.statusText);
      throw new Refused(resp.status, why);
    }
    if (data === null) throw new Refused(resp.status, `${path}: the answer is not JSON`);
    return data;
  }

  const get = (path) => request("GET", path);

  // ------------------------------------------------------------------ polling

  function schedule(ms) {
    clearTimeout(S.timer);
    S.timer = setTimeout(poll, ms);
  }

  function refreshSoon() {
    if (S.busy) S.again = true;
    else schedule(0);
  }

  async function poll() {
    if (S.busy) { S.again = true; return; }
    S.busy = true;
    clearTimeout(S.timer);
    try {
      const soft = (p) => p.catch((err) => {
        if (err instanceof Unreachable) throw err;
        return { error: err.message, status: err.status };
      });
      const [status, pools, events, rentals, listeners, , power] = await Promise.all([
        get("/api/v1/status"), get("/api/v1/pools"), get("/api/v1/events?limit=200"),
        soft(get("/api/v1/rentals")), soft(get("/api/v1/listeners")), loadRigs(),
        soft(get("/api/v1/power")),
      ]);
      S.power = power;
      S.skew = num(status.wall_time) ? status.wall_time - Date.now() / 1000 : 0;
      const activeNow = JSON.stringify(status.active_pools || []);
      if (S.status && JSON.stringify(S.status.active_pools || []) !== activeNow) S.historyAt = 0;
      S.status = status;
      S.pools = Array.isArray(pools.pools) ? pools.pools : [];
      S.rentals = rentals;
      S.listeners = Array.isArray(listeners.listeners) ? listeners.listeners : [];
      addEvents(events.events);
      sampleLatency();
      reachable();
      render();
      if (Date.now() - S.historyAt >= HISTORY_MS) loadHistory();
    } catch (err) {
      unreachable(err);
    } finally {
      S.busy = false;
      const again = S.again;
      S.again = false;
      schedule(again ? 0 : POLL_MS);
    }
  }

  function reachable() {
    S.lastOk = Date.now();
    S.failing = false;
    $("banner").hidden = true;
    $("main").classList.remove("stale");
    const updated = $("updated");
    updated.className = "updated muted live";
    updated.textContent = `live · ${fmtClock(serverNow())}`;
  }

  function unreachable(err) {
    S.failing = true;
    const since = S.lastOk ? `figures below are from ${fmtClock(S.lastOk / 1000 + S.skew)}` : "no data yet";
    const banner = $("banner");
    if (err instanceof Unreachable) {
      banner.textContent = `Proxy unreachable (${err.message}). Retrying every ${POLL_MS / 1000} s; ${since}.`;
    } else if (err instanceof Refused) {
      banner.textContent = `The proxy answered HTTP ${err.status}: ${err.message}. Retrying; ${since}.`;
    } else {
      console.error(err);  // a defect of this page, not of the proxy
      banner.textContent = `Dashboard error: ${err && err.message}. Retrying; ${since}.`;
    }
    banner.hidden = false;
    $("main").classList.add("stale");
    const updated = $("updated");
    updated.className = "updated muted stale";
    updated.textContent = "unreachable";
    document.title = "⚠ unreachable · stratum-proxy";
  }

  async function loadHistory() {
    S.historyAt = Date.now();
    const minutes = Math.max(S.historyMinutes, 60);
    try {
      const data = await get(`/api/v1/history?minutes=${minutes}`);
      S.history = data;
      S.historyError = data.error || "";
      addEvents(data.events);
      // a fresh proxy has no sample yet, or none of the pool carrying the farm now (a restart on
      // an old history): ask again soon rather than in 15 s
      const rows = Array.isArray(data.rows) ? data.rows : [];
      const active = (S.status && S.status.active_pools) || [];
      if (!rows.length || (active.length && !rows.some((r) => active.includes(r.pool)))) {
        S.historyAt = Date.now() - HISTORY_MS + 3000;
      }
    } catch (err) {
      if (!(err instanceof Unreachable)) { S.history = null; S.historyError = err.message; }
      else S.historyAt = 0;  // try again on the next successful poll
    }
    renderHistory();
    renderPools();
    renderEvents();
  }

  function rigsPath() {
    const r = S.rig;
    const q = new URLSearchParams({ offset: String(r.offset), limit: String(r.limit), sort: r.sort });
    if (r.q) q.set("q", r.q);
    if (r.pool) q.set("pool", r.pool);
    return `/api/v1/rigs?${q}`;
  }

  async function loadRigs() {
    const seq = ++S.rigSeq;
    let data;
    try {
      data = await get(rigsPath());
    } catch (err) {
      if (err instanceof Unreachable) throw err;
      if (seq !== S.rigSeq) return;
      if (err.status === 404 && S.rig.pool) {  // the filtered pool is gone (config reload)
        S.rig.pool = "";
        S.rig.offset = 0;
      }
      S.rigs = { error: err.message };
      renderRigs();
      return;
    }
    if (seq !== S.rigSeq) return;  // a newer query (sort, filter, page) already went out
    if (data.total > 0 && data.offset >= data.total) {  // the page emptied: go to the last one
      S.rig.offset = Math.max(0, Math.floor((data.total - 1) / S.rig.limit) * S.rig.limit);
      loadRigs().catch(() => {});
      return;
    }
    S.rigs = data;
    renderRigs();
  }

  function addEvents(list) {
    if (!Array.isArray(list)) return;
    for (const e of list) {
      if (!e || typeof e !== "object") continue;
      const key = `${e.time}|${e.kind}|${e.seq}`;
      if (!S.events.has(key)) S.events.set(key, e);
    }
    if (S.events.size > 1500) {
      const keep = [...S.events.entries()].sort((a, b) => (b[1].time || 0) - (a[1].time || 0)).slice(0, 1000);
      S.events = new Map(keep);
    }
  }

  function sampleLatency() {
    const t = num(S.status && S.status.wall_time) ? S.status.wall_time : serverNow();
    for (const p of S.pools) {
      const lat = p.latency_ms || {};
      if (!num(lat.p50) && !num(lat.p99)) continue;
      let series = S.latency.get(p.name);
      if (!series) { series = []; S.latency.set(p.name, series); }
      series.push([t, lat.p50, lat.p99]);
      if (series.length > LIVE_LATENCY_POINTS) series.splice(0, series.length - LIVE_LATENCY_POINTS);
    }
  }

  // ------------------------------------------------------------------ render

  function render() {
    for (const p of S.pools) poolColor(p.name);
    renderHeader();
    renderPower();
    renderPools();
    renderListeners();
    renderRigsTitle();
    renderEvents();
    renderPoolFilter();
    renderHistoryLegend();
    // the chart redraws on each history load; the target line also follows the rentals API
    if (rentalTarget(S.rentals) !== S.chartTarget) renderHistory();
  }

  function rentalTarget(r) {
    if (!r || typeof r !== "object") return null;
    const t = toNum(r.target_hs);
    return t != null && t > 0 ? t : null;
  }

  // what the farm's hashrate earns (status API: the active pool's job), next to the rental price
  function farmHashprice() {
    const hp = S.status && S.status.hashprice;
    if (!hp || typeof hp !== "object" || (multiPort() && !sv1Pools().length)) return "";  // Ethash: none
    return hp.btc_per_ph_day != null ? `hashprice ${fmtHashprice(hp.btc_per_ph_day)}`
      : `hashprice unknown${hp.reason ? ` (${hp.reason})` : ""}`;
  }

  function rentalView(r) {
    const earns = farmHashprice();
    if (!r || typeof r !== "object") return { value: "—", sub: earns, cls: "" };
    if (r.error) return { value: "unknown", sub: `rentals: ${r.error}`, cls: "warn" };
    if (r.enabled === false || !r.provider) {
      return { value: "off", sub: ["not configured", earns].filter(Boolean).join(" · "), cls: "" };
    }
    const orders = Array.isArray(r.orders) ? r.orders : [];
    const state = typeof r.state === "string" && r.state ? r.state
      : orders.length ? `${orders.length} order${orders.length === 1 ? "" : "s"}` : "idle";
    const parts = [String(r.provider)];
    const deficit = toNum(r.deficit_hs);
    // delivered_hs is everything reaching the pool (own rigs + rented): the order's own
    // figures say what is being rented
    // (orders also lists closed ones: only open orders count)
    const open = orders.filter((o) => !o.closed && !/cancel|complet|dead|expired|closed/i.test(String(o.state || "")));
    const sum = (key) => open.reduce((a, o) => a + (toNum(o[key]) || 0), 0);
    const limit = toNum(r.ordered_hs) ?? sum("limit_hs");
    const getting = toNum(r.rented_hs) ?? sum("delivered_hs");
    if (limit > 0) parts.push(`order ${fmtHs(limit)}, delivering ${fmtHs(getting)}`);
    else parts.push("no order");
    if (deficit != null && deficit > 0) parts.push(`deficit ${fmtHs(deficit)}`);
    if (r.market_price != null) parts.push(`market ${fmtPrice(r.market_price)}`);
    if (earns) parts.push(earns);
    if (r.max_price === "hashprice") parts.push(r.price_cap != null ? `cap ${fmtPrice(r.price_cap)}` : "no cap yet");
    if (r.budget_left_btc != null && r.budget_left_btc !== "") parts.push(`budget left ${fmtBtc(r.budget_left_btc)}`);
    const busy = /rent|order|active|running|placing/i.test(state) && !/idle|off|none/i.test(state);
    return { value: state, sub: parts.join(" · "), cls: busy ? "warn" : "good" };
  }

  // --- power card: each UPS and curtailment, what is at risk, what is rented (GET /api/v1/power)
  const POWER_CLASS = {
    ok: "good", watch: "warn", order: "bad", unknown: "warn",
    scheduled: "", ordering: "warn", open: "bad", over: "good", no_rent: "",
  };

  function renderPower() {
    const p = S.power;
    const card = $("power-card");
    const on = !!(p && p.enabled);
    if (card.hidden === on) card.hidden = !on;
    if (!on) return;
    const ups = Array.isArray(p.ups) ? p.ups : [];
    const curt = Array.isArray(p.curtailments) ? p.curtailments : [];
    const rent = p.rental && p.rental.enabled ? p.rental : null;
    const rented = rent && toNum(rent.ordered_hs) > 0
      ? `order ${fmtHs(toNum(rent.ordered_hs))}, delivering ${fmtHs(toNum(rent.rented_hs))}` : "no order";
    setText("power-note", `order lead ${fmtAge(toNum(p.order_lead_s))} · at risk ${fmtHs(toNum(p.hashrate_at_risk_hs))}`
      + ` · renting for power ${fmtHs(toNum(p.rent_now_hs))} · ${rented}`);
    const items = [];
    for (const u of ups) {
      const figures = [u.status || u.power, u.charge != null ? `${Math.round(u.charge)}%` : null,
        u.runtime_s != null ? `runtime ${fmtAge(u.runtime_s)}` : null,
        `${fmtCount(u.rig_count)} rigs`, toNum(u.hashrate_at_risk_hs) > 0 ? `${fmtHs(u.hashrate_at_risk_hs)} at risk` : null,
      ].filter(Boolean).join(" · ");
      items.push(el("li", { class: POWER_CLASS[u.decision] || "" },
        el("strong", { text: `UPS ${u.name}` }), ` ${u.decision}: ${figures}`,
        el("span", { class: "why", text: u.reason || "" })));
    }
    for (const c of curt) {
      const when = `${fmtClock(c.from ? Date.parse(c.from) / 1000 : null)}–${fmtClock(c.until ? Date.parse(c.until) / 1000 : null)}`;
      items.push(el("li", { class: POWER_CLASS[c.decision] || "" },
        el("strong", { text: `curtailment ${c.name || c.id}` }),
        ` ${c.decision || ""}: ${when} · ${fmtCount(c.rig_count || 0)} rigs · ${fmtHs(toNum(c.hashrate_at_risk_hs) || 0)}`
          + `${c.rent ? "" : " · not rented"}`,
        el("span", { class: "why", text: c.status_reason || c.reason || "" })));
    }
    if (!items.length) items.push(el("li", { text: "no UPS or curtailment configured" }));
    $("power-list").replaceChildren(...items);
  }

  function lastSwitch() {
    let best = null;
    for (const e of S.events.values()) {
      if (e.kind === "pool_switch" && (!best || e.time > best.time)) best = e;
    }
    return best;
  }

  function setCardClass(id, cls) {
    const card = $(id);
    const want = `stat${cls ? ` ${cls}` : ""}`;
    if (card.className !== want) card.className = want;
  }

  function renderHeader() {
    const st = S.status;
    if (!st) return;
    setText("instance", `${st.instance || ""} · v${st.version || "?"} · up ${fmtDuration(st.uptime_s)}`
      + (st.writes_enabled === false ? " · read-only API (no api.token)" : ""));

    // SHA-256 and Ethash hashrates do not add up: the card shows the SV1 port's (or, with no
    // SV1 pool, the GPU ports'), and the GPU ports' figure beside it
    const hasSv1 = sv1Pools().length > 0;
    const gpuHs = S.pools.filter(isGpu).reduce((a, p) => a + (num(p.hashrate) ? p.hashrate : 0), 0);
    const farmHs = hasSv1 || !multiPort() ? st.hashrate : gpuHs;
    const gpuNote = hasSv1 && multiPort() ? `GPU ${fmtHs(gpuHs)}` : "";
    const target = rentalTarget(S.rentals);
    setText("stat-hashrate", fmtHs(farmHs));
    if (target != null) {
      const ratio = num(farmHs) ? farmHs / target : 0;
      setText("stat-target", [`target ${fmtHs(target)} · ${fmtPct(ratio)} of target`, gpuNote].filter(Boolean).join(" · "));
      setCardClass("card-hashrate", ratio >= 0.95 ? "good" : ratio >= 0.8 ? "warn" : "bad");
    } else {
      setText("stat-target", gpuNote || "no target");
      setCardClass("card-hashrate", "");
    }

    const gpuRigs = gpuListeners().reduce((a, l) => a + (num(l.rigs) ? l.rigs : 0), 0);
    const rigs = (num(st.rigs_connected) ? st.rigs_connected : 0) + gpuRigs;
    setText("stat-rigs", fmtCount(rigs));
    const idle = num(st.rigs_connected) && num(st.rigs_working) ? st.rigs_connected - st.rigs_working : 0;
    const working = `${fmtCount(st.rigs_working)} working${idle > 0 ? ` · ${fmtCount(idle)} waiting for work` : ""}`;
    const waiting = idle > 0 ? ` · ${fmtCount(idle)} SV1 waiting for work` : "";
    setText("stat-rigs-sub", multiPort() ? `${hasSv1 ? `SV1 ${fmtCount(st.rigs_connected)} · ` : ""}GPU ${fmtCount(gpuRigs)}${waiting}` : working);
    setCardClass("card-rigs", idle > 0 ? "warn" : rigs > 0 ? "good" : "");

    // each rig port's active group (the SV1 one from the status API, the GPU ones from theirs)
    const ports = [];
    if (hasSv1 || !multiPort()) ports.push({ name: sv1Name(), active: Array.isArray(st.active_pools) ? st.active_pools : [] });
    for (const l of gpuListeners()) ports.push({ name: l.name, active: Array.isArray(l.active_pools) ? l.active_pools : [] });
    const active = ports.flatMap((x) => x.active);
    const stalled = ports.filter((x) => !x.active.length);
    setText("stat-active", ports.map((x) => x.active.join(", ") || "none").join(" · ") || "none");
    $("stat-active").classList.toggle("multi", ports.length > 1);  // may wrap on a phone
    $("stat-active").title = ports.length > 1 ? ports.map((x) => `${x.name}: ${x.active.join(", ") || "none"}`).join("; ") : "";
    const sw = lastSwitch();
    if (stalled.length) {
      const who = ports.length > 1 ? ` on ${stalled.map((x) => x.name).join(", ")}` : "";
      setText("stat-active-sub", `no usable pool${who}: rigs keep their last job`);
      setCardClass("card-active", "bad");
    } else {
      // a port is on a backup when its active pool is not of its best enabled priority
      const onBackup = ports.filter((x) => {
        const mine = S.pools.filter((p) => listenerOf(p) === x.name && p.enabled !== false);
        const best = mine.length ? Math.min(...mine.map((p) => p.priority)) : null;
        return mine.some((p) => x.active.includes(p.name) && best != null && p.priority > best);
      });
      const backup = onBackup.length ? `on a backup${ports.length > 1 ? ` (${onBackup.map((x) => x.name).join(", ")})` : ""} · ` : "";
      setText("stat-active-sub", `${backup}${sw ? `switched ${fmtAgo(sw.time)}` : "since start"}`);
      setCardClass("card-active", onBackup.length ? "warn" : "good");
    }

    const rental = rentalView(S.rentals);
    setText("stat-rental", rental.value);
    setText("stat-rental-sub", rental.sub || " ");
    setCardClass("card-rental", rental.cls);

    const down = S.pools.filter((p) => p.state === "down" && p.enabled !== false).length;
    setText("pools-note", `${S.pools.length} configured${down ? ` · ${down} down` : ""}`);
    document.title = `${stalled.length ? "⚠ " : ""}${active.join(", ") || "no pool"} · ${fmtHs(farmHs)} · stratum-proxy`;
  }

  // --- rig ports: the SV1 port and each GPU port, with its rigs, active pool and moves

  function renderListeners() {
    const card = $("listeners-card");
    card.hidden = !multiPort();
    if (card.hidden) return;
    const body = $("listeners-body");
    body.replaceChildren(...S.listeners.filter((l) => l && typeof l === "object").map((l) => {
      const c = l.counters || {};
      const gpu = l.protocol !== "sv1";
      const active = Array.isArray(l.active_pools) ? l.active_pools : [];
      return el("tr", { "data-listener": l.name },
        el("td", { class: "sticky" }, el("span", { class: "pool-name" }, l.name),
          el("span", { class: "sub nowrap" }, l.name === "main" ? "[proxy] listen" : "[[listeners]]")),
        el("td", {}, protocolName(l.protocol), gpu ? el("span", { class: "sub mono" }, `/api/v1/listeners/${l.name}/rigs`) : null),
        el("td", { class: "num mono" }, num(l.port) ? String(l.port) : "—"),
        el("td", { class: "num", "data-col": "rigs" }, fmtCount(l.rigs)),
        el("td", { "data-col": "active" }, active.length ? active.join(", ")
          : el("span", { class: "warn-text" }, "none: rigs keep their last job")),
        el("td", { class: "num" }, fmtCount(c.pool_switches)),
        el("td", { class: "num", "data-col": "moves" }, gpu ? `${fmtCount(c.set_extranonce)} / ${fmtCount(c.client_reconnect)}` : "—"),
        el("td", { class: "num" }, fmtCount(c.accepted)),
        el("td", { class: "num" }, fmtCount(c.rejected)));
    }));
  }

  // --- pools table: one persistent row per pool, so buttons survive the 2 s refresh

  const poolRows = new Map();

  function makePoolRow(name) {
    const cells = {};
    const tr = el("tr", { "data-pool": name });
    const cell = (key, cls) => { cells[key] = el("td", { class: cls, "data-col": key }); tr.append(cells[key]); };
    cell("name", "sticky");
    cell("state");
    cell("hashrate", "num");
    cell("rigs", "num");
    cell("priority", "num");
    cell("weight", "num");
    cell("split", "num");
    cell("accepted", "num");
    cell("rejected", "num");
    cell("latency", "num");
    cell("job", "num");
    cell("actions");
    const edit = el("button", { type: "button", "data-action": "edit", onclick: () => openEdit(name) }, "Edit");
    const toggle = el("button", { type: "button", "data-action": "toggle", onclick: () => toggleEnabled(name) }, "Disable");
    const drain = el("button", { type: "button", "data-action": "drain", onclick: () => toggleDrain(name) }, "Drain");
    cells.actions.append(el("div", { class: "actions" }, edit, toggle, drain));
    return { tr, cells, toggle, drain };
  }

  function fill(cell, ...kids) {
    cell.replaceChildren(...kids.flat().filter((k) => k != null && k !== false)
      .map((k) => (k instanceof Node ? k : document.createTextNode(String(k)))));
  }

  // which rig port serves the pool, and what its rigs speak (shown once there is more than one port)
  function portLabel(p) {
    const name = listenerOf(p);
    const info = listenerInfo(name);
    const protocol = isGpu(p) ? p.protocol : "sv1";
    return el("span", { class: `port-label ${isGpu(p) ? "port-gpu" : "port-sv1"}`, "data-listener": name,
      title: `rig port ${name}${info && info.port ? ` (:${info.port})` : ""}: ${protocolName(protocol)}` },
    `${name} · ${protocolName(protocol)}`);
  }

  function updatePoolRow(row, p) {
    const c = row.cells;
    row.tr.classList.toggle("active", !!p.active);
    fill(c.name,
      el("span", { class: "pool-name" }, p.name),
      p.active ? el("span", { class: "chip chip-active" }, "active") : null,
      p.standby === "cold" ? el("span", { class: "chip", title: "cold standby: connected only when needed" }, "cold") : null,
      el("span", { class: "pool-url", title: p.url || "" }, p.url || ""),
      multiPort() ? portLabel(p) : null);

    const state = STATES.includes(p.state) ? p.state : "unknown";
    // a healthy pool's reason ("connected, subscribed, ...") is in the tooltip, not the table
    const why = p.state === "healthy" ? "" : p.reason || p.last_error || "";
    fill(c.state,
      el("span", { class: `badge ${state}`, title: p.reason || null }, p.state || "unknown"),
      p.draining ? el("span", { class: "chip" }, "draining") : null,
      p.narrow ? el("span", { class: "chip", title: String(p.narrow) }, "narrow") : null,
      why ? el("span", { class: "sub" }, why) : null);

    fill(c.priority, String(p.priority));
    fill(c.weight, num(p.weight) ? String(Number(p.weight.toPrecision(4))) : "—");
    fill(c.split, p.active ? `${fmtPct(p.goal_share)} / ${fmtPct(p.delivered_share)}` : "—");
    fill(c.hashrate, fmtHs(p.hashrate));
    fill(c.rigs, fmtCount(p.rigs));
    fill(c.accepted, fmtCount(p.accepted));

    const reasons = Object.entries(p.rejected || {}).filter(([, n]) => n > 0)
      .sort((a, b) => b[1] - a[1]).map(([why2, n]) => `${why2} ${fmtCount(n)}`);
    const extra = [];
    if (p.timeouts > 0) extra.push(`timeouts ${fmtCount(p.timeouts)}`);
    if (p.lost_total > 0) extra.push(`lost ${fmtCount(p.lost_total)}`);
    const total = p.rejected_total || 0;
    fill(c.rejected,
      el("span", { class: total > 0 && p.reject_ratio > 0.02 ? "warn-text" : "" },
        `${fmtCount(total)}${total > 0 ? ` (${fmtPct(p.reject_ratio)})` : ""}`),
      reasons.length || extra.length ? el("span", { class: "sub" }, [...reasons, ...extra].join(" · ")) : null);

    const lat = p.latency_ms || {};
    fill(c.latency, el("div", { class: "lat" },
      el("span", {}, num(lat.p50) || num(lat.p99) ? `${fmtMs(lat.p50)} / ${fmtMs(lat.p99)} ms` : "—"),
      sparkline(p.name)));

    const age = p.last_job_age_s;
    fill(c.job, el("span", { class: num(age) && age > 120 && p.state !== "disabled" ? "warn-text" : "" }, fmtAge(age)));

    const disabled = p.enabled === false;
    row.toggle.textContent = disabled ? "Enable" : "Disable";
    row.toggle.dataset.action = disabled ? "enable" : "disable";
    row.drain.textContent = p.draining ? "Undrain" : "Drain";
    row.drain.dataset.action = p.draining ? "undrain" : "drain";
    row.drain.disabled = disabled;
  }

  function renderPools() {
    const body = $("pools-body");
    const names = new Set(S.pools.map((p) => p.name));
    for (const [name, row] of poolRows) {
      if (!names.has(name)) { row.tr.remove(); poolRows.delete(name); }
    }
    const placeholder = body.querySelector("tr.placeholder");
    if (!S.pools.length) {
      if (!placeholder) body.replaceChildren(el("tr", { class: "placeholder" }, el("td", { colspan: 12, class: "empty" }, S.status ? "No pools configured" : "Loading…")));
      return;
    }
    if (placeholder) placeholder.remove();
    S.pools.forEach((p, i) => {
      let row = poolRows.get(p.name);
      if (!row) { row = makePoolRow(p.name); poolRows.set(p.name, row); }
      updatePoolRow(row, p);
      if (body.children[i] !== row.tr) body.insertBefore(row.tr, body.children[i] || null);
    });
  }

  function latencySeries(name) {
    const now = serverNow();
    const since = now - LATENCY_WINDOW_S;
    const live = (S.latency.get(name) || []).filter((pt) => pt[0] >= since);
    const liveStart = live.length ? live[0][0] : Infinity;
    const pts = [];
    const rows = S.history && Array.isArray(S.history.rows) ? S.history.rows : [];
    for (const r of rows) {
      if (r.pool !== name) continue;
      const t = r.minute + 30;
      if (t < since || r.minute + 60 > liveStart) continue;
      if (!num(r.latency_p50_ms) && !num(r.latency_p99_ms)) continue;
      pts.push([t, r.latency_p50_ms, r.latency_p99_ms]);
    }
    return pts.concat(live);
  }

  function sparkline(name) {
    const W = 96;
    const H = 26;
    const pts = latencySeries(name);
    const box = svg("svg", { class: "spark", width: W, height: H, viewBox: `0 0 ${W} ${H}`,
      "data-points": pts.length, role: "img",
      "aria-label": `${name} latency over the last hour` });
    box.append(svg("title", {}, `${name}: share latency over the last hour, p50 (dark) and p99 (light); `
      + "per-minute history plus this page's 2 s samples"));
    box.append(svg("line", { x1: 0, x2: W, y1: H - 0.5, y2: H - 0.5, stroke: "#e2e5ea" }));
    if (!pts.length) return box;
    const now = serverNow();
    const t0 = Math.min(pts[0][0], now - 60);
    const span = Math.max(60, now - t0);
    const max = Math.max(...pts.map((p) => Math.max(num(p[1]) ? p[1] : 0, num(p[2]) ? p[2] : 0)), 0.001);
    const x = (t) => ((t - t0) / span) * (W - 2) + 1;
    const y = (v) => H - 2 - (v / max) * (H - 5);
    const color = poolColor(name);
    for (const [idx, width, opacity] of [[2, 1.2, 0.45], [1, 1.6, 1]]) {
      const line = pts.filter((p) => num(p[idx])).map((p) => `${x(p[0]).toFixed(1)},${y(p[idx]).toFixed(1)}`);
      if (line.length === 1) {
        const [cx, cy] = line[0].split(",");
        box.append(svg("circle", { cx, cy, r: 2, fill: color, "fill-opacity": opacity }));
      } else if (line.length > 1) {
        box.append(svg("polyline", { points: line.join(" "), fill: "none", stroke: color,
          "stroke-width": width, "stroke-opacity": opacity, "stroke-linejoin": "round" }));
      }
    }
    return box;
  }

  // --- events timeline

  const EVENT_GROUPS = {
    switch: (k) => k === "pool_switch",
    health: (k) => ["pool_health", "pool_up", "pool_narrow", "pool_message", "pool_set_extranonce",
      "pool_reconnect_requested", "rigs_extranonce_changed"].includes(k),
    operator: (k) => ["pool_changed", "pool_drain", "pool_undrain", "config_reloaded"].includes(k),
    rental: (k) => typeof k === "string" && (k.startsWith("rental") || k.startsWith("order")),
    power: (k) => typeof k === "string" && k.startsWith("power_"),
  };

  const list = (v) => (Array.isArray(v) ? v.join(", ") : v == null ? "" : String(v));

  const shortId = (id) => String(id || "?").slice(0, 8);

  // rental_decision codes (proxy/rental/controller.py, BackfillPolicy) in words
  const RENTAL_CODES = {
    ok: "on target, no rental needed", unknown: "delivered hashrate not known yet",
    deficit: "under target", covered: "the order covers the deficit", recovering: "rigs are back",
    min_order: "rigs are back; the order runs its minimum time", price: "market price above the price cap",
    no_hashprice: "hashprice unknown: not renting on a guess",
    budget: "budget too low for an order", backoff: "backing off after a marketplace error",
    no_quote: "no market quote yet", cooldown: "waiting out the marketplace's cooldown",
  };

  function describeRental(e, k) {
    const order = `Order ${shortId(e.order_id)}`;
    const rental = (text) => ({ tag: "rental", cls: "ev-rental", text, reason: e.reason || "" });
    switch (k) {
      case "rental_decision": {
        const words = RENTAL_CODES[e.code] || String(e.code || e.action || "decision").replace(/_/g, " ");
        const figures = num(e.delivered_hs) ? `: ${fmtHs(e.delivered_hs)} delivered of ${fmtHs(e.target_hs)}` : "";
        const prices = e.market_price != null && e.hashprice != null
          ? ` · market ${fmtPrice(e.market_price)}, hashprice ${fmtHashprice(e.hashprice)}` : "";
        return rental(`${words.charAt(0).toUpperCase()}${words.slice(1)}${figures}${prices}`);
      }
      case "rental_order_placed":
        return rental(`${order} placed: ${fmtHs(toNum(e.limit_hs))} at ${fmtPrice(e.price)}, ${fmtBtc(e.amount_btc)} in escrow`);
      case "rental_order_resized":
        return rental(`${order} resized: ${fmtHs(toNum(e.limit_hs))} at ${fmtPrice(e.price)}`);
      case "rental_order_refilled":
        return rental(`${order} refilled with ${fmtBtc(e.amount_btc)}`);
      case "rental_order_cancelled":
        return rental(`${order} cancelled, ${fmtBtc(e.spent_btc)} spent`);
      case "rental_order_closed":
        return rental(`${order} closed at the marketplace, ${fmtBtc(e.spent_btc)} spent`);
      case "rental_reconcile":
        return rental(`${order} ${e.action === "adopt" ? "adopted" : "closed"} when the ledger met the marketplace`);
      case "rental_cooldown":
        return rental(`${order}: the marketplace asks to wait ${fmtAge(toNum(e.retry_after_s))}`);
      case "rental_refused":
        return rental("Call refused by the max-price and budget guard");
      case "rental_error":
        return { ...rental(`Marketplace call failed (${String(e.code || "error").replace(/_/g, " ")})`), cls: "ev-bad" };
      default:
        return null;
    }
  }

  // power_decision decisions (proxy/power/plan.py) in words, with how the event is coloured
  const POWER_DECISIONS = {
    ok: ["on mains, nothing at risk", "ev-good"], watch: ["on battery, runtime left: watching", "ev-warn"],
    order: ["renting the at-risk hashrate now", "ev-warn"], unknown: ["state unknown: nothing decided from it", "ev-warn"],
    scheduled: ["scheduled", ""], ordering: ["renting ahead of the window", "ev-warn"],
    open: ["window open: rigs off", "ev-warn"], over: ["window over", "ev-good"],
  };
  const POWER_STATES = { online: "ev-good", battery: "ev-warn", critical: "ev-bad", unknown: "ev-warn" };

  function describePower(e, k) {
    const power = (text, cls = "", reason = "") => ({ tag: "power", cls, text, reason });
    if (k === "power_ups") return power(String(e.reason || `UPS ${e.ups}`), POWER_STATES[e.power] || "");
    if (k === "power_decision") {
      const [words, cls] = POWER_DECISIONS[e.decision] || [String(e.decision || "decision"), ""];
      const what = e.ups != null ? `UPS ${e.ups}` : `Curtailment ${e.curtailment || "?"}`;
      const figures = num(e.rig_count) ? ` · ${fmtCount(e.rig_count)} rigs, ${fmtHs(toNum(e.at_risk_hs))} at risk` : "";
      return power(`${what}: ${words}${figures}`, cls, String(e.reason || ""));
    }
    return power(String(e.reason || k.replace(/_/g, " ")), k === "power_error" ? "ev-bad" : "");
  }

  function describe(e) {
    const k = String(e.kind || "event");
    if (EVENT_GROUPS.rental(k)) {
      const d = describeRental(e, k);
      if (d) return d;
    }
    if (EVENT_GROUPS.power(k)) return describePower(e, k);
    switch (k) {
      case "pool_switch": {
        const reason = String(e.reason || "");
        const failback = /^failback/i.test(reason);
        const to = list(e.to_pools) || "none";
        return {
          tag: failback ? "failback" : "switch", cls: failback ? "ev-failback" : to === "none" ? "ev-bad" : "ev-switch",
          text: `${list(e.from_pools) || "none"} → ${to}${e.rigs_moved > 0 ? ` · ${fmtCount(e.rigs_moved)} rigs moved` : ""}`,
          reason: [reason, e.note].filter(Boolean).join(" — "),
        };
      }
      case "pool_health": {
        const cls = e.state === "healthy" ? "ev-good" : e.state === "down" ? "ev-bad" : "ev-warn";
        return { tag: "health", cls, text: `${e.pool}: ${e.previous || "?"} → ${e.state}`, reason: e.reason || "" };
      }
      case "pool_up":
        return { tag: "pool up", cls: "ev-good", text: `${e.pool} ready`, reason: "" };
      case "pool_narrow":
        return { tag: "health", cls: "ev-warn", text: `${e.pool} is too narrow for the rigs' extranonce layout`, reason: e.reason || "" };
      case "pool_message":
        return { tag: "pool", cls: "", text: `${e.pool} says: ${e.message || ""}`, reason: "" };
      case "pool_set_extranonce":
        return { tag: "pool", cls: "", text: `${e.pool} set a new extranonce (extranonce2 ${e.extranonce2_size} bytes)`, reason: "" };
      case "pool_reconnect_requested":
        return { tag: "pool", cls: "", text: `${e.pool} asks the proxy to reconnect to ${e.host}:${e.port}`, reason: "" };
      case "rigs_extranonce_changed":
        return { tag: "health", cls: "ev-warn", text: `Rigs on ${e.pool} got a new extranonce`, reason: e.reason || "" };
      case "pool_changed": {
        const ch = e.changes && typeof e.changes === "object"
          ? Object.entries(e.changes).map(([f, v]) => `${f} ${v && v.from}→${v && v.to}`).join(", ") : "";
        return { tag: "operator", cls: "", text: `${e.pool}: ${ch || "changed"}`, reason: "" };
      }
      case "pool_drain":
        return { tag: "operator", cls: "", text: `${e.pool} drained${num(e.rigs) ? ` (${fmtCount(e.rigs)} rigs)` : ""}`, reason: "" };
      case "config_reloaded": {
        const parts = [];
        for (const f of ["added", "removed", "updated"]) if (Array.isArray(e[f]) && e[f].length) parts.push(`${f} ${e[f].join(", ")}`);
        return { tag: "config", cls: "", text: `config reloaded${parts.length ? `: ${parts.join("; ")}` : " (no pool changes)"}`, reason: "" };
      }
      case "instance_down":
        return { tag: "farm", cls: "ev-bad", text: `Instance ${e.instance} not answering (its last ${fmtHs(toNum(e.last_known_hashrate))} not counted)`, reason: e.reason || "" };
      case "instance_up":
        return { tag: "farm", cls: "ev-good", text: `Instance ${e.instance} answering: ${fmtCount(e.rigs)} rigs, ${fmtHs(toNum(e.hashrate))}`, reason: e.reason || "" };
      case "farm_change":
      case "farm_change_retried":
        return { tag: "farm", cls: "", text: `${e.change}${k === "farm_change_retried" ? ` sent again to ${e.instance}: ${e.result}` : ""}`, reason: e.reason || "" };
      default: {
        // a kind this page does not know yet: its fields in words, each in its unit
        const skip = new Set(["seq", "time", "kind", "reason", "pool", "message", "instance"]);
        const detail = Object.entries(e).filter(([f, v]) => !skip.has(f) && v != null && typeof v !== "object")
          .slice(0, 4).map(([f, v]) => fmtField(f, v)).join(", ");
        const head = [e.pool, e.message].filter(Boolean).join(": ");
        const words = k.replace(/^pool_|^rental_/, "").replace(/_/g, " ");
        return {
          tag: EVENT_GROUPS.rental(k) ? "rental" : words, cls: EVENT_GROUPS.rental(k) ? "ev-rental" : "",
          text: [`${words.charAt(0).toUpperCase()}${words.slice(1)}`, head].filter(Boolean).join(" · ") + (detail ? ` (${detail})` : ""),
          reason: e.reason || "",
        };
      }
    }
  }

  function refreshEventTimes() {
    for (const t of $("events").querySelectorAll("time[data-t]")) {
      const text = fmtAgo(Number(t.dataset.t));
      if (t.textContent !== text) t.textContent = text;
    }
  }

  function renderEvents() {
    refreshEventTimes();
    const filter = EVENT_GROUPS[S.eventFilter];
    const items = [...S.events.values()].filter((e) => !filter || filter(String(e.kind)))
      .sort((a, b) => (b.time || 0) - (a.time || 0) || (b.seq || 0) - (a.seq || 0)).slice(0, 150);
    const sig = `${S.eventFilter}|${items.length}|${items.length ? `${items[0].time}|${items[0].seq}` : ""}`;
    if (sig === S.eventsShown) return;
    S.eventsShown = sig;
    const ol = $("events");
    if (!items.length) {
      ol.replaceChildren(el("li", { class: "empty" }, S.status ? "No events yet" : "Loading…"));
      return;
    }
    ol.replaceChildren(...items.map((e) => {
      const d = describe(e);
      return el("li", { class: `event ${d.cls}`, "data-kind": e.kind },
        el("div", { class: "ev-head" },
          el("time", { class: "ev-time", datetime: num(e.time) ? new Date(e.time * 1000).toISOString() : null,
            title: fmtClock(e.time), "data-t": num(e.time) ? e.time : null }, fmtAgo(e.time)),
          el("span", { class: "ev-tag" }, d.tag)),
        el("div", { class: "ev-text" }, d.text),
        d.reason ? el("div", { class: "ev-reason" }, d.reason) : null);
    }));
  }

  // --- hashrate history chart (stacked columns per time bucket)

  function niceStep(max, ticks) {
    const raw = max / ticks;
    const mag = 10 ** Math.floor(Math.log10(raw));
    const norm = raw / mag;
    return (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10) * mag;
  }

  // the chart stacks the pools of one rig port: SHA-256 and Ethash hashrates do not add up.
  // A row names its port (rows stored before GPU ports existed have none: the SV1 port's)
  const rowListener = (r) => r.listener || sv1Name();

  function chartPorts(rows) {
    const names = [];
    const add = (n) => { if (n && !names.includes(n)) names.push(n); };
    if (sv1Pools().length) add(sv1Name());
    for (const l of gpuListeners()) add(l.name);
    for (const r of rows) add(rowListener(r));
    return names;
  }

  function chartPort(rows) {
    const ports = chartPorts(rows);
    return ports.includes(S.historyListener) ? S.historyListener : ports[0] || "";
  }

  function renderPortSelect(rows) {
    const select = $("history-listener");
    const ports = chartPorts(rows);
    select.hidden = ports.length < 2;
    const label = (n) => {
      const info = listenerInfo(n);
      return info ? `${n} · ${protocolName(info.protocol)}` : n;
    };
    const have = [...select.options].map((o) => `${o.value}|${o.textContent}`);
    if (ports.map((n) => `${n}|${label(n)}`).join("\u0000") !== have.join("\u0000")) {
      select.replaceChildren(...ports.map((n) => el("option", { value: n }, label(n))));
    }
    select.value = chartPort(rows);
  }

  function historyPools(rows) {
    const port = chartPort(rows);
    const names = S.pools.filter((p) => listenerOf(p) === port).map((p) => p.name);
    for (const r of rows) if (rowListener(r) === port && !names.includes(r.pool)) names.push(r.pool);
    return names;
  }

  function renderHistory() {
    const box = $("history-chart");
    const h = S.history;
    S.chartTarget = rentalTarget(S.rentals);
    if (!h) {
      box.replaceChildren(el("p", { class: "empty" }, S.historyError ? `History unavailable: ${S.historyError}` : "Loading history…"));
      return;
    }
    const minutes = S.historyMinutes;
    const now = serverNow();
    const start = now - minutes * 60;
    const all = Array.isArray(h.rows) ? h.rows : [];
    renderPortSelect(all);
    const port = chartPort(all);
    const rows = all.filter((r) => num(r.minute) && r.minute + 60 > start && num(r.hashrate) && rowListener(r) === port);
    if (!rows.length) {
      box.replaceChildren(el("p", { class: "empty" }, `No samples in this range yet: the proxy records one per `
        + `${fmtAge(h.interval_s)} (proxy.history_sample_s)${h.backend === "memory" ? ", in memory only (proxy.history_db is empty)" : ""}.`));
      renderHistoryLegend();
      return;
    }
    const bucket = Math.max(60, Math.ceil((minutes * 60) / 120 / 60) * 60);
    const first = Math.floor(start / bucket) * bucket;
    const last = Math.floor(now / bucket) * bucket;
    const n = Math.max(1, Math.round((last - first) / bucket) + 1);
    const names = historyPools(all);
    // average of the per-minute gauges of each pool within a bucket
    const sums = new Map();
    for (const r of rows) {
      const b = Math.floor(r.minute / bucket) * bucket;
      const key = `${b}|${r.pool}`;
      const acc = sums.get(key) || [0, 0];
      acc[0] += r.hashrate; acc[1] += 1;
      sums.set(key, acc);
    }
    const columns = [];
    let maxY = 0;
    for (let i = 0; i < n; i += 1) {
      const b = first + i * bucket;
      const parts = [];
      let total = 0;
      for (const name of names) {
        const acc = sums.get(`${b}|${name}`);
        if (!acc) continue;
        const v = acc[0] / acc[1];
        parts.push([name, v]);
        total += v;
      }
      columns.push({ b, parts, total });
      maxY = Math.max(maxY, total);
    }
    // the rental target is the SV1 port's (or, with no SV1 pool, the GPU port's)
    const target = port === sv1Name() || !sv1Pools().length ? S.chartTarget : null;
    if (target != null) maxY = Math.max(maxY, target);
    if (maxY <= 0) maxY = 1;
    const step = niceStep(maxY * 1.05, 4);
    const top = Math.ceil((maxY * 1.05) / step) * step;

    const W = Math.max(280, Math.round(box.clientWidth - 28) || 600);
    const H = W < 500 ? 190 : 230;
    const m = { l: 62, r: 8, t: 10, b: 24 };
    const pw = W - m.l - m.r;
    const ph = H - m.t - m.b;
    const colW = pw / n;
    const gap = colW > 4 ? Math.min(2, colW * 0.2) : 0;
    const y = (v) => m.t + ph - (v / top) * ph;
    const root = svg("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img",
      "aria-label": `Hashrate by pool${multiPort() ? ` of ${port}` : ""}, last ${fmtAge(minutes * 60)}`,
      "data-listener": port,
      "data-columns": columns.filter((c) => c.parts.length).length,
      "data-first": columns.find((c) => c.parts.length)?.b ?? "" });
    const grid = svg("g", { class: "grid" });
    const axis = svg("g", { class: "axis" });
    for (let v = 0; v <= top + step / 2; v += step) {
      grid.append(svg("line", { x1: m.l, x2: W - m.r, y1: y(v).toFixed(1), y2: y(v).toFixed(1) }));
      axis.append(svg("text", { x: m.l - 6, y: (y(v) + 4).toFixed(1), "text-anchor": "end" }, fmtHs(v)));
    }
    const labelEvery = Math.max(1, Math.ceil(n / Math.max(2, Math.floor(pw / 80))));
    for (let i = 0; i < n; i += labelEvery) {
      const t = columns[i].b;
      axis.append(svg("text", { x: (m.l + i * colW + colW / 2).toFixed(1), y: H - 6, "text-anchor": "middle" },
        minutes > 1440 ? fmtClock(t, false).replace(/ \d\d:\d\d$/, "") || fmtClock(t, false) : fmtClock(t, false)));
    }
    root.append(grid, axis);
    const bars = svg("g", { class: "bars" });
    columns.forEach((col, i) => {
      let base = 0;
      const x = m.l + i * colW + gap / 2;
      const w = Math.max(1, colW - gap);
      const tip = `${fmtClock(col.b, false)}: ${col.parts.map(([nm, v]) => `${nm} ${fmtHs(v)}`).join(", ") || "no data"}`;
      for (const [name, v] of col.parts) {
        const y0 = y(base);
        const y1 = y(base + v);
        base += v;
        if (y0 - y1 < 0.2) continue;
        bars.append(svg("rect", { x: x.toFixed(2), y: y1.toFixed(2), width: w.toFixed(2),
          height: (y0 - y1).toFixed(2), fill: poolColor(name), "data-pool": name }, svg("title", {}, tip)));
      }
    });
    root.append(bars);
    if (target != null) {
      root.append(svg("line", { class: "target", x1: m.l, x2: W - m.r, y1: y(target), y2: y(target) }));
      root.append(svg("text", { class: "target-label", x: W - m.r - 4, y: y(target) - 4, "text-anchor": "end" },
        `target ${fmtHs(target)}`));
    }
    root.append(svg("line", { x1: m.l, x2: W - m.r, y1: m.t + ph, y2: m.t + ph, stroke: "#cdd2d9" }));
    box.replaceChildren(root);
    renderHistoryLegend();
  }

  function renderHistoryLegend() {
    const rows = S.history && Array.isArray(S.history.rows) ? S.history.rows : [];
    const names = historyPools(rows);  // the pools of the port the chart shows
    const now = new Map(S.pools.map((p) => [p.name, p.hashrate]));
    const legend = $("history-legend");
    const parts = names.map((name) => el("span", {},
      el("span", { class: "swatch", "data-color": poolColor(name) }), `${name} ${now.has(name) ? fmtHs(now.get(name)) : "(removed)"}`));
    const note = S.history ? el("span", { class: "muted" },
      `per-minute samples · ${S.history.backend === "sqlite" ? "kept across restarts" : "in memory: lost on restart"}`) : null;
    legend.replaceChildren(...parts, note || "");
    for (const sw of legend.querySelectorAll(".swatch")) sw.style.background = sw.dataset.color;
  }

  // --- rigs table

  function renderPoolFilter() {
    const select = $("rig-pool");
    const want = ["", ...sv1Pools().map((p) => p.name)];  // the rigs table lists the SV1 port's rigs
    const have = [...select.options].map((o) => o.value);
    if (want.join("\u0000") === have.join("\u0000")) return;
    select.replaceChildren(...want.map((v) => el("option", { value: v }, v || "All pools")));
    select.value = want.includes(S.rig.pool) ? S.rig.pool : "";
  }

  // this table lists the SV1 port's rigs; a GPU port's are at /api/v1/listeners/{name}/rigs
  function renderRigsTitle() {
    // a proxy with GPU ports only has no SV1 rigs to list: the Rig ports card counts its rigs
    $("rigs-card").hidden = multiPort() && !S.listeners.some((l) => l && l.protocol === "sv1");
    const data = S.rigs;
    if (!data || data.error) return;
    const total = num(data.total) ? data.total : (Array.isArray(data.rigs) ? data.rigs.length : 0);
    const where = multiPort() ? ` to ${sv1Name()} (Stratum V1); GPU rigs: see Rig ports` : "";
    setText("rigs-total", S.rig.q || S.rig.pool ? `${fmtCount(total)} matching` : `${fmtCount(total)} connected${where}`);
  }

  function renderRigs() {
    const body = $("rigs-body");
    const data = S.rigs;
    for (const th of document.querySelectorAll("#rigs-table th[data-sort]")) {
      const key = th.dataset.sort;
      const sort = S.rig.sort.replace(/^-/, "");
      if (key === sort) th.setAttribute("aria-sort", S.rig.sort.startsWith("-") ? "descending" : "ascending");
      else th.removeAttribute("aria-sort");
    }
    if (!data) return;
    if (data.error) {
      body.replaceChildren(el("tr", {}, el("td", { colspan: 7, class: "empty" }, `Rigs unavailable: ${data.error}`)));
      return;
    }
    const rigs = Array.isArray(data.rigs) ? data.rigs : [];
    const total = num(data.total) ? data.total : rigs.length;
    const filtered = S.rig.q || S.rig.pool;
    renderRigsTitle();
    setText("rig-range", total ? `${fmtCount(data.offset + 1)}–${fmtCount(data.offset + rigs.length)} of ${fmtCount(total)}` : "");
    $("rig-prev").disabled = data.offset <= 0;
    $("rig-next").disabled = data.offset + rigs.length >= total;
    if (!rigs.length) {
      body.replaceChildren(el("tr", {}, el("td", { colspan: 7, class: "empty" },
        filtered ? "No rig matches this filter" : "No rigs connected")));
      return;
    }
    body.replaceChildren(...rigs.map((r) => {
      const rejected = Object.values((r.shares && r.shares.rejected) || {}).reduce((a, b) => a + b, 0);
      const workers = Array.isArray(r.workers) && r.workers.length > 1 ? ` +${r.workers.length - 1}` : "";
      return el("tr", { "data-rig": r.id },
        el("td", { class: "sticky mono", title: r.user_agent ? `${r.user_agent} · rig #${r.id}` : `rig #${r.id}` },
          (r.worker || `(not authorized) #${r.id}`) + workers),
        el("td", { class: "mono" }, r.remote || "",
          r.instance ? el("span", { class: "sub" }, `on ${r.instance}`) : null),  // the farm control plane
        el("td", {}, r.pool || el("span", { class: "muted" }, "none")),
        el("td", { class: "num" }, fmtCompact(r.difficulty)),
        el("td", { class: "num" }, fmtHs(r.hashrate)),
        el("td", { class: "num" }, fmtCount(r.shares && r.shares.accepted),
          rejected ? el("span", { class: "sub" }, `${fmtCount(rejected)} rejected`) : null),
        el("td", { class: `num${r.stalled || (num(r.last_share_age_s) && r.last_share_age_s > 300) ? " warn-text" : ""}`,
                   title: r.stalled ? "stalled: no share for 6 share intervals" : "" },
          (num(r.last_share_age_s) ? `${fmtAge(r.last_share_age_s)} ago` : "never") + (r.stalled ? " (stalled)" : "")));
    }));
  }

  // ------------------------------------------------------------------ messages, dialogs

  let messageTimer = 0;
  function showMessage(kind, text) {
    const box = $("message");
    box.className = `message ${kind}`;
    $("message-text").textContent = text;
    box.hidden = false;
    clearTimeout(messageTimer);
    if (kind === "ok") messageTimer = setTimeout(() => { box.hidden = true; }, 8000);
  }

  function confirmAction(title, text, okLabel) {
    const dlg = $("confirm-dialog");
    setText("confirm-title", title);
    setText("confirm-text", text);
    $("confirm-ok").textContent = okLabel;
    return new Promise((resolve) => {
      const done = (answer) => {
        $("confirm-ok").removeEventListener("click", yes);
        $("confirm-cancel").removeEventListener("click", no);
        dlg.removeEventListener("cancel", no);
        if (dlg.open) dlg.close();
        resolve(answer);
      };
      const yes = () => done(true);
      const no = () => done(false);
      $("confirm-ok").addEventListener("click", yes);
      $("confirm-cancel").addEventListener("click", no);
      dlg.addEventListener("cancel", no);
      dlg.showModal();
      $("confirm-cancel").focus();
    });
  }

  async function write(method, path, body, describeOk) {
    try {
      const result = await request(method, path, body, true);
      showMessage("ok", describeOk(result));
      refreshSoon();
      S.historyAt = 0;
      return result;
    } catch (err) {
      if (err instanceof Unreachable) {
        showMessage("error", `Not applied: the proxy is unreachable (${err.message}).`);
      } else {
        const hint = err.status === 401 && !token ? " Enter the API token at the top of the page." : "";
        showMessage("error", `Refused by the proxy (HTTP ${err.status}): ${err.message}.${hint}`);
      }
      return null;
    }
  }

  const poolPath = (name) => `/api/v1/pools/${encodeURIComponent(name)}`;
  const findPool = (name) => S.pools.find((p) => p.name === name);

  let editing = null;
  function openEdit(name) {
    const p = findPool(name);
    if (!p) return;
    editing = p;
    setText("edit-title", `Edit pool ${name}`);
    $("edit-priority").value = String(p.priority);
    $("edit-weight").value = String(p.weight);
    $("edit-error").hidden = true;
    $("edit-dialog").showModal();
    $("edit-priority").focus();
    $("edit-priority").select();
  }

  async function applyEdit(ev) {
    ev.preventDefault();
    const p = editing;
    if (!p) return;
    const prio = $("edit-priority").value.trim();
    const weight = $("edit-weight").value.trim();
    const body = {};
    const err = (text) => { const e = $("edit-error"); e.textContent = text; e.hidden = false; };
    if (!/^-?\d+$/.test(prio)) { err("Priority must be a whole number."); return; }
    if (!(weight !== "" && Number.isFinite(Number(weight)) && Number(weight) >= 0)) { err("Weight must be a number ≥ 0."); return; }
    if (Number(prio) !== p.priority) body.priority = Number(prio);
    if (Number(weight) !== p.weight) body.weight = Number(weight);
    $("edit-dialog").close();
    editing = null;
    if (!Object.keys(body).length) { showMessage("ok", `${p.name}: nothing changed.`); return; }
    await write("PATCH", poolPath(p.name), body, (res) =>
      `${p.name}: ${Object.entries(body).map(([k, v]) => `${k} ${p[k]} → ${v}`).join(", ")}.`
      + (res && res.active ? ` ${p.name} is active.` : ""));
  }

  async function toggleEnabled(name) {
    const p = findPool(name);
    if (!p) return;
    if (p.enabled === false) {
      await write("PATCH", poolPath(name), { enabled: true }, () => `${name} enabled.`);
      return;
    }
    const rigs = p.rigs ? `Its ${fmtCount(p.rigs)} rigs move to the next usable pool` : "It takes no hashrate until enabled";
    if (!await confirmAction(`Disable ${name}?`, `${rigs}; no rig is disconnected. Its connections close.`, "Disable")) return;
    await write("PATCH", poolPath(name), { enabled: false }, () => `${name} disabled.`);
  }

  async function toggleDrain(name) {
    const p = findPool(name);
    if (!p) return;
    if (p.draining) {
      await write("POST", `${poolPath(name)}/undrain`, undefined, () => `${name} takes hashrate again.`);
      return;
    }
    const text = `${p.rigs ? `Its ${fmtCount(p.rigs)} rigs move to other pools` : "It takes no new hashrate"}; `
      + "it stays connected as a warm backup until undrained.";
    if (!await confirmAction(`Drain ${name}?`, text, "Drain")) return;
    await write("POST", `${poolPath(name)}/drain`, undefined, () => `${name} drained.`);
  }

  async function reloadConfig() {
    if (!await confirmAction("Reload the config file?",
      "Pools added, removed or changed in the file take effect now (as SIGHUP). Rigs stay connected.", "Reload")) return;
    await write("POST", "/api/v1/reload", undefined, (res) => {
      const parts = [];
      for (const f of ["added", "removed", "updated"]) if (Array.isArray(res[f]) && res[f].length) parts.push(`${f}: ${res[f].join(", ")}`);
      return `Config reloaded from ${res.path || "the config file"}${parts.length ? ` (${parts.join("; ")})` : " (no pool changes)"}.`;
    });
  }

  // ------------------------------------------------------------------ token

  function renderToken() {
    $("token-form").hidden = !!token;
    $("token-set").hidden = !token;
  }

  function saveToken(ev) {
    ev.preventDefault();
    const value = $("token-input").value.trim();
    if (!value) { showMessage("error", "Enter the API token (api.token in the proxy's config)."); return; }
    token = value;
    try { sessionStorage.setItem(TOKEN_KEY, value); } catch (_) { /* private mode: kept in memory */ }
    $("token-input").value = "";
    renderToken();
    showMessage("ok", "Token kept for this browser tab; changes are now sent with it.");
  }

  function forgetToken() {
    token = "";
    try { sessionStorage.removeItem(TOKEN_KEY); } catch (_) { /* nothing stored */ }
    renderToken();
    showMessage("ok", "Token forgotten.");
  }

  // ------------------------------------------------------------------ wiring

  function wire() {
    $("token-form").addEventListener("submit", saveToken);
    $("token-forget").addEventListener("click", forgetToken);
    $("reload-btn").addEventListener("click", reloadConfig);
    $("message-close").addEventListener("click", () => { $("message").hidden = true; });
    $("edit-form").addEventListener("submit", applyEdit);
    $("edit-cancel").addEventListener("click", () => { editing = null; $("edit-dialog").close(); });
    $("event-filter").addEventListener("change", (ev) => { S.eventFilter = ev.target.value; renderEvents(); });
    $("history-listener").addEventListener("change", (ev) => { S.historyListener = ev.target.value; renderHistory(); });

    for (const btn of document.querySelectorAll("#range button")) {
      btn.addEventListener("click", () => {
        S.historyMinutes = Number(btn.dataset.minutes);
        for (const b of document.querySelectorAll("#range button")) b.setAttribute("aria-pressed", String(b === btn));
        renderHistory();
        loadHistory();
      });
    }

    for (const th of document.querySelectorAll("#rigs-table th[data-sort]")) {
      th.tabIndex = 0;
      const sortBy = () => {
        const key = th.dataset.sort;
        const numeric = ["difficulty", "hashrate", "accepted"].includes(key);
        if (S.rig.sort.replace(/^-/, "") === key) S.rig.sort = S.rig.sort.startsWith("-") ? key : `-${key}`;
        else S.rig.sort = numeric ? `-${key}` : key;
        S.rig.offset = 0;
        renderRigs();
        loadRigs().catch(unreachable);
      };
      th.addEventListener("click", sortBy);
      th.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); sortBy(); } });
    }

    let searchTimer = 0;
    $("rig-search").addEventListener("input", (ev) => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => {
        S.rig.q = ev.target.value.trim();
        S.rig.offset = 0;
        loadRigs().catch(unreachable);
      }, 250);
    });
    $("rig-pool").addEventListener("change", (ev) => {
      S.rig.pool = ev.target.value;
      S.rig.offset = 0;
      loadRigs().catch(unreachable);
    });
    $("rig-limit").addEventListener("change", (ev) => {
      S.rig.limit = Number(ev.target.value) || 50;
      S.rig.offset = 0;
      loadRigs().catch(unreachable);
    });
    $("rig-prev").addEventListener("click", () => {
      S.rig.offset = Math.max(0, S.rig.offset - S.rig.limit);
      loadRigs().catch(unreachable);
    });
    $("rig-next").addEventListener("click", () => {
      S.rig.offset += S.rig.limit;
      loadRigs().catch(unreachable);
    });

    let resizeFrame = 0;
    new ResizeObserver(() => {
      cancelAnimationFrame(resizeFrame);
      resizeFrame = requestAnimationFrame(renderHistory);
    }).observe($("history-chart"));
  }

  wire();
  renderToken();
  renderPools();
  renderEvents();
  renderRigs();
  poll();
})();
