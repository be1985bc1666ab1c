// RFM dashboard: live counts pushed over Server-Sent Events, the other panels re-read when the
// counts move. Vanilla JS, no build step. The stream is read with fetch() rather than
// EventSource so it can carry the bearer token; every untrusted string goes in as text.
"use strict";

const TEXT = {
  en: {
    title: "RFM segments", connecting: "connecting", streaming: "live", live: "Live segment counts", reconnecting: "reconnecting",
    total: "Total", segment: "Segment", customers: "Customers", grid: "Recency × Frequency",
    gridNote: "Rows: R score (5 = most recent). Columns: F score.", flow: "Segment transitions",
    flowNote: "Rows: from. Columns: to. Moves counted per hour.", h1: "last hour", h24: "last 24 hours",
    d7: "last 7 days", d30: "last 30 days", report: "Segment report", orders: "Orders",
    revenue: "Revenue", aov: "Avg order value", avgMonetary: "Avg monetary", channels: "Channels",
    lookup: "Customer lookup", find: "Find", notFound: "No such customer.", token: "API token",
    open: "Open", wrongToken: "That token was not accepted.", none: "(new)", erased: "(erased)",
    noMoves: "No moves in this range.", scores: "Scores", seq: "Changes", metrics: "Metrics",
    recent: "Recent changes", all: "All", deliveries: "Campaign webhooks", rule: "Rule",
    variant: "Variant", outcome: "Outcome", customer: "Customer", at: "Time",
    delivered: "delivered", dead_lettered: "dead-lettered",
    clv: "Predicted lifetime value", avgClv: "Avg predicted CLV", model: "Model",
    fitted: "fitted", prediction: "Prediction", pAlive: "P(alive)", next90: "purchases in 90 days",
    atRisk: "churn risk", notUpdated: "model not updated", noClv: "no CLV yet",
  },
  "zh-TW": {
    title: "RFM 顧客分群", connecting: "連線中", streaming: "即時更新中", live: "即時分群人數", reconnecting: "重新連線中",
    total: "總計", segment: "分群", customers: "顧客數", grid: "最近購買 × 購買頻率",
    gridNote: "列：R 分數（5 = 最近）。欄：F 分數。", flow: "分群轉換",
    flowNote: "列：轉出。欄：轉入。依小時統計。", h1: "過去 1 小時", h24: "過去 24 小時",
    d7: "過去 7 天", d30: "過去 30 天", report: "分群報表", orders: "訂單數",
    revenue: "營收", aov: "平均客單價", avgMonetary: "平均消費金額", channels: "通路",
    lookup: "顧客查詢", find: "查詢", notFound: "查無此顧客。", token: "API 權杖",
    open: "開啟", wrongToken: "權杖不正確。", none: "（新）", erased: "（已刪除）",
    noMoves: "此期間沒有轉換。", scores: "分數", seq: "轉換次數", metrics: "指標",
    recent: "最近轉換", all: "全部", deliveries: "行銷活動 Webhook", rule: "規則",
    variant: "版本", outcome: "結果", customer: "顧客", at: "時間",
    delivered: "已送達", dead_lettered: "送達失敗",
    clv: "預測顧客終身價值", avgClv: "平均預測 CLV", model: "模型",
    fitted: "訓練於", prediction: "預測", pAlive: "仍活躍機率", next90: "90 天內預期購買",
    atRisk: "流失風險", notUpdated: "模型未更新", noClv: "尚無 CLV",
  },
};

const state = {
  lang: localStorage.getItem("rfm.lang") || (navigator.language.startsWith("zh") ? "zh-TW" : "en"),
  token: sessionStorage.getItem("rfm.token") || "",
  scheme: null, names: {}, order: [], counts: {}, grid: null, flow: null, report: null, customer: null,
  deliveries: [],
};

const $ = (id) => document.getElementById(id);
const t = (key) => TEXT[state.lang][key] ?? TEXT.en[key] ?? key;
const segName = (id) => (id === null ? "" : (state.names[id]?.[state.lang] || state.names[id]?.en || id));
const count = (n) => new Intl.NumberFormat(state.lang).format(n);
// Money arrives as exact decimal strings: group the digits as text, never via a float.
const money = (s) => (s == null ? "–" : s.replace(/^(-?\d+)/, (w) => w.replace(/\B(?=(\d{3})+$)/g, ",")));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class Unauthorized extends Error {}

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function headers() {
  return state.token ? { Authorization: `Bearer ${state.token}` } : {};
}

