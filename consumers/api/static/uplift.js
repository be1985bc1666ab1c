// Campaign uplift panel: per rule with a hold-out, each arm against the control, from
// GET /api/uplift (per segment at assignment, and over all segments). Money arrives as exact
// strings and is shown as text; the CSV button fetches /api/uplift.csv with the token.
// Uses app.js's api(), el(), $(), money(), segName(), headers() and state.
// Wrapped in a function so its names cannot meet another panel's in the global scope.
(() => {
"use strict";

const UPLIFT_TEXT = {
  en: {
    title: "Campaign uplift", csv: "CSV", segment: "Segment then", arm: "Arm",
    customers: "Customers", rate: "Bought again", perCustomer: "Revenue / customer",
    diff: "Δ vs control (95%)", rateDiff: "Δ bought again (95%)", moves: "Moves ↑ / ↓",
    all: "All segments", none: "(none)", holdout: "hold-out", window: "window", days: "days",
    control: "control", treated: "treated",
    note: "Intervals: Welch's t on revenue per customer; Newcombe's hybrid score on the repurchase rate.",
  },
  "zh-TW": {
    title: "行銷活動成效", csv: "CSV", segment: "分派時分群", arm: "組別",
    customers: "顧客數", rate: "回購率", perCustomer: "每位顧客營收",
    diff: "與對照組差（95%）", rateDiff: "回購率差（95%）", moves: "升級 / 降級",
    all: "全部分群", none: "（無）", holdout: "對照組比例", window: "觀察期", days: "天",
    control: "對照組", treated: "實驗組",
    note: "區間：每位顧客營收採 Welch t 區間；回購率差異採 Newcombe 混合分數區間。",
  },
};

const uplift = { doc: null };
const ut = (key) => (UPLIFT_TEXT[state.lang] ?? UPLIFT_TEXT.en)[key] ?? UPLIFT_TEXT.en[key];
const pct = (x) => `${(x * 100).toFixed(1)}%`;
const signed = (s) => (s.startsWith("-") ? s : `+${s}`);

function between(value, span, shown) {
  if (!span) return `${shown(value)} (–)`;
  return `${shown(value)} (${shown(span[0])} … ${shown(span[1])})`;
}

function armName(arm) {
  return arm === "control" || arm === "treated" ? ut(arm) : arm;
}

function upliftRow(row) {
  const tr = el("tr");
  tr.dataset.arm = row.arm;
  tr.dataset.segment = row.segment;
  const vs = row.vs_control;
  const segment = row.segment === "*" ? ut("all") : row.segment === "-" ? ut("none") : segName(row.segment);
  tr.append(
    el("td", segment, "segment"),
    el("td", armName(row.arm), "arm"),
    el("td", count(row.customers), "num customers"),
    el("td", pct(row.repurchase_rate), "num rate"),
    el("td", money(row.revenue_per_customer), "num revenue"),
    el("td", vs ? between(vs.revenue_per_customer, vs.revenue_per_customer_interval,
      (s) => signed(money(s))) : "", "num diff"),
    el("td", vs ? between(vs.repurchase_rate, vs.repurchase_rate_interval,
      (x) => (x < 0 ? "" : "+") + pct(x)) : "", "num rate-diff"),
    el("td", `${row.moves_up} / ${row.moves_down}`, "num moves"),
  );
  if (row.segment === "*") tr.className = "total";
  return tr;
}

function renderUplift() {
  const doc = uplift.doc;
  const rules = doc?.rules?.filter((r) => r.rows.length) ?? [];
  $("uplift-section").hidden = rules.length === 0;
  $("uplift-title").textContent = ut("title");
  $("uplift-csv").textContent = ut("csv");
  $("uplift-note").textContent = ut("note");
  const blocks = rules.map((rule) => {
    const box = el("div", null, "uplift-rule");
    box.dataset.rule = rule.rule;
    const facts = [
      rule.holdout === null ? null : `${ut("holdout")} ${pct(Number(rule.holdout))}`,
      rule.window_s === null ? null : `${ut("window")} ${Math.round(rule.window_s / 86400 * 10) / 10} ${ut("days")}`,
      doc.currency,
    ].filter(Boolean).join(" · ");
    const title = el("h3", rule.rule);
    title.append(" ", el("span", facts, "muted"));
    const table = el("table");
    const head = el("tr");
    head.append(...["segment", "arm", "customers", "rate", "perCustomer", "diff", "rateDiff", "moves"]
      .map((k) => el("th", ut(k))));
    table.append(el("thead"), el("tbody"));
    table.tHead.append(head);
    table.tBodies[0].append(...rule.rows.map(upliftRow));
    const scroll = el("div", null, "scroll");
    scroll.append(table);
    box.append(title, scroll);
    return box;
  });
  $("uplift").replaceChildren(...blocks);
}

async function loadUplift() {
  try {
    uplift.doc = await api("/api/uplift");
    renderUplift();
  } catch (err) {
    failed(err);
  }
}

async function downloadCsv() {
  const res = await fetch("/api/uplift.csv", { headers: headers(), cache: "no-store" });
  if (!res.ok) return failed(new Error(`uplift.csv: HTTP ${res.status}`));
  const link = el("a");
  link.href = URL.createObjectURL(await res.blob());
  link.download = "rfm-uplift.csv";
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000); // not at once: the save may not have begun
}

$("uplift-csv").addEventListener("click", downloadCsv);
new MutationObserver(() => { if (!$("board").hidden) loadUplift(); })
  .observe($("board"), { attributes: true, attributeFilter: ["hidden"] });
setInterval(() => { if (!$("board").hidden) loadUplift(); }, 30_000);
for (const b of document.querySelectorAll("[data-lang]")) b.addEventListener("click", renderUplift);
})();
