"use strict";
// The customer's phone: state from /sandbox/state, then live changes from /sandbox/events.
(function () {
  const $ = (id) => document.getElementById(id);
  const phones = new Map();    // number -> phone
  const messages = new Map();  // id -> message
  let current = null;          // the number whose chat is open
  const TICKS = { queued: "🕓", sent: "✓", delivered: "✓✓", read: "✓✓", failed: "⚠" };

  function post(path, body) {
    return fetch(path, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    }).then(async (r) => {
      if (!r.ok) throw new Error(await r.text());
      $("error").textContent = "";
      return r.json();
    }).catch((e) => { $("error").textContent = e.message; throw e; });
  }

  function time(epoch) {
    return new Date(epoch * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function media(m) {
    if (!m.media_url) return null;
    let el;
    if (m.kind === "image") {
      el = document.createElement("img"); el.alt = m.filename || "image";
    } else if (m.kind === "video") {
      el = document.createElement("video"); el.controls = true;
    } else if (m.kind === "audio" || m.kind === "voice") {
      el = document.createElement("audio"); el.controls = true;
    } else {
      el = document.createElement("a"); el.textContent = "📄 " + (m.filename || "document");
      el.href = m.media_url; el.target = "_blank"; el.rel = "noopener";
      return el;
    }
    el.src = m.media_url;
    return el;
  }

  function bubble(m) {
    const div = document.createElement("div");
    div.className = "msg " + m.direction;
    div.dataset.id = m.id;
    div.dataset.status = m.status;
    div.dataset.kind = m.kind;
    if (m.template) {
      const t = document.createElement("div");
      t.className = "template"; t.textContent = "Template · " + m.template;
      div.append(t);
    }
    const file = media(m);
    if (file) div.append(file);
    if (m.text) {
      const text = document.createElement("div");
      text.className = "text"; text.textContent = m.text;
      div.append(text);
    }
    if (m.error) {
      const err = document.createElement("div");
      err.className = "err"; err.textContent = m.error;
      div.append(err);
    }
    const meta = document.createElement("div");
    meta.className = "meta"; meta.textContent = time(m.at);
    if (m.direction === "out") {
      const tick = document.createElement("span");
      tick.className = "tick " + m.status; tick.title = m.status;
      tick.textContent = TICKS[m.status] || m.status;
      meta.append(tick);
    } else if (m.status !== "received") {
      meta.append(" · " + m.status);
    }
    div.append(meta);
    return div;
  }

  function renderChat() {
    const chat = $("chat");
    chat.replaceChildren(...[...messages.values()]
      .filter((m) => m.number === current).sort((a, b) => a.id - b.id).map(bubble));
    chat.scrollTop = chat.scrollHeight;
  }

  function renderPhone() {
    const known = $("known");
    known.replaceChildren(...[...phones.values()].map((p) => {
      const o = document.createElement("option");
      o.value = p.number; o.label = p.name; return o;
    }));
    const p = phones.get(current);
    $("title").textContent = p ? p.name + " · +" + p.number : "Pick or type a customer number";
    const w = $("window");
    if (!p) { w.textContent = ""; return; }
    const open = p.window_closes_at && p.window_closes_at * 1000 > Date.now();
    w.className = "window" + (open ? "" : " closed");
    w.textContent = open ? "reply window open until " + time(p.window_closes_at)
      : "reply window closed: operators' replies are refused until the customer writes";
  }

  function apply(event) {
    if (event.type === "phone") {
      phones.set(event.phone.number, event.phone); renderPhone();
    } else if (event.type === "message") {
      keep(event.message);
      if (event.message.number === current) renderChat();
    } else if (event.type === "auto_read") {
      $("auto-read").checked = event.auto_read;
    }
  }

  function select(number, name) {
    current = number;
    if (name !== undefined) $("name").value = name;
    $("text").disabled = $("send").disabled = false;
    renderPhone(); renderChat(); $("text").focus();
  }

  $("who").addEventListener("submit", (e) => {
    e.preventDefault();
    let number = $("number").value.replace(/[\s().+-]/g, "");
    if (number.startsWith("0")) number = "62" + number.slice(1);
    const known = phones.get(number);
    select(number, known && !$("name").value ? known.name : undefined);
  });
  $("compose").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("text").value;
    if (!current || !text.trim()) return;
    $("text").value = "";
    post("/sandbox/send", { number: current, name: $("name").value, text: text })
      .then((m) => { keep(m); renderChat(); }, () => { $("text").value = text; });
  });
  $("auto-read").addEventListener("change", (e) => post("/sandbox/auto_read", { on: e.target.checked }));
  $("mark-read").addEventListener("click", () => current && post("/sandbox/read", { number: current }));
  $("expire").addEventListener("click", () => current && post("/sandbox/expire", { number: current }));
  setInterval(renderPhone, 30000);

  // Subscribe first, then read the state: nothing published in between is missed, and a
  // message's status never goes back (an event may overtake the state's answer).
  const RANK = { sending: 0, queued: 1, sent: 2, delivered: 3, read: 4, failed: 5,
    received: 5, refused: 5, unreachable: 5 };
  function keep(m) {
    const old = messages.get(m.id);
    if (!old || (RANK[m.status] ?? 0) >= (RANK[old.status] ?? 0)) messages.set(m.id, m);
  }
  const events = new EventSource("/sandbox/events");
  events.onerror = () => { $("link").textContent = "reconnecting…"; };
  events.onmessage = (e) => apply(JSON.parse(e.data));
  events.onopen = () => {
    $("link").textContent = "live";
    fetch("/sandbox/state").then((r) => r.json()).then((state) => {
      state.phones.forEach((p) => phones.set(p.number, p));
      state.messages.forEach(keep);
      $("auto-read").checked = state.auto_read;
      renderPhone(); renderChat();
    });
  };
})();
