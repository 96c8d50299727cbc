// remsguard staff console: the session chart. Clicking (or Enter on) a patient card opens it;
// it polls /console/api/sessions/{id}/chart while open, so a new reading shows within a second.
// Drawn with uPlot (vendored, /console/chart/uPlot.iife.min.js). Colours, glyphs, dashes and
// rule names come from the server's legend (remsguard.auditing.legend): never colour alone.
"use strict";
(() => {
  const POLL_MS = 500;
  const $ = (id) => document.getElementById(id);
  const el = window.remsguardEl;  // dom.js
  const chart = window.remsguardChart = {
    sessionId: null, payload: null, plots: {}, drawn: {}, text: "", timer: null, updates: 0,
  };
  const token = () => sessionStorage.getItem("remsguard.token");
  const secs = (iso) => Date.parse(iso) / 1000;
  const px = (v) => Math.round(v * uPlot.pxRatio);

  function hhmm(at) {
    return new Date(at * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
  }

  function sinceDose(at, p) {
    const dose = p.marks.find((m) => m.kind === "dose");
    if (!dose) return "";
    const m = Math.round((at - secs(dose.at)) / 60);
    return m >= 0 ? ` (+${m} min)` : ` (${m} min)`;
  }

  function timeRange(p) {
    const times = [];
    for (const rows of Object.values(p.readings)) for (const r of rows) times.push(secs(r.at));
    for (const m of p.marks) { times.push(secs(m.at)); if (m.until) times.push(secs(m.until)); }
    for (const a of p.alerts) times.push(secs(a.at));
    if (!times.length) { const now = Date.now() / 1000; return [now - 1800, now + 1800]; }
    const lo = Math.min(...times), hi = Math.max(...times);
    return [lo - 300, hi + 300];
  }

  function panelData(p, panel) {
    const xs = [...new Set(panel.series.flatMap((k) => p.readings[k].map((r) => secs(r.at))))].sort((a, b) => a - b);
    const ys = panel.series.map((k) => {
      const by = new Map(p.readings[k].map((r) => [secs(r.at), r.value]));
      return xs.map((x) => (by.has(x) ? by.get(x) : null));
    });
    return [xs, ...ys];
  }

  function yRange(panel, data) {
    let lo = panel.range[0], hi = panel.range[1];
    for (const ys of data.slice(1)) for (const v of ys) if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    for (const b of panel.bands) for (const v of [b.low, b.high]) if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    const pad = Math.max(1, (hi - lo) * 0.08);
    return [Math.floor(lo - pad), Math.ceil(hi + pad)];
  }

  function hatch(ctx, colour) {
    const tile = document.createElement("canvas");
    tile.width = tile.height = px(10);
    const t = tile.getContext("2d");
    t.strokeStyle = colour; t.lineWidth = px(1);
    t.beginPath(); t.moveTo(0, tile.height); t.lineTo(tile.width, 0); t.stroke();
    return ctx.createPattern(tile, "repeat");
  }

  function label(ctx, text, x, y, colour, align = "left", box = null) {
    ctx.font = `600 ${px(13)}px system-ui, sans-serif`;
    ctx.textBaseline = "top";
    const w = ctx.measureText(text).width;
    if (box && align === "left" && x + w > box.left + box.width) { align = "right"; x -= px(8); }
    if (box && align === "right" && x - w < box.left) { align = "left"; x = box.left + px(4); }
    ctx.textAlign = align;
    const left = align === "right" ? x - w : x;
    const placed = ctx.placedLabels || (ctx.placedLabels = []);
    for (let tries = 0; tries < 8 && placed.some((r) => left < r[0] + r[2] && r[0] < left + w && Math.abs(r[1] - y) < px(15)); tries++) y += px(15);
    placed.push([left, y, w]);
    ctx.fillStyle = "rgba(255,255,255,0.85)";
    ctx.fillRect(left - px(2), y - px(1), w + px(4), px(16));
    ctx.fillStyle = colour; ctx.fillText(text, x, y);
  }

  function xAt(u, iso, fallback) { return iso ? u.valToPos(secs(iso), "x", true) : fallback; }

  function drawBands(u, p, panel) {
    const { ctx } = u; const box = u.bbox; const legend = p.legend;
    ctx.placedLabels = [];
    const drawn = chart.drawn[panel.key] = [];
    ctx.save();
    ctx.beginPath(); ctx.rect(box.left, box.top, box.width, box.height); ctx.clip();
    for (const b of panel.bands) {
      const sev = legend.severities[b.severity] || legend.severities.info;
      const x0 = Math.max(box.left, xAt(u, b.from, box.left));
      const x1 = Math.min(box.left + box.width, xAt(u, b.until, box.left + box.width));
      if (x1 <= x0) continue;
      const top = b.high === null ? box.top : u.valToPos(b.high, "y", true);
      const bottom = b.low === null ? box.top + box.height : u.valToPos(b.low, "y", true);
      const primary = b.series === panel.series[0];
      if (primary) {
        ctx.fillStyle = sev.band; ctx.fillRect(x0, top, x1 - x0, bottom - top);
        ctx.fillStyle = hatch(ctx, sev.band); ctx.fillRect(x0, top, x1 - x0, bottom - top);
      }
      const value = b.threshold;
      const y = u.valToPos(value, "y", true);
      ctx.strokeStyle = sev.colour; ctx.lineWidth = px(1.5);
      ctx.setLineDash(primary ? [] : [px(6), px(4)]);
      ctx.beginPath(); ctx.moveTo(x0, y); ctx.lineTo(x1, y); ctx.stroke();
      ctx.setLineDash([]);
      const text = `${sev.glyph} ${b.label.split(" (")[0]}`;
      const above = b.high === null;
      const ty = above ? y - px(17) : y + px(2);
      label(ctx, text, x1 - px(4), ty, sev.colour, "right", { left: x0, width: x1 - x0 });
      drawn.push({ rule: b.rule, series: b.series, severity: b.severity, value, y: y / uPlot.pxRatio,
        expected_y: u.valToPos(value, "y") + u.bbox.top / uPlot.pxRatio });
    }
    ctx.restore();
  }

  function shape(ctx, kind, x, y, r) {
    ctx.beginPath();
    if (kind === "triangle") { ctx.moveTo(x, y - r); ctx.lineTo(x + r, y + r * 0.8); ctx.lineTo(x - r, y + r * 0.8); ctx.closePath(); }
    else if (kind === "square") ctx.rect(x - r * 0.8, y - r * 0.8, r * 1.6, r * 1.6);
    else if (kind === "diamond") { ctx.moveTo(x, y - r); ctx.lineTo(x + r, y); ctx.lineTo(x, y + r); ctx.lineTo(x - r, y); ctx.closePath(); }
    else ctx.arc(x, y, r * 0.85, 0, 2 * Math.PI);
    ctx.fill(); ctx.stroke();
  }

  function drawMarks(u, p, panel, first) {
    const { ctx } = u; const box = u.bbox; const legend = p.legend;
    ctx.save();
    ctx.beginPath(); ctx.rect(box.left, box.top, box.width, box.height); ctx.clip();
    // readings: a shape per series, the latest value written beside it
    panel.series.forEach((key, i) => {
      const s = legend.series[key]; const xs = u.data[0]; const ys = u.data[i + 1];
      ctx.fillStyle = s.colour; ctx.strokeStyle = "#fff"; ctx.lineWidth = px(1.5);
      let last = null;
      for (let j = 0; j < xs.length; j++) {
        if (ys[j] === null) continue;
        const x = u.valToPos(xs[j], "x", true), y = u.valToPos(ys[j], "y", true);
        shape(ctx, s.marker, x, y, px(6)); last = [x, y, ys[j]];
        if (key === "moaas") label(ctx, String(ys[j]), x + px(8), y - px(8), s.colour, "left", box);
      }
      if (last) label(ctx, String(last[2]), last[0] + px(8), last[1] - px(8), s.colour, "left", box);
    });
    // doses, the 40-minute check window, the end of the window, discharge
    let row = 0;
    for (const m of p.marks) {
      const style = legend.marks[m.kind]; const x = xAt(u, m.at, 0);
      ctx.strokeStyle = style.colour; ctx.lineWidth = px(2);
      if (m.kind === "check_window") {
        const x1 = xAt(u, m.until, x);
        ctx.fillStyle = hatch(ctx, "rgba(47, 95, 143, 0.35)");
        ctx.fillRect(x, box.top, x1 - x, box.height);
        ctx.setLineDash([]); ctx.lineWidth = px(1);
        ctx.strokeRect(x, box.top, x1 - x, box.height);
      } else {
        ctx.setLineDash(style.dash.map(px));
        ctx.beginPath(); ctx.moveTo(x, box.top); ctx.lineTo(x, box.top + box.height); ctx.stroke();
        ctx.setLineDash([]);
      }
      if (first) label(ctx, m.label, x + px(4), box.top + px(2) + px(17) * (row++ % 3), style.colour, "left", box);
    }
    // alerts where they happened, on the panel of their rule
    let arow = 0;
    for (const a of p.alerts) {
      if (a.panel !== panel.key) continue;
      const sev = legend.severities[a.severity] || legend.severities.info;
      const x = xAt(u, a.at, 0);
      ctx.strokeStyle = sev.colour; ctx.lineWidth = px(2); ctx.setLineDash([px(3), px(3)]);
      ctx.beginPath(); ctx.moveTo(x, box.top); ctx.lineTo(x, box.top + box.height); ctx.stroke();
      ctx.setLineDash([]);
      label(ctx, `${sev.glyph} ${a.rule}${a.status === "resolved" ? " (resolved)" : ""}`,
        x - px(4), box.top + box.height - px(18) - px(17) * (arow++ % 2), sev.colour, "right");
    }
    ctx.restore();
  }

  function buildPlots(p) {
    const box = $("session-chart-plots");
    Object.values(chart.plots).forEach((u) => u.destroy());
    chart.plots = {}; chart.drawn = {};
    box.replaceChildren();
    const range = timeRange(p);
    const width = Math.max(320, box.clientWidth - 8);
    p.panels.forEach((panel, index) => {
      const data = panelData(p, panel);
      const holder = el("figure", { class: "chart-panel", "data-panel": panel.key },
        el("figcaption", {}, `${panel.title} (${panel.unit})`));
      const bands = el("ul", { class: "chart-bands" }, ...panel.bands.map((b) => {
        const sev = p.legend.severities[b.severity] || p.legend.severities.info;
        return el("li", { class: `ev-${b.severity}` }, `${sev.glyph} ${b.rule} (${b.severity}): ${b.label}`);
      }));
      box.append(holder);
      const opts = {
        width, height: panel.key === "bp" ? 220 : 150,
        scales: { x: { time: true, range: () => range }, y: { range: () => yRange(panel, data) } },
        series: [{ value: (u, v) => (v === null ? "—" : hhmm(v)) }, ...panel.series.map((key) => {
          const s = p.legend.series[key];
          return { label: `${s.label} (${s.unit})`, stroke: s.colour, width: 2.5, dash: s.dash, spanGaps: true,
            points: { show: false }, paths: key === "moaas" ? () => null : undefined };
        })],
        axes: [
          { font: "14px system-ui, sans-serif", stroke: p.legend.ink, space: 80, values: (u, ticks) => ticks.map(hhmm) },
          { font: "14px system-ui, sans-serif", stroke: p.legend.ink, size: 52 },
        ],
        legend: { show: true },
        cursor: { sync: { key: "session" } },
        hooks: {
          drawClear: [(u) => drawBands(u, p, panel)],
          draw: [(u) => drawMarks(u, p, panel, index === 0)],
        },
      };
      chart.plots[panel.key] = new uPlot(opts, data, holder);
      if (panel.bands.length) holder.append(bands);
    });
  }

  function latestText(p) {
    const last = (k) => { const rows = p.readings[k]; return rows.length ? rows[rows.length - 1].value : null; };
    const parts = [];
    if (last("systolic") !== null) parts.push(`BP ${last("systolic")}/${last("diastolic")}`);
    if (last("spo2") !== null) parts.push(`SpO₂ ${last("spo2")}%`);
    if (last("heart_rate") !== null) parts.push(`HR ${last("heart_rate")}`);
    if (last("respiratory_rate") !== null) parts.push(`RR ${last("respiratory_rate")}`);
    if (last("moaas") !== null) parts.push(`MOAA/S ${last("moaas")}`);
    return parts.join(" · ") || "no readings yet";
  }

  function renderEvents(p) {
    const items = [
      ...p.marks.map((m) => ({ at: secs(m.at), kind: m.kind, text: m.label, glyph: "│" })),
      ...p.alerts.map((a) => {
        const sev = p.legend.severities[a.severity] || p.legend.severities.info;
        return { at: secs(a.at), kind: `ev-alert ev-${a.severity}`, glyph: sev.glyph,
          text: `${a.severity.toUpperCase()} ${a.rule}: ${a.message} [${a.status}]` };
      }),
      ...p.assessments.map((a) => ({ at: secs(a.at), kind: "assessment", glyph: "■",
        text: `Assessment: MOAA/S ${a.moaas ?? "not scored"}` +
          (a.dissociation ? " · dissociation" : "") + (a.respiratory_depression ? " · respiratory depression" : "") })),
    ].sort((a, b) => a.at - b.at);
    $("session-chart-events").replaceChildren(...items.map((i) =>
      el("li", { class: i.kind }, el("time", {}, hhmm(i.at) + sinceDose(i.at, p)), ` ${i.glyph} ${i.text}`)));
  }

  function render(p) {
    chart.payload = p;
    $("session-chart-title").textContent = `${p.patient_ref || p.session_id} · ${p.protocol}` +
      (p.protocol_known ? "" : " (protocol not configured: no bands)");
    $("session-chart-latest").textContent = latestText(p);
    buildPlots(p);
    renderEvents(p);
    chart.updates += 1;
  }

  async function refresh() {
    const id = chart.sessionId;
    if (!id) return;
    try {
      const res = await fetch(`/console/api/sessions/${encodeURIComponent(id)}/chart`,
        { headers: { Authorization: `Bearer ${token()}` }, cache: "no-store" });
      if (id !== chart.sessionId) return;
      if (res.status === 401 || res.status === 404) { $("session-chart-error").textContent = `Cannot show this session (${res.status}).`; return; }
      if (!res.ok) throw new Error(String(res.status));
      const text = await res.text();
      $("session-chart-error").textContent = "";
      if (text !== chart.text) { chart.text = text; render(JSON.parse(text)); }
    } catch (err) {
      $("session-chart-error").textContent = "Connection lost; retrying.";
    }
  }

  function schedule() {
    clearTimeout(chart.timer);
    if (!chart.sessionId) return;
    chart.timer = setTimeout(async () => { await refresh(); schedule(); }, POLL_MS);
  }

  async function open(sessionId) {
    chart.sessionId = sessionId; chart.text = ""; chart.payload = null;
    $("session-chart-title").textContent = sessionId;
    $("session-chart-latest").textContent = "";
    $("session-chart-plots").replaceChildren();
    const dialog = $("session-chart");
    if (!dialog.open) dialog.showModal();
    await refresh();
    schedule();
  }

  function close() {
    chart.sessionId = null; clearTimeout(chart.timer);
    Object.values(chart.plots).forEach((u) => u.destroy()); chart.plots = {};
    const dialog = $("session-chart");
    if (dialog.open) dialog.close();
  }

  function dialog() {
    return el("dialog", { id: "session-chart", "aria-labelledby": "session-chart-title" },
      el("header", {},
        el("div", {}, el("h2", { id: "session-chart-title" }), el("p", { id: "session-chart-latest", class: "latest" })),
        el("button", { type: "button", id: "session-chart-close", onclick: close }, "Close")),
      el("p", { id: "session-chart-error", class: "error", role: "alert" }),
      el("div", { id: "session-chart-plots" }),
      el("h3", {}, "What happened"),
      el("ol", { id: "session-chart-events", class: "chart-events" }));
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.body.append(dialog());
    $("session-chart").addEventListener("close", () => { if (chart.sessionId) close(); });
    const board = $("sessions");
    const pick = (e) => {
      const card = e.target.closest("[data-session]");
      if (card && board.contains(card)) open(card.getAttribute("data-session"));
    };
    board.addEventListener("click", pick);
    const focusable = () => board.querySelectorAll("[data-session]:not([tabindex])").forEach((card) => {
      card.setAttribute("tabindex", "0"); card.setAttribute("aria-haspopup", "dialog");
    });
    new MutationObserver(focusable).observe(board, { childList: true });
    board.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); pick(e); } });
    window.addEventListener("resize", () => { if (chart.payload) buildPlots(chart.payload); });
    chart.open = open; chart.close = close;
  });
})();