async function api(path) {
  const res = await fetch(path, { headers: headers(), cache: "no-store" });
  if (res.status === 401) throw new Unauthorized();
  if (res.status === 404) return null;
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res.json();
}

// ---- rendering ---------------------------------------------------------------------------

function renderText() {
  document.documentElement.lang = state.lang;
  document.title = t("title");
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const b of document.querySelectorAll("[data-lang]")) b.setAttribute("aria-pressed", String(b.dataset.lang === state.lang));
  if (state.scheme) $("scheme").textContent = state.scheme[state.lang] || state.scheme.en;
}

function renderCounts() {
  const ids = [...state.order, ...Object.keys(state.counts).filter((s) => !state.order.includes(s)).sort()];
  const max = Math.max(1, ...ids.map((s) => state.counts[s] || 0));
  const body = $("counts").tBodies[0];
  body.replaceChildren(...ids.map((id) => {
    const n = state.counts[id] || 0;
    const row = el("tr");
    row.dataset.segment = id;
    const bar = el("div", null, "bar");
    bar.style.width = `${(100 * n) / max}%`;
    const track = el("td", null, "track");
    track.append(bar);
    row.append(el("td", segName(id), "name"), track, el("td", count(n), "num n"));
    return row;
  }));
  $("total").textContent = count(Object.values(state.counts).reduce((a, b) => a + b, 0));
}

function renderGrid() {
  const g = state.grid;
  if (!g) return;
  const table = $("grid");
  const max = Math.max(1, ...g.rows.flatMap((r) => r.customers));
  const head = el("tr");
  head.append(el("th", "R \\ F"), ...g.f.map((f) => el("th", f)));
  const rows = g.rows.map((r) => {
    const tr = el("tr");
    tr.append(el("th", r.r));
    for (const n of r.customers) {
      const td = el("td", n ? count(n) : "", "num");
      td.style.setProperty("--heat", (n / max).toFixed(3));
      if (n / max > 0.55) td.classList.add("hot");
      tr.append(td);
    }
    return tr;
  });
  table.replaceChildren(el("thead"), el("tbody"));
  table.tHead.append(head);
  table.tBodies[0].append(...rows);
}

function renderFlow() {
  const f = state.flow;
  if (!f) return;
  const table = $("flow");
  if (!f.moves.length) {
    table.replaceChildren(el("caption", t("noMoves"), "muted"));
    return;
  }
  const rank = (id, fallback) => (id === null ? fallback : state.order.indexOf(id) >= 0 ? state.order.indexOf(id) : 999);
  const froms = [...new Set(f.moves.map((m) => m.from))].sort((a, b) => rank(a, -1) - rank(b, -1));
  const tos = [...new Set(f.moves.map((m) => m.to))].sort((a, b) => rank(a, 1000) - rank(b, 1000));
  const cell = new Map(f.moves.map((m) => [`${m.from}>${m.to}`, m.count]));
  const head = el("tr");
  head.append(el("th"), ...tos.map((to) => el("th", to === null ? t("erased") : segName(to), "num")));
  const rows = froms.map((from) => {
    const tr = el("tr");
    tr.append(el("th", from === null ? t("none") : segName(from)));
    for (const to of tos) tr.append(el("td", cell.has(`${from}>${to}`) ? count(cell.get(`${from}>${to}`)) : "", "num"));
    return tr;
  });
  table.replaceChildren(el("thead"), el("tbody"));
  table.tHead.append(head);
  table.tBodies[0].append(...rows);
}

