// remsguard staff console: sign in with a token, follow /v1/stream, acknowledge/resolve.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const el = window.remsguardEl;  // dom.js
  const RANK = { critical: 0, warning: 1, info: 2 };
  const state = { token: sessionStorage.getItem("remsguard.token"), me: null,
    alerts: new Map(), sessions: [], skew: 0, asOf: null, abort: null };

  function api(path, init = {}) {
    const headers = Object.assign({ Authorization: `Bearer ${state.token}` }, init.headers || {});
    return fetch(path, Object.assign({}, init, { headers }));
  }
  const now = () => Date.now() + state.skew;  // the server's (engine's) clock
  function mins(ms) { return Math.max(0, Math.round(ms / 60000)); }
  function clock(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    return (h ? `${h}:${String(m).padStart(2, "0")}` : `${m}`) + `:${String(r).padStart(2, "0")}`;
  }
  function ago(iso) { return iso ? `${mins(now() - Date.parse(iso))} min ago` : ""; }

  function applySnapshot(snap) {
    if (snap.as_of) state.skew = Date.parse(snap.as_of) - Date.now();
    state.sessions = snap.sessions || [];
    state.alerts = new Map((snap.alerts || []).map((a) => [a.alert_id, a]));
    render();
  }

  function applyAlert(note) {
    const alert = note.alert;
    if (note.kind === "acknowledged") alert.acknowledged_by_name = note.by_name;
    if (alert.status === "resolved" || alert.status === "withdrawn") state.alerts.delete(alert.alert_id);
    else state.alerts.set(alert.alert_id, Object.assign({}, state.alerts.get(alert.alert_id), alert));
    render();
  }

  function sortedAlerts() {
    return [...state.alerts.values()].sort((a, b) =>
      (RANK[a.severity] ?? 9) - (RANK[b.severity] ?? 9) ||
      Date.parse(b.triggered_at) - Date.parse(a.triggered_at));
  }

  async function act(alertId, action, button) {
    button.disabled = true;
    const res = await api(`/v1/alerts/${encodeURIComponent(alertId)}/${action}`, { method: "POST" });
    if (res.ok) applyAlert(await res.json());
    else { button.disabled = false; alert(`Could not ${action}: ${res.status}`); }
  }

  function patientOf(sessionId) {
    const s = state.sessions.find((x) => x.session_id === sessionId);
    return s && s.patient_ref ? s.patient_ref : sessionId;
  }

  // Alerts another alert on the same reading inhibits ride on its card ("also: BP_RISE").
  function carried(a) { return a.inhibited_by && state.alerts.has(a.inhibited_by); }

  async function shelve(alertId, form) {
    const body = { minutes: Number(form.querySelector(".shelve-minutes").value),
      reason: form.querySelector(".shelve-reason").value.trim() };
    if (!body.reason) { form.querySelector(".shelve-reason").focus(); return; }
    const res = await api(`/v1/alerts/${encodeURIComponent(alertId)}/shelve`, { method: "POST",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    if (res.ok) applyAlert(await res.json());
    else alert(`Could not shelve: ${res.status}`);
  }

  function shelveForm(a) {
    const form = el("form", { class: "shelve", "data-alert": a.alert_id },
      el("select", { class: "shelve-minutes", "aria-label": "Shelve for" },
        ...[15, 30, 60].map((m) => el("option", { value: String(m) }, `${m} min`))),
      el("input", { class: "shelve-reason", "aria-label": "Reason", placeholder: "reason", maxlength: "500" }),
      el("button", { class: "shelve", type: "submit" }, "Shelve"));
    form.addEventListener("submit", (e) => { e.preventDefault(); shelve(a.alert_id, form); });
    return form;
  }

  function alertCard(a, also) {
    const acked = a.status === "acknowledged", shelved = a.status === "shelved";
    const actions = el("div", { class: "actions" });
    if (!acked && !shelved && state.me.role !== "auditor")
      actions.append(el("button", { class: "primary ack", type: "button", "data-alert": a.alert_id,
        onclick: (e) => act(a.alert_id, "acknowledge", e.target) }, "Acknowledge"));
    if (state.me.role !== "auditor")
      actions.append(el("button", { class: "resolve", type: "button", "data-alert": a.alert_id,
        onclick: (e) => act(a.alert_id, "resolve", e.target) }, "Resolve"));
    if (!shelved && a.severity !== "critical" && state.me.role !== "auditor") actions.append(shelveForm(a));
    const meta = `${a.clinic_id} · raised ${ago(a.triggered_at)}` +
      (acked ? ` · acknowledged by ${a.acknowledged_by_name || a.acknowledged_by}` : "") +
      (shelved ? ` · shelved until ${new Date(Date.parse(a.shelved_until)).toLocaleTimeString()}: ${a.shelve_reason}` : "");
    return el("li", { class: `alert ${a.severity} ${a.status}`, "data-alert": a.alert_id, "data-status": a.status },
      el("div", {},
        el("div", {}, el("span", { class: "sev" }, a.severity), el("span", { class: "rule" }, a.rule),
          " · ", el("strong", {}, patientOf(a.session_id))),
        el("div", {}, a.message),
        also.length ? el("div", { class: "also" }, `also: ${also.map((x) => x.rule).join(", ")}`) : null,
        el("div", { class: "meta" }, meta)),
      actions);
  }

  // The lists are rebuilt on every alert and every sessions snapshot (2 s): a shelve form being
  // filled in keeps its reason, its duration, its focus and its caret across the rebuild.
  function shelveForms() {
    const kept = new Map();
    for (const form of document.querySelectorAll("form.shelve")) {
      const reason = form.querySelector(".shelve-reason"), minutes = form.querySelector(".shelve-minutes");
      const focus = document.activeElement === reason ? "reason" : document.activeElement === minutes ? "minutes" : null;
      kept.set(form.dataset.alert, { reason: reason.value, minutes: minutes.value, focus,
        start: reason.selectionStart, end: reason.selectionEnd });
    }
    return kept;
  }

  function restoreShelveForms(kept) {
    for (const form of document.querySelectorAll("form.shelve")) {
      const was = kept.get(form.dataset.alert);
      if (!was) continue;
      const reason = form.querySelector(".shelve-reason"), minutes = form.querySelector(".shelve-minutes");
      reason.value = was.reason; minutes.value = was.minutes;
      if (was.focus === "reason") { reason.focus(); reason.setSelectionRange(was.start, was.end); }
      else if (was.focus === "minutes") minutes.focus();
    }
  }

  function renderAlerts() {
    const all = sortedAlerts();
    const alsoOf = (a) => all.filter((x) => x.inhibited_by === a.alert_id);
    const items = all.filter((a) => a.status !== "shelved" && !carried(a));
    const shelved = all.filter((a) => a.status === "shelved" && !carried(a));
    const forms = shelveForms();
    $("alerts").replaceChildren(...items.map((a) => alertCard(a, alsoOf(a))));
    $("shelved").replaceChildren(...shelved.map((a) => alertCard(a, alsoOf(a))));
    restoreShelveForms(forms);
    $("alert-count").textContent = String(items.length);
    $("shelved-count").textContent = String(shelved.length);
    $("shelved-title").hidden = shelved.length === 0;
    $("no-alerts").hidden = items.length > 0;
  }

  function dueText(check) {
    const left = Date.parse(check.due_at) - now();
    if (left >= 0) return el("span", { class: "due" }, `${check.label} due in ${mins(left)} min`);
    return el("span", { class: "due overdue" }, `${check.label} overdue by ${mins(-left)} min`);
  }

  function vitals(latest) {
    const parts = [];
    if (latest.bp) parts.push(`BP ${latest.bp.systolic}/${latest.bp.diastolic}`);
    if (latest.spo2) parts.push(`SpO₂ ${latest.spo2.value}%`);
    if (latest.respiratory_rate) parts.push(`RR ${latest.respiratory_rate.value}`);
    if (latest.moaas) parts.push(`MOAA/S ${latest.moaas.value}`);
    return parts.join(" · ") || "none yet";
  }

  function renderSessions() {
    const box = $("sessions");
    box.replaceChildren(...state.sessions.map((s) => {
      const r = s.readiness;
      const dosed = s.dosed_at ? Date.parse(s.dosed_at) : null;
      const end = r.earliest_discharge_at ? Date.parse(r.earliest_discharge_at) : null;
      const openAlerts = [...state.alerts.values()].filter((a) =>
        a.session_id === s.session_id && a.status !== "shelved" && !carried(a)).length;
      const next = (r.next_checks || []).filter((c) => !c.label.startsWith("End of"));
      return el("article", { class: `session${openAlerts ? " alerting" : ""}`, "data-session": s.session_id },
        el("h3", {}, el("span", {}, s.patient_ref || s.session_id),
          el("span", {}, openAlerts ? el("span", { class: "badge alerts" }, `${openAlerts} alert${openAlerts > 1 ? "s" : ""}`) : null,
            " ", el("span", { class: `badge${r.ready ? " ready" : ""}` }, r.ready ? "ready to discharge" : "not ready"))),
        el("dl", {},
          el("dt", {}, "Since dose"), el("dd", {}, dosed ? clock(now() - dosed) : "not dosed"),
          el("dt", {}, "Window ends"), el("dd", {}, end ? (end > now() ? `in ${clock(end - now())}` : "elapsed") : "—"),
          el("dt", {}, "Next check"), el("dd", {}, next.length ? dueText(next[0]) : "none due"),
          el("dt", {}, "Latest vitals"), el("dd", {}, vitals(s.latest || {}))),
        r.reasons.length ? el("ul", { class: "reasons" }, ...r.reasons.map((x) => el("li", {}, x))) : null);
    }));
    $("session-count").textContent = String(state.sessions.length);
    $("no-sessions").hidden = state.sessions.length > 0;
  }

  function render() { renderAlerts(); renderSessions(); }

  function setLive(on) { $("live").textContent = on ? "live" : "offline"; $("live").classList.toggle("off", !on); }

  async function follow() {
    let delay = 500;
    while (state.token) {
      const abort = new AbortController(); state.abort = abort;
      try {
        const res = await api("/v1/stream", { signal: abort.signal, headers: { Accept: "text/event-stream" } });
        if (res.status === 401) { signOut("Your token is no longer valid."); return; }
        if (!res.ok) throw new Error(`stream ${res.status}`);
        setLive(true); delay = 500;
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const frame = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
            let event = "message", data = "";
            for (const line of frame.split("\n")) {
              if (line.startsWith("event: ")) event = line.slice(7);
              else if (line.startsWith("data: ")) data += line.slice(6);
            }
            if (!data) continue;
            const body = JSON.parse(data);
            if (event === "alert") applyAlert(body);
            else if (event === "sessions") applySnapshot(body);
          }
        }
      } catch (err) {
        if (abort.signal.aborted) return;
      }
      setLive(false);
      await new Promise((r) => setTimeout(r, delay)); delay = Math.min(delay * 2, 10000);
    }
  }

  async function signIn(token) {
    state.token = token;
    const res = await api("/console/api/state");
    if (!res.ok) { signOut(res.status === 401 ? "Unknown or revoked token." : `Sign-in failed (${res.status}).`); return; }
    const snap = await res.json();
    if (snap.me.role === "device") { signOut("A device token cannot use the console."); return; }
    sessionStorage.setItem("remsguard.token", token);
    state.me = snap.me;
    $("who-name").textContent = `${snap.me.name} (${snap.me.role})`;
    $("sign-in").hidden = true; $("console").hidden = false; $("who").hidden = false;
    applySnapshot(snap);
    follow();
  }

  function signOut(message = "") {
    if (state.abort) state.abort.abort();
    state.token = null; state.me = null; sessionStorage.removeItem("remsguard.token");
    $("console").hidden = true; $("who").hidden = true; $("sign-in").hidden = false;
    $("sign-in-error").textContent = message;
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("sign-in").addEventListener("submit", (e) => { e.preventDefault(); signIn($("token").value.trim()); });
    $("sign-out").addEventListener("click", () => signOut());
    setInterval(() => { if (state.me) renderSessions(); }, 1000);
    if (state.token) signIn(state.token); else signOut();
  });
})();
