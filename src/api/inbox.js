// approval-gateway inbox: plain JavaScript, no framework, no build step.
//
// Two ways in. Where the deployment has a login the gateway recognises (a cookie-session token
// source), the page first asks the API with the browser's own cookies (same-origin only, no
// Authorization) and, when that works, needs no token ("signed in by your session"). Otherwise a
// pasted approver token lives in sessionStorage (this tab only) and is sent only in the
// Authorization header of same-origin calls, never with cookies. Live updates read /v1/events
// with fetch() and a streaming reader (EventSource cannot send headers; a token never goes into
// a URL), with reconnect and Last-Event-ID resume. Every value from the API is rendered with
// textContent.
"use strict";

(() => {
  const TOKEN_KEY = "approval-gateway.token";
  const HISTORY_LIMIT = 50;
  const STALL_MS = 45000; // the server sends a keep-alive comment every 15 s
  const RANK = { pending: 0, approved: 1, denied: 2, expired: 2, consumed: 2, withdrawn: 2 };
  // History asks for each of these on its own, so a backlog of pending ones cannot crowd it out.
  const DECIDED = ["approved", "denied", "expired", "consumed", "withdrawn"];
  // The upstream's answer to a consumed approval is recorded after the forward and is no
  // transition (no event): look it up after these delays, then leave it to the next reload.
  const UPSTREAM_CHECKS_MS = [1000, 4000, 15000];
  const PAGE = 100; // pending approvals per request (the API allows up to 200)
  const MAX_PAGES = 100; // at most 10,000 pending shown

  const $ = (id) => document.getElementById(id);
  const state = {
    token: null, // the pasted token; null when signed in by the session (or signed out)
    who: null, // a new object on every sign-in: late answers of an older one are dropped
    pending: new Map(), // id -> Approval
    history: new Map(), // id -> Approval (not pending)
    lastEventId: null,
    stream: null, // AbortController of the event stream
    retryMs: 1000,
  };

  // ---- DOM helpers (text only) ---------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function showAlert(message, kind) {
    const a = $("alert");
    a.textContent = message;
    a.className = kind === "info" ? "alert info" : "alert";
    a.hidden = !message;
  }

  function announce(message) {
    $("announcer").textContent = message;
  }

  // "3 min ago" for the past, "in 24 hours" for the future (expiry).
  function ago(iso) {
    const t = Date.parse(iso);
    if (Number.isNaN(t)) return "";
    const future = t > Date.now();
    const s = Math.round(Math.abs(Date.now() - t) / 1000);
    if (s < 45) return future ? "in under a minute" : "just now";
    const m = Math.round(s / 60);
    const h = Math.round(m / 60);
    const span = m < 60 ? `${m} min` : h < 48 ? `${h} hour${h === 1 ? "" : "s"}` : `${Math.round(h / 24)} days`;
    return future ? `in ${span}` : `${span} ago`;
  }

  function time(iso) {
    const node = el("time", { datetime: iso || "", title: iso || "" }, iso ? ago(iso) : "");
    node.dataset.ago = iso || "";
    return node;
  }

  function jwtSubject(token) {
    try {
      const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      const claims = JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
      return String(claims.sub || claims.cp_session_actor || "unknown approver");
    } catch (_) {
      return "unknown approver";
    }
  }

  // ---- API -----------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  async function problemDetail(resp) {
    try {
      const body = await resp.json();
      return body.detail || body.title || `HTTP ${resp.status}`;
    } catch (_) {
      return `HTTP ${resp.status}`;
    }
  }

  // A pasted token goes in the Authorization header and cookies stay home; signed in by the
  // session, the browser sends this origin's cookies and nothing else.
  function authHeaders(accept) {
    const headers = { Accept: accept };
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    return headers;
  }

  function credentials() {
    return state.token ? "omit" : "same-origin";
  }

  async function api(method, path, body) {
    const headers = authHeaders("application/json");
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: credentials(),
    });
    if (!resp.ok) throw new ApiError(resp.status, await problemDetail(resp));
    return resp.json();
  }

  // A rejected credential ends the session with a message saying why.
  function authFailure(err) {
    if (!(err instanceof ApiError) || (err.status !== 401 && err.status !== 403)) return false;
    const session = state.who && state.who.session;
    const why = session
      ? err.status === 401
        ? "The gateway no longer recognises your session (signed out or expired)."
        : "Your session does not belong to an approver."
      : err.status === 401
        ? "The gateway rejected this token (missing, malformed, expired or badly signed)."
        : "This token is valid but does not belong to an approver.";
    signOut(`${why} ${err.message} (HTTP ${err.status}). Paste an approver token to sign in.`);
    return true;
  }

  // ---- State merge ---------------------------------------------------------------------------

  // Is `b` at least as recent as `a`? Statuses only move forward (pending -> decided -> final),
  // so a stale snapshot racing a live event never moves an approval backwards.
  function newer(a, b) {
    if (!a) return true;
    const ra = RANK[a.status] ?? 0;
    const rb = RANK[b.status] ?? 0;
    if (ra !== rb) return rb > ra;
    if (a.status === "approved" && b.status !== "approved") return true;
    return (b.decisions || []).length >= (a.decisions || []).length;
  }

  function apply(approval) {
    const id = approval.id;
    const current = state.pending.get(id) || state.history.get(id);
    if (!newer(current, approval)) return;
    if (approval.status === "pending") {
      state.history.delete(id);
      state.pending.set(id, approval);
    } else {
      state.pending.delete(id);
      state.history.set(id, approval);
    }
  }

  // Every pending approval, page by page (`next_cursor`), so a backlog of any size is shown.
  async function allPending() {
    const items = [];
    let cursor = null;
    for (let pages = 0; pages < MAX_PAGES; pages++) {
      const more = cursor ? `&cursor=${encodeURIComponent(cursor)}` : "";
      const page = await api("GET", `/v1/approvals?status=pending&limit=${PAGE}${more}`);
      items.push(...page.items);
      cursor = page.next_cursor;
      if (!cursor) break;
    }
    return { items };
  }

  async function reload() {
    const [pending, ...decided] = await Promise.all([
      allPending(),
      ...DECIDED.map((s) => api("GET", `/v1/approvals?status=${s}&limit=${HISTORY_LIMIT}`)),
    ]);
    const seen = new Set();
    for (const a of pending.items) {
      seen.add(a.id);
      apply(a);
    }
    // A pending one missing from the fresh list was decided elsewhere; the decided lists or the
    // event stream has its new state.
    for (const id of [...state.pending.keys()]) if (!seen.has(id)) state.pending.delete(id);
    for (const page of decided) for (const a of page.items) apply(a);
    render();
  }

  function awaitingUpstream(a) {
    return a && a.status === "consumed" && a.upstream_status == null && a.upstream_error == null;
  }

  function followUpstream(id, attempt = 0) {
    if (attempt >= UPSTREAM_CHECKS_MS.length) return;
    const who = state.who;
    setTimeout(async () => {
      if (state.who !== who || !awaitingUpstream(state.history.get(id))) return;
      try {
        apply(await api("GET", `/v1/approvals/${encodeURIComponent(id)}`));
        render();
      } catch (err) {
        if (authFailure(err)) return;
      }
      followUpstream(id, attempt + 1);
    }, UPSTREAM_CHECKS_MS[attempt]);
  }

  // ---- Rendering -----------------------------------------------------------------------------

  function byNewest(field) {
    return (a, b) => Date.parse(b[field] || b.created_at) - Date.parse(a[field] || a.created_at);
  }

  function decisionsList(approval) {
    const list = el("ul", { class: "decisions" });
    for (const d of approval.decisions || []) {
      const comment = d.comment ? ` — “${d.comment}”` : "";
      list.append(el("li", {}, `${d.approver} voted ${d.decision} `, time(d.decided_at), comment));
    }
    return list.childElementCount ? list : null;
  }

  function votesText(a) {
    const approves = (a.decisions || []).filter((d) => d.decision === "approve").length;
    return `${approves} of ${a.approvals_required} approval${a.approvals_required === 1 ? "" : "s"}`;
  }

  function field(dl, label, value, cls) {
    dl.append(el("dt", {}, label), el("dd", cls ? { class: cls } : {}, value));
  }

  function buildCard(a) {
    const titleId = `a-${a.id}-title`;
    const card = el("article", { class: "approval", "aria-labelledby": titleId });
    card.append(el("h3", { id: titleId }, `${a.action} · ${a.scope}`));
    // An approval asked for through POST /v1/approvals: its reason and context are the
    // agent's own words, not the gateway's reading of a request.
    if (a.origin === "agent") {
      card.append(el("p", { class: "origin-agent" },
        "Reason and context written by the requesting agent"));
    }
    if (a.reason) card.append(el("p", { class: "reason" }, a.reason));
    const dl = el("dl");
    field(dl, "Requester", a.caller ? `${a.requester} (${a.caller})` : a.requester);
    field(dl, "Request", `${a.method || "—"} ${a.path || ""}`, "mono");
    field(dl, "Requested", time(a.created_at));
    field(dl, "Expires", time(a.expires_at));
    field(dl, "Votes", el("span", { class: "votes" }, votesText(a)));
    field(dl, "Id", a.id, "mono");
    field(dl, "Context", el("pre", { class: "context" }, JSON.stringify(a.context, null, 2)));
    card.append(dl);
    const decided = decisionsList(a);
    if (decided) card.append(decided);
    card.append(decideForm(a));
    return card;
  }

  function decideForm(a) {
    const inputId = `a-${a.id}-comment`;
    const form = el("form", { class: "decide", novalidate: "" });
    const input = el("input", { type: "text", id: inputId, name: "comment", autocomplete: "off" });
    const error = el("p", { class: "card-error", role: "alert" });
    error.hidden = true;
    // type=button: Enter in the comment field must not cast a vote.
    const approve = el("button", { type: "button", class: "approve" }, "Approve");
    const deny = el("button", { type: "button", class: "deny" }, "Deny");
    approve.setAttribute("aria-label", `Approve ${a.action} on ${a.scope}`);
    deny.setAttribute("aria-label", `Deny ${a.action} on ${a.scope}`);
    form.append(el("label", { for: inputId }, "Comment (optional)"), input,
      el("div", { class: "buttons" }, approve, deny), error);
    form.addEventListener("submit", (ev) => ev.preventDefault());
    approve.addEventListener("click", () => decide(a, "approve", input, [approve, deny], error));
    deny.addEventListener("click", () => decide(a, "deny", input, [approve, deny], error));
    return form;
  }

  async function decide(a, decision, input, buttons, error) {
    buttons.forEach((b) => (b.disabled = true));
    error.hidden = true;
    const comment = input.value.trim();
    try {
      const updated = await api("POST", `/v1/approvals/${encodeURIComponent(a.id)}/decisions`,
        { decision, comment: comment || null });
      apply(updated);
      announce(`${decision === "deny" ? "Denied" : "Approved"} ${a.action} on ${a.scope}: now ${updated.status}.`);
      render();
      keepFocus(); // the focused button was disabled, then removed
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) { authFailure(err); return; }
      const prefix = err instanceof ApiError
        ? { 403: "Not allowed", 409: "Already decided", 404: "Not found" }[err.status] || `Failed (HTTP ${err.status})`
        : "Network error";
      error.textContent = `${prefix}: ${err.message}`;
      error.hidden = false;
      buttons.forEach((b) => (b.disabled = false));
      if (err instanceof ApiError && err.status === 409) reload().catch(() => {});
    }
  }

  function render() {
    const list = $("pending-list");
    const pending = [...state.pending.values()].sort(byNewest("created_at"));
    // Keep existing cards (and what the approver typed); rebuild only the changed parts.
    const existing = new Map([...list.children].map((li) => [li.dataset.id, li]));
    let lostFocus = false;
    for (const [id, li] of existing) {
      if (state.pending.has(id)) continue;
      lostFocus = lostFocus || li.contains(document.activeElement);
      li.remove();
    }
    let previous = null;
    for (const a of pending) {
      let li = existing.get(a.id);
      const sig = `${a.status}|${(a.decisions || []).length}`;
      if (!li) {
        li = el("li", {}, buildCard(a));
        li.dataset.id = a.id;
        li.dataset.sig = sig;
      } else if (li.dataset.sig !== sig) {
        refreshCard(li, a);
        li.dataset.sig = sig;
      }
      const want = previous ? previous.nextSibling : list.firstChild;
      if (want !== li) list.insertBefore(li, want);
      previous = li;
    }
    $("pending-count").textContent = String(pending.length);
    $("pending-empty").hidden = pending.length > 0;
    renderHistory();
    if (lostFocus) keepFocus();
  }

  // A decided card leaves the list; keep keyboard users in the list rather than on <body>.
  function keepFocus() {
    if (document.activeElement && document.activeElement !== document.body) return;
    const next = document.querySelector("#pending-list input");
    (next || $("pending-title")).focus();
  }

  function refreshCard(li, a) {
    const card = li.firstChild;
    card.querySelector(".votes").textContent = votesText(a);
    const old = card.querySelector(".decisions");
    const fresh = decisionsList(a);
    if (old) old.remove();
    if (fresh) card.insertBefore(fresh, card.querySelector("form.decide"));
  }

  function renderHistory() {
    const rows = [...state.history.values()].sort(byNewest("decided_at")).slice(0, HISTORY_LIMIT);
    const body = $("history-body");
    body.replaceChildren(...rows.map(historyRow));
    $("history").hidden = rows.length === 0;
    $("history-empty").hidden = rows.length > 0;
  }

  function historyRow(a) {
    const deciders = (a.decisions || []).map((d) => `${d.approver} (${d.decision})`).join(", ");
    const upstream = a.upstream_status
      ? ` · upstream ${a.upstream_status}`
      : a.upstream_error ? ` · upstream failed: ${a.upstream_error}` : "";
    const status = a.status + upstream;
    const tr = el("tr", {},
      el("td", {}, el("span", { class: `status ${a.status}` }, status)),
      el("td", {}, a.origin === "agent" ? `${a.action} (written by the requesting agent)` : a.action),
      el("td", {}, a.scope),
      el("td", {}, a.requester),
      el("td", {}, deciders || "—"),
      el("td", {}, time(a.decided_at || a.consumed_at || a.created_at)));
    tr.dataset.id = a.id;
    return tr;
  }

  function refreshAges() {
    for (const t of document.querySelectorAll("time[data-ago]")) {
      if (t.dataset.ago) t.textContent = ago(t.dataset.ago);
    }
  }

  // ---- Live events (SSE over fetch) ----------------------------------------------------------

  function setLive(text, cls) {
    const live = $("live");
    live.textContent = text;
    live.className = `live ${cls || ""}`;
  }

  function onEvent(type, data) {
    if (!type.startsWith("approval.")) return;
    let approval;
    try {
      approval = JSON.parse(data);
    } catch (_) {
      return;
    }
    const wasPending = state.pending.has(approval.id);
    apply(approval);
    render();
    if (awaitingUpstream(approval)) followUpstream(approval.id);
    const what = `${approval.action} on ${approval.scope}`;
    if (type === "approval.requested") announce(`New approval requested: ${what}.`);
    else if (wasPending || approval.status !== "pending") announce(`${what} is now ${approval.status}.`);
  }

  // Parse an SSE byte stream (WHATWG "event stream interpretation"), dispatching each event.
  async function readEvents(body, ctl) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let type = "", data = [], id = null;
    let stall = setTimeout(() => ctl.abort(), STALL_MS);
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        clearTimeout(stall);
        stall = setTimeout(() => ctl.abort(), STALL_MS);
        buffer += decoder.decode(value, { stream: true });
        const lines = buffer.split(/\r\n|\r|\n/);
        buffer = lines.pop();
        for (const line of lines) {
          if (line === "") {
            if (id !== null) state.lastEventId = id;
            if (data.length) onEvent(type || "message", data.join("\n"));
            type = ""; data = []; id = null;
            continue;
          }
          if (line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const name = colon < 0 ? line : line.slice(0, colon);
          let val = colon < 0 ? "" : line.slice(colon + 1);
          if (val.startsWith(" ")) val = val.slice(1);
          if (name === "event") type = val;
          else if (name === "data") data.push(val);
          else if (name === "id" && !val.includes("\0")) id = val;
          else if (name === "retry" && /^\d+$/.test(val)) state.retryMs = Number(val);
        }
      }
    } finally {
      clearTimeout(stall);
    }
  }

  async function connect() {
    const ctl = new AbortController();
    state.stream = ctl;
    const headers = authHeaders("text/event-stream");
    if (state.lastEventId) headers["Last-Event-ID"] = state.lastEventId;
    try {
      const resp = await fetch("/v1/events",
        { headers, signal: ctl.signal, cache: "no-store", credentials: credentials() });
      if (!resp.ok) throw new ApiError(resp.status, await problemDetail(resp));
      setLive("Live", "on");
      // Subscribed first, then a full snapshot: nothing can fall between the two.
      await reload();
      state.retryMs = 1000;
      await readEvents(resp.body, ctl);
    } catch (err) {
      if (authFailure(err)) return;
    }
    ctl.abort(); // release the old response, if any
    if (state.stream !== ctl) return; // signed out meanwhile
    setLive("Reconnecting…", "off");
    const wait = state.retryMs;
    state.retryMs = Math.min(state.retryMs * 2, 15000);
    setTimeout(() => { if (state.stream === ctl) connect(); }, wait);
  }

  // ---- Session -------------------------------------------------------------------------------

  function signIn(token) {
    state.token = token;
    state.who = { token };
    $("signed-as").replaceChildren("Signed in as ", el("strong", { id: "whoami" }, jwtSubject(token)));
    enter();
  }

  // No token: the browser's own session for this site (see trySession).
  function signInSession() {
    state.token = null;
    state.who = { session: true };
    $("signed-as").textContent = "Signed in by your session";
    enter();
  }

  function enter() {
    state.lastEventId = null;
    state.pending.clear();
    state.history.clear();
    $("signin").hidden = true;
    $("session").hidden = false;
    $("app").hidden = false;
    showAlert("");
    render();
    setLive("Connecting…", "");
    connect();
  }

  // Signed in by the session, signing out only stops using it in this page (the login belongs
  // to the site): the token form shows, and a reload tries the session again.
  function signOut(message) {
    const session = state.who && state.who.session;
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    state.who = null;
    if (state.stream) state.stream.abort();
    state.stream = null;
    state.pending.clear();
    state.history.clear();
    $("pending-list").replaceChildren();
    $("history-body").replaceChildren();
    $("app").hidden = true;
    $("session").hidden = true;
    $("signin").hidden = false;
    $("token").value = "";
    const stopped = session
      ? "Stopped using your session in this page (reload to use it again). Paste an approver token to sign in."
      : "Signed out.";
    showAlert(message || stopped, message ? "error" : "info");
    $("token").focus();
  }

  function start() {
    $("noscript-note").hidden = true;
    $("signin-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const token = $("token").value.trim().replace(/^Bearer\s+/i, "");
      if (!token) {
        showAlert("Paste a token first.");
        $("token").focus();
        return;
      }
      sessionStorage.setItem(TOKEN_KEY, token);
      $("token").value = "";
      signIn(token);
    });
    $("signout").addEventListener("click", () => signOut());
    setInterval(refreshAges, 30000);
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) signIn(saved);
    else trySession();
  }

  // Without a pasted token, ask with the browser's cookies whether this site's login is one the
  // gateway recognises: 200 → signed in by the session; 401/403 (no session, or not an
  // approver's) or no answer → the token form, as without a login.
  async function trySession() {
    try {
      const resp = await fetch("/v1/approvals?status=pending&limit=1", {
        headers: { Accept: "application/json" },
        cache: "no-store",
        credentials: "same-origin",
      });
      if (resp.ok && !sessionStorage.getItem(TOKEN_KEY) && state.who === null) {
        signInSession();
        return;
      }
    } catch (_) {
      // no answer: fall back to the token form
    }
    if (state.who === null) $("signin").hidden = false;
  }

  start();
})();