function renderReport() {
  const r = state.report;
  if (!r) return;
  $("currency").textContent = r.currency;
  const cols = ["customers", "orders", "revenue", "aov", "avgMonetary"];
  const head = el("tr");
  head.append(el("th", t("segment")), ...cols.map((c) => el("th", t(c), "num")), el("th", t("channels")));
  const line = (name, s, channels) => {
    const tr = el("tr");
    tr.append(el("td", name), el("td", count(s.customers), "num"), el("td", count(s.orders), "num"),
      el("td", money(s.revenue), "num"), el("td", money(s.average_order_value), "num"),
      el("td", money(s.average_monetary), "num"),
      el("td", Object.entries(channels).slice(0, 3).map(([c, n]) => `${c} ${count(n)}`).join(" · "), "muted"));
    return tr;
  };
  const rows = r.segments.map((s) => {
    const tr = line(segName(s.id), s, s.channels);
    tr.dataset.segment = s.id;
    return tr;
  });
  const total = line(t("all"), r.total, {});
  total.className = "total";
  $("report").replaceChildren(el("thead"), el("tbody"), el("tfoot"));
  $("report").tHead.append(head);
  $("report").tBodies[0].append(...rows);
  $("report").tFoot.append(total);
}

function renderClv() {
  const r = state.report;
  const stale = r ? r.model_not_updated : null;
  const shown = r && r.prediction ? r.segments.filter((s) => s.predicted_clv_average !== null) : [];
  $("clv-section").hidden = shown.length === 0 && !stale;
  // A refused fit leaves the model before it (or none) in place: say so, with the reason.
  $("clv-stale").hidden = !stale;
  if (stale) $("clv-stale").textContent = `${t("notUpdated")}: ${stale.reason} (${stale.at.slice(0, 16).replace("T", " ")})`;
  const top = Math.max(...shown.map((s) => Number(s.predicted_clv_average)), 0.01);
  const rows = shown.map((s) => {
    const tr = el("tr");
    const bar = el("div", null, "bar");
    bar.style.width = `${(100 * Number(s.predicted_clv_average)) / top}%`;
    const cell = el("td", null, "track");
    cell.append(bar);
    tr.append(el("td", segName(s.id)), cell, el("td", money(s.predicted_clv_average), "num"));
    tr.dataset.segment = s.id;
    return tr;
  });
  const head = el("tr");
  head.append(el("th", t("segment")), el("th"), el("th", t("avgClv"), "num"));
  $("clv").replaceChildren(el("thead"), el("tbody"));
  $("clv").hidden = shown.length === 0;
  $("clv").tHead.append(head);
  $("clv").tBodies[0].append(...rows);
  const p = r ? r.prediction : null;
  $("clv-note").textContent = p
    ? `${t("model")} v${p.model_version} · ${t("fitted")} ${p.fitted_at.slice(0, 16).replace("T", " ")}`
    : t("noClv");
}

function renderCustomer() {
  const c = state.customer;
  const dl = $("customer");
  document.dispatchEvent(new CustomEvent("rfm:customer", { detail: c })); // panels of the lookup
  if (c === null) return dl.replaceChildren();
  if (c === "missing") return dl.replaceChildren(el("dd", t("notFound"), "muted"));
  const pair = (k, v) => [el("dt", k), el("dd", v)];
  const scores = Object.entries(c.scores).map(([k, v]) => `${k.toUpperCase()} ${v ?? "–"}`).join("  ");
  const m = c.metrics;
  const recent = c.recent_changes.slice(0, 5).map((ch) =>
    `${ch.at.slice(0, 16).replace("T", " ")}  ${ch.from === null ? t("none") : segName(ch.from)} → ${segName(ch.to)}`);
  dl.replaceChildren(
    ...pair("ID", c.customer_id), ...pair(t("segment"), segName(c.segment)), ...pair(t("scores"), scores),
    ...pair(t("metrics"), `${t("orders")} ${count(m.orders)} · ${money(m.monetary)} · ${m.last_order_at ?? "–"}`),
    ...pair(t("seq"), c.seq), ...pair(t("recent"), recent.join("\n")),
    ...(c.prediction ? pair(t("prediction"), [
      `${t("pAlive")} ${c.prediction.p_alive.toFixed(3)}`,
      `${t("next90")} ${c.prediction.expected_purchases_90d.toFixed(2)}`,
      `CLV ${c.prediction.clv === null ? "–" : money(c.prediction.clv)}`,
      ...(c.prediction.churn_risk ? [t("atRisk")] : []),
    ].join(" · ")) : []),
  );
}

