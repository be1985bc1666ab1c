// Model checks panel: can the CLV model be trusted? Four charts drawn as plain SVG from
// GET /api/model/checks (holdout per calibration bucket, period transactions, the expected-
// purchases and P(alive) matrices) and the drift flag of the last refit. Uses app.js's
// api(), el(), $() and state; every string from the API goes in as text.
// Wrapped in a function so its names cannot meet another panel's in the global scope.
(() => {
"use strict";

const CHECKS_TEXT = {
  en: {
    title: "Model checks", version: "model", drift: "parameters moved more than", since: "since",
    steady: "parameters within", ofPrevious: "of the previous fit", first: "first fit: nothing to compare",
    holdout: "Holdout: repeat purchases per customer", holdoutAxis: "repeat purchases in calibration",
    expected: "model", actual: "actual", noHoldout: "No holdout check with this fit: run rfm fit --holdout 13w.",
    holdoutNote: (h) => `${h.customers} customers; fitted up to ${h.calibration_end.slice(0, 10)}, ` +
      `${h.weeks.toFixed(1)} weeks held out: expected ${h.expected_total.toFixed(0)}, actual ${h.actual_total}` +
      (h.unsplit ? `; ${h.unsplit} left out (orders no longer kept)` : ""),
    period: "Repeat purchases per customer: actual vs model", periodAxis: "repeat purchases", customers: "customers",
    expectedMatrix: (w) => `Expected purchases, next ${Math.round(w * 7)} days`, alive: "P(alive)",
    matrixAxis: (T) => `columns: repeat purchases; rows: weeks from first to last purchase (age ${T} weeks)`,
  },
  "zh-TW": {
    title: "模型檢核", version: "模型", drift: "參數變動超過", since: "相較",
    steady: "參數變動在", ofPrevious: "以內（相較上一版）", first: "首次訓練：無可比較",
    holdout: "保留期驗證：每位顧客回購次數", holdoutAxis: "校準期回購次數",
    expected: "模型", actual: "實際", noHoldout: "本次訓練未做保留期驗證：請執行 rfm fit --holdout 13w。",
    holdoutNote: (h) => `${h.customers} 位顧客；訓練至 ${h.calibration_end.slice(0, 10)}，` +
      `保留 ${h.weeks.toFixed(1)} 週：預期 ${h.expected_total.toFixed(0)}，實際 ${h.actual_total}` +
      (h.unsplit ? `；${h.unsplit} 位未納入（訂單已不保存）` : ""),
    period: "每位顧客回購次數：實際與模型", periodAxis: "回購次數", customers: "顧客數",
    expectedMatrix: (w) => `未來 ${Math.round(w * 7)} 天預期購買次數`, alive: "仍活躍機率",
    matrixAxis: (T) => `欄：回購次數；列：首購至末購週數（顧客年齡 ${T} 週）`,
  },
};

const modelChecks = { doc: null };
const SVG = "http://www.w3.org/2000/svg";
const COLOURS = { expected: "#9ca3af", actual: "rgb(37 99 235)" };
const ct = (key, ...args) => {
  const v = (CHECKS_TEXT[state.lang] ?? CHECKS_TEXT.en)[key] ?? CHECKS_TEXT.en[key];
  return typeof v === "function" ? v(...args) : v;
};

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

const tick = (v) => (v >= 100 ? new Intl.NumberFormat(state.lang).format(Math.round(v)) : String(Number(v.toPrecision(3))));

// Grouped bars: one group per label, one bar per series, a y axis from 0 to the largest value.
function barChart(id, labels, series, axis) {
  const W = 520, H = 220, left = 44, bottom = 34, top = 22;
  const chart = svg("svg", { id, viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img" });
  const high = Math.max(...series.flatMap((s) => s.values), 1e-9);
  const plotH = H - top - bottom;
  const group = (W - left - 8) / labels.length;
  const barW = Math.min(26, (group - 6) / series.length);
  for (const frac of [0, 0.5, 1]) {
    const y = top + plotH * (1 - frac);
    chart.append(svg("line", { x1: left, x2: W - 4, y1: y, y2: y, stroke: "#e5e7eb" }));
    chart.append(svg("text", { x: left - 4, y: y + 4, "text-anchor": "end", "font-size": 10, fill: "#6b7280" },
      tick(high * frac)));
  }
  labels.forEach((label, i) => {
    const x0 = left + i * group + (group - barW * series.length) / 2;
    series.forEach((s, k) => {
      const v = s.values[i];
      const h = (plotH * v) / high;
      const bar = svg("rect", { x: x0 + k * barW, y: top + plotH - h, width: barW - 2, height: h, fill: s.colour });
      bar.dataset.label = label;
      bar.dataset.series = s.key;
      bar.dataset.value = String(v);
      bar.append(svg("title", {}, `${label}: ${s.name} ${v}`));
      chart.append(bar);
    });
    chart.append(svg("text", { x: left + (i + 0.5) * group, y: H - bottom + 14, "text-anchor": "middle", "font-size": 11 }, label));
  });
  chart.append(svg("text", { x: left + (W - left) / 2, y: H - 4, "text-anchor": "middle", "font-size": 11, fill: "#6b7280" }, axis));
  series.forEach((s, k) => {
    chart.append(svg("rect", { x: W - 150 + k * 72, y: 4, width: 10, height: 10, fill: s.colour }));
    chart.append(svg("text", { x: W - 136 + k * 72, y: 13, "font-size": 11 }, s.name));
  });
  return chart;
}

// A heat map of matrix.values (rows: recency, columns: frequency), darker = larger.
function heatMap(id, matrix) {
  const rows = matrix.values.length, cols = matrix.frequencies.length;
  const W = 520, left = 34, top = 16, cell = Math.min(16, (W - left - 4) / cols);
  const H = top + rows * Math.min(cell, 7) + 4;
  const cellH = Math.min(cell, 7);
  const chart = svg("svg", { id, viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img" });
  const high = Math.max(...matrix.values.flat(), 1e-9);
  matrix.values.forEach((row, i) => {
    row.forEach((v, j) => {
      const rect = svg("rect", {
        x: left + j * cell, y: top + i * cellH, width: cell, height: cellH,
        fill: `rgb(37 99 235 / ${(0.04 + 0.96 * (v / high)).toFixed(3)})`,
      });
      rect.dataset.value = String(v);
      rect.append(svg("title", {}, `x=${matrix.frequencies[j]}, t_x=${matrix.recencies[i]}: ${v}`));
      chart.append(rect);
    });
    if (i % 10 === 0 || i === rows - 1) {
      chart.append(svg("text", { x: left - 4, y: top + i * cellH + cellH, "text-anchor": "end", "font-size": 9 }, matrix.recencies[i]));
    }
  });
  matrix.frequencies.forEach((f, j) => {
    if (j % 5 === 0 || j === cols - 1) {
      chart.append(svg("text", { x: left + (j + 0.5) * cell, y: top - 4, "text-anchor": "middle", "font-size": 9 }, f));
    }
  });
  return chart;
}

function figure(title, chart, note) {
  const box = el("figure");
  box.style.margin = "0";
  chart.style.maxWidth = "34rem";
  box.append(el("figcaption", title), chart);
  if (note) box.append(el("p", note, "muted"));
  return box;
}

function renderModelChecks() {
  const section = $("model-checks-section");
  const c = modelChecks.doc;
  section.hidden = !c;
  if (!c) return;
  section.style.gridColumn = "1 / -1";
  $("model-checks-title").textContent = ct("title");
  const d = c.drift;
  const flag = $("model-checks-drift");
  flag.dataset.flagged = String(d.flagged);
  flag.className = d.flagged ? "stale" : "muted";
  const pct = `${Math.round(d.share * 100)}%`;
  const moved = Object.entries(d.moves).map(([k, v]) => `${k} ${(v * 100).toFixed(1)}%`).join(", ");
  flag.textContent = `${ct("version")} v${c.model_version}: ` + (d.previous_version === null ? ct("first")
    : d.flagged ? `${ct("drift")} ${pct} ${ct("since")} v${d.previous_version} (${moved})`
      : `${ct("steady")} ${pct} ${ct("ofPrevious")} v${d.previous_version}`);
  const parts = [];
  const h = c.holdout;
  if (h) {
    parts.push(figure(ct("holdout"), barChart("mc-holdout", h.buckets.map((b) => b.label), [
      { key: "expected", name: ct("expected"), colour: COLOURS.expected, values: h.buckets.map((b) => b.expected) },
      { key: "actual", name: ct("actual"), colour: COLOURS.actual, values: h.buckets.map((b) => b.actual) },
    ], ct("holdoutAxis")), ct("holdoutNote", h)));
  } else {
    parts.push(el("p", c.holdout_unavailable || ct("noHoldout"), c.holdout_unavailable ? "stale" : "muted"));
  }
  const p = c.period_transactions;
  parts.push(figure(ct("period"), barChart("mc-period", p.labels, [
    { key: "expected", name: ct("expected"), colour: COLOURS.expected, values: p.expected },
    { key: "actual", name: ct("actual"), colour: COLOURS.actual, values: p.actual },
  ], `${ct("periodAxis")} (${ct("customers")})`)));
  const note = (m) => `${ct("matrixAxis", m.T)}; max ${tick(Math.max(...m.values.flat()))}`;
  const e = c.expected_purchases;
  parts.push(figure(ct("expectedMatrix", e.next_weeks), heatMap("mc-expected", e), note(e)));
  parts.push(figure(ct("alive"), heatMap("mc-alive", c.p_alive), note(c.p_alive)));
  const grid = $("model-checks");
  grid.style.display = "grid";
  grid.style.gap = "1rem 2rem";
  grid.style.gridTemplateColumns = "repeat(auto-fit, minmax(min(100%, 26rem), 1fr))";
  grid.replaceChildren(...parts);
}

async function loadModelChecks() {
  try {
    const doc = await api("/api/model/checks");
    modelChecks.doc = doc ? doc.checks : null;
    renderModelChecks();
  } catch (err) {
    failed(err);
  }
}

// Checks change only with a refit: read them when the board opens and once a minute after.
new MutationObserver(() => { if (!$("board").hidden) loadModelChecks(); })
  .observe($("board"), { attributes: true, attributeFilter: ["hidden"] });
setInterval(() => { if (!$("board").hidden) loadModelChecks(); }, 60_000);
for (const b of document.querySelectorAll("[data-lang]")) b.addEventListener("click", renderModelChecks);
})();
