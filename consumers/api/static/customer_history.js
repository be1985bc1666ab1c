// Segment history of the customer looked up: why they moved, each time (cause, the event that
// triggered it, scores before -> after, the thresholds version in force). app.js announces
// each rendered lookup with an "rfm:customer" event; this panel only listens and draws.
"use strict";

const HISTORY_TEXT = {
  en: {
    title: "Segment history", at: "Time", move: "Move", cause: "Cause", trigger: "Trigger event",
    scores: "Scores before → after", version: "Thresholds", empty: "No changes kept.",
    kept: (n) => `newest ${n}`,
    causes: {
      order: "order", refund: "refund", interaction: "interaction", threshold_refresh: "thresholds refreshed",
      clock: "time passed", erasure: "erasure", reconfigure: "reconfigured", churn_risk: "churn risk",
    },
  },
  "zh-TW": {
    title: "分群歷程", at: "時間", move: "轉換", cause: "原因", trigger: "觸發事件",
    scores: "分數（前 → 後）", version: "門檻版本", empty: "沒有保留的轉換。",
    kept: (n) => `最近 ${n} 筆`,
    causes: {
      order: "訂單", refund: "退款", interaction: "互動", threshold_refresh: "門檻更新",
      clock: "時間經過", erasure: "刪除", reconfigure: "重新設定", churn_risk: "流失風險",
    },
  },
};

function historyText() {
  return HISTORY_TEXT[state.lang] ?? HISTORY_TEXT.en;
}

// "R5 F1 M4 I–": one score per dimension, "–" for none; the whole cell "–" when absent.
function scoreLine(scores) {
  if (!scores) return "–";
  return ["r", "f", "m", "i"].map((d) => `${d.toUpperCase()}${scores[d] ?? "–"}`).join(" ");
}

function renderCustomerHistory(customer) {
  const section = $("history-section");
  const table = $("history");
  const known = customer && typeof customer === "object";
  section.hidden = !known;
  if (!known) return table.replaceChildren();
  const tx = historyText();
  const changes = customer.history ?? [];
  $("history-title").textContent = tx.title;
  $("history-note").textContent = changes.length ? tx.kept(changes.length) : tx.empty;
  const head = el("tr");
  head.append(...["at", "move", "cause", "trigger", "scores", "version"].map((k) => el("th", tx[k])));
  const rows = changes.map((ch) => {
    const tr = el("tr");
    tr.dataset.seq = ch.seq;
    const move = `${ch.from === null ? t("none") : segName(ch.from)} → ${ch.to === null ? t("erased") : segName(ch.to)}`;
    tr.append(
      el("td", ch.at ? ch.at.slice(0, 19).replace("T", " ") : "–", "at"),
      el("td", move, "move"),
      el("td", tx.causes[ch.cause] ?? ch.cause, "cause"),
      el("td", ch.trigger_event_id ?? "–", "trigger"),
      el("td", `${scoreLine(ch.scores_before)} → ${scoreLine(ch.scores)}`, "scores"),
      el("td", ch.thresholds_version === null || ch.thresholds_version === undefined ? "–" : `v${ch.thresholds_version}`, "version num"),
    );
    return tr;
  });
  table.replaceChildren(el("thead"), el("tbody"));
  table.tHead.append(head);
  table.tBodies[0].append(...rows);
}

document.addEventListener("rfm:customer", (ev) => renderCustomerHistory(ev.detail));