function renderDeliveries() {
  const list = state.deliveries;
  $("deliveries-section").hidden = list.length === 0;
  const head = el("tr");
  head.append(...["at", "rule", "customer", "variant", "outcome"].map((k) => el("th", t(k))));
  const rows = list.slice(0, 12).map((d) => {
    const tr = el("tr");
    tr.append(el("td", new Date(d.at).toLocaleTimeString(state.lang)), el("td", d.rule),
      el("td", d.customer_id), el("td", d.variant ?? "–"), el("td", t(d.outcome)));
    return tr;
  });
  $("deliveries").replaceChildren(el("thead"), el("tbody"));
  $("deliveries").tHead.append(head);
  $("deliveries").tBodies[0].append(...rows);
}

function renderAll() {
  renderText(); renderCounts(); renderGrid(); renderFlow(); renderReport(); renderClv(); renderCustomer();
  renderDeliveries();
}

// ---- data --------------------------------------------------------------------------------

async function loadSegments() {
  const doc = await api("/api/segments");
  state.order = doc.segments.map((s) => s.id);
  for (const s of doc.segments) state.names[s.id] = s.name;
  state.counts = Object.fromEntries(doc.segments.filter((s) => s.customers).map((s) => [s.id, s.customers]));
  state.scheme = doc.scheme.name;
}

async function loadPanels() {
  const hours = Number($("range").value);
  const to = new Date();
  const from = new Date(to.getTime() - hours * 3600e3);
  const q = new URLSearchParams({ from: from.toISOString(), to: to.toISOString() });
  let sent;
  [state.grid, state.flow, state.report, sent] = await Promise.all(
    [api("/api/grid"), api(`/api/transitions?${q}`), api("/api/report"), api("/api/deliveries")]);
  state.deliveries = sent.deliveries;
  renderGrid(); renderFlow(); renderReport(); renderClv(); renderDeliveries();
}

// Re-read the panels when counts move: at once, then at most every two seconds.
let panelsDue = null;
let panelsAt = 0;
function schedulePanels() {
  if (panelsDue) return;
  const wait = Math.max(0, panelsAt + 2000 - Date.now());
  panelsDue = setTimeout(() => {
    panelsDue = null;
    panelsAt = Date.now();
    loadPanels().catch(failed);
  }, wait);
}

function setStatus(key) {
  const s = $("status");
  s.dataset.state = key;
  s.dataset.i18n = key;
  s.textContent = t(key);
}

async function follow() {
  for (;;) {
    try {
      const res = await fetch("/api/live", { headers: headers(), cache: "no-store" });
      if (res.status === 401) throw new Unauthorized();
      if (!res.ok || !res.body) throw new Error(`live: HTTP ${res.status}`);
      setStatus("streaming");
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          onEvent(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch (err) {
      if (err instanceof Unauthorized) return failed(err);
    }
    setStatus("reconnecting");
    await sleep(1000);
  }
}

function onEvent(block) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
  }
  if (name !== "counts" || !data.length) return;
  state.counts = JSON.parse(data.join("\n")).counts;
  renderCounts();
  schedulePanels();
}

function failed(err) {
  if (err instanceof Unauthorized) {
    $("board").hidden = true;
    $("login").hidden = false;
    $("login-error").hidden = !state.token;
    $("token").focus();
  } else {
    console.error(err);
  }
}

async function start() {
  try {
    await loadSegments();
    $("login").hidden = true;
    $("board").hidden = false;
    renderAll();
    await loadPanels();
    follow();
  } catch (err) {
    failed(err);
  }
}

// ---- wiring ------------------------------------------------------------------------------

const fragment = new URLSearchParams(location.hash.slice(1));
if (fragment.has("token")) {
  state.token = fragment.get("token");
  sessionStorage.setItem("rfm.token", state.token);
  history.replaceState(null, "", location.pathname + location.search);
}

$("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  state.token = $("token").value.trim();
  sessionStorage.setItem("rfm.token", state.token);
  start();
});

for (const b of document.querySelectorAll("[data-lang]")) {
  b.addEventListener("click", () => {
    state.lang = b.dataset.lang;
    localStorage.setItem("rfm.lang", state.lang);
    renderAll();
  });
}

$("range").addEventListener("change", () => loadPanels().catch(failed));

$("lookup-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const id = $("customer-id").value;
  try {
    state.customer = (await api(`/api/customers?${new URLSearchParams({ id })}`)) ?? "missing";
    renderCustomer();
  } catch (err) {
    failed(err);
  }
});

renderText();
start();
