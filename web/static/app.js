// dsgate chat page: sessions, streaming chat over SSE, parameters, extensions.
// All text from the server or the user reaches the DOM through textContent or the safe
// Markdown renderer (markdown.js); nothing is ever assigned to innerHTML.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const store = window.localStorage;
  const KEY = { apiKey: "dsgate.apiKey", session: "dsgate.session", params: "dsgate.params" };

  // What each stable error code means to a person at the keyboard.
  const ERROR_HINTS = {
    invalid_api_key: "The API key was rejected. Enter a valid key under Settings.",
    permission_denied: "This needs the admin key.",
    invalid_request: "The request was not valid.",
    not_found: "Not found.",
    model_not_found: "The server does not serve that model.",
    session_not_found: "This session no longer exists (deleted, expired, or owned by another key).",
    session_busy: "This session is still answering another message. Wait for it to finish.",
    session_conflict: "The session changed while answering; send the message again.",
    session_store_unavailable: "The session store is unavailable right now. Chats without a session still work.",
    extension_not_found: "The chosen extension does not exist (any more).",
    extension_exists: "An extension with that name already exists.",
    invalid_module: "The module is not a valid dsgate extension.",
    module_too_large: "The module is too large.",
    extension_failed: "The extension failed while running (trap, timeout or ABI error).",
    request_too_large: "The message is too large.",
    context_length_exceeded: "The conversation is longer than the model's context.",
    overloaded: "The server is busy. Try again in a moment.",
    not_ready: "The server is still starting.",
    engine_error: "The engine failed while answering.",
    internal_error: "The server hit an internal error.",
  };

  const state = {
    session: store.getItem(KEY.session) || "",
    sessions: [],
    model: "deepseek_v3",
    controller: null, // AbortController of the answer in flight
    abortedAt: 0, // when the user last stopped an answer (ms)
  };

  // ---------- helpers ----------

  class APIError extends Error {
    constructor(status, body) {
      const e = (body && body.error) || {};
      super(e.message || "HTTP " + status);
      this.status = status;
      this.code = e.code || "";
    }
  }

  function describe(err) {
    if (err instanceof APIError) {
      const hint = ERROR_HINTS[err.code];
      const head = hint ? hint : "Request failed (HTTP " + err.status + ").";
      return head + (err.message && err.message !== hint ? "\n" + err.message : "") + (err.code ? " [" + err.code + "]" : "");
    }
    if (err && err.name === "TypeError") return "Cannot reach the server: " + err.message;
    return String((err && err.message) || err);
  }

  function showError(err) {
    const box = $("error");
    if (!err) {
      box.hidden = true;
      box.textContent = "";
      return;
    }
    box.textContent = describe(err);
    box.dataset.code = (err && err.code) || "";
    box.hidden = false;
  }

  function headers(extra) {
    const h = Object.assign({}, extra || {});
    const key = $("api-key").value.trim();
    if (key) h["Authorization"] = "Bearer " + key;
    return h;
  }

  async function api(method, path, body) {
    const opts = { method: method, headers: headers(body !== undefined ? { "Content-Type": "application/json" } : {}) };
    if (body !== undefined) opts.body = JSON.stringify(body);
    const res = await fetch(path, opts);
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
    if (!res.ok) throw new APIError(res.status, data);
    return data;
  }

  function sessionTitle(s) {
    return (s.metadata && s.metadata.title) || "Untitled " + new Date((s.created || 0) * 1000).toLocaleString();
  }

  // ---------- rendering ----------

  function addMessage(role, text, opts) {
    const div = document.createElement("div");
    div.className = "msg " + role;
    div.dataset.role = role;
    const r = document.createElement("div");
    r.className = "role";
    r.textContent = role;
    const body = document.createElement("div");
    body.className = "body";
    div.appendChild(r);
    div.appendChild(body);
    setMessageText(div, text);
    if (opts && opts.meta) setMeta(div, opts.meta);
    $("messages").appendChild(div);
    div.scrollIntoView({ block: "end" });
    return div;
  }

  function setMessageText(div, text) {
    const body = div.querySelector(".body");
    body.replaceChildren();
    if (div.dataset.role === "assistant") {
      body.appendChild(window.dsgateMarkdown.render(text));
    } else {
      body.textContent = text;
    }
    div.dataset.text = text;
  }

  function setMeta(div, text) {
    let m = div.querySelector(".meta");
    if (!m) {
      m = document.createElement("div");
      m.className = "meta";
      div.appendChild(m);
    }
    m.textContent = text;
  }

  function renderSessions() {
    const ul = $("session-list");
    ul.replaceChildren();
    for (const s of state.sessions) {
      const li = document.createElement("li");
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = sessionTitle(s);
      b.title = s.id;
      b.dataset.id = s.id;
      b.setAttribute("aria-current", s.id === state.session ? "true" : "false");
      b.addEventListener("click", () => switchSession(s.id));
      li.appendChild(b);
      ul.appendChild(li);
    }
    const cur = state.sessions.find((s) => s.id === state.session);
    $("session-title").textContent = cur ? sessionTitle(cur) : "New chat";
    $("rename-session").disabled = !cur;
    $("delete-session").disabled = !cur;
  }

  // ---------- sessions ----------

  async function loadSessions() {
    try {
      const data = await api("GET", "/v1/sessions?limit=100");
      state.sessions = (data && data.data) || [];
      if (state.session && !state.sessions.some((s) => s.id === state.session)) {
        setSession("");
      }
      renderSessions();
    } catch (err) {
      state.sessions = [];
      renderSessions();
      showError(err);
    }
  }

  function setSession(id) {
    state.session = id;
    if (id) store.setItem(KEY.session, id); else store.removeItem(KEY.session);
  }

  async function switchSession(id) {
    if (state.controller) return;
    setSession(id);
    showError(null);
    $("messages").replaceChildren();
    renderSessions();
    closeSidebar();
    if (!id) return;
    try {
      const s = await api("GET", "/v1/sessions/" + encodeURIComponent(id));
      if (s.system) addMessage("system", s.system);
      for (const m of s.messages || []) addMessage(m.role === "assistant" ? "assistant" : m.role, m.content || "");
    } catch (err) {
      showError(err);
    }
  }

  async function ensureSession(firstText) {
    if (state.session) return state.session;
    const s = await api("POST", "/v1/sessions", { metadata: { title: firstText.slice(0, 48) || "New chat" } });
    setSession(s.id);
    state.sessions.unshift(s);
    renderSessions();
    return s.id;
  }

  function startRename() {
    const cur = state.sessions.find((s) => s.id === state.session);
    if (!cur) return;
    const h = $("session-title");
    const input = document.createElement("input");
    input.type = "text";
    input.value = sessionTitle(cur);
    input.setAttribute("aria-label", "Session title");
    input.id = "rename-input";
    h.replaceChildren(input);
    input.focus();
    input.select();
    let done = false;
    const finish = async (save) => {
      if (done) return;
      done = true;
      const title = input.value.trim();
      if (save && title) {
        try {
          const s = await api("PATCH", "/v1/sessions/" + encodeURIComponent(cur.id), { title: title });
          Object.assign(cur, s);
        } catch (err) {
          showError(err);
        }
      }
      renderSessions();
    };
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter") { e.preventDefault(); finish(true); }
      if (e.key === "Escape") { e.preventDefault(); finish(false); }
    });
    input.addEventListener("blur", () => finish(true));
  }

  let deleteArmed = null;
  async function deleteSession() {
    const btn = $("delete-session");
    if (!state.session) return;
    if (!deleteArmed) {
      btn.textContent = "Confirm delete";
      deleteArmed = setTimeout(() => { deleteArmed = null; btn.textContent = "Delete"; }, 4000);
      return;
    }
    clearTimeout(deleteArmed);
    deleteArmed = null;
    btn.textContent = "Delete";
    try {
      await api("DELETE", "/v1/sessions/" + encodeURIComponent(state.session));
      state.sessions = state.sessions.filter((s) => s.id !== state.session);
      await switchSession("");
    } catch (err) {
      showError(err);
    }
  }

  // ---------- chat ----------

  function params() {
    const p = {};
    const num = (id) => {
      const v = $(id).value.trim();
      return v === "" ? undefined : Number(v);
    };
    p.temperature = num("temperature");
    p.top_p = num("top-p");
    p.max_tokens = num("max-tokens");
    const seed = num("seed");
    if (seed !== undefined && Number.isFinite(seed)) p.seed = Math.trunc(seed);
    const ext = {};
    if ($("template-ext").value) ext.template = $("template-ext").value;
    if ($("sampler-ext").value) {
      ext.sampler = $("sampler-ext").value;
      const raw = $("sampler-args").value.trim();
      if (raw) ext.sampler_args = JSON.parse(raw); // a SyntaxError is shown to the user
    }
    if (Object.keys(ext).length) p.extensions = ext;
    return p;
  }

  // readSSE calls onEvent with each parsed `data:` JSON object until [DONE].
  async function readSSE(res, onEvent) {
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, "")).join("\n");
        if (!data) continue;
        if (data === "[DONE]") return;
        onEvent(JSON.parse(data));
      }
    }
  }

  async function send() {
    const text = $("prompt").value;
    if (!text.trim() || state.controller) return;
    showError(null);
    let body;
    try {
      body = Object.assign({ model: state.model, stream: true, stream_options: { include_usage: true } }, params());
    } catch (err) {
      showError(new Error("Sampler args must be JSON: " + err.message));
      return;
    }
    const controller = new AbortController();
    state.controller = controller;
    setBusy(true);
    let answer = null;
    let userDiv = null;
    try {
      try {
        body.session_id = await ensureSession(text);
      } catch (err) {
        // Without a session store the chat still works, it just is not kept.
        if (!(err instanceof APIError) || err.code !== "session_store_unavailable") throw err;
        showError(err);
      }
      body.messages = [{ role: "user", content: text }];
      $("prompt").value = "";
      userDiv = addMessage("user", text);
      answer = addMessage("assistant", "");
      answer.classList.add("streaming");
      let res;
      for (let attempt = 0; ; attempt++) {
        res = await fetch("/v1/chat/completions", {
          method: "POST",
          headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
          body: JSON.stringify(body),
          signal: controller.signal,
        });
        if (res.ok) break;
        let data = null;
        try { data = await res.json(); } catch (e) { data = null; }
        const err = new APIError(res.status, data);
        // A turn we just stopped holds the session until the server has cancelled it
        // (within one engine step); wait for that instead of showing an error.
        if (err.code === "session_busy" && Date.now() - state.abortedAt < 5000 && attempt < 20) {
          await new Promise((r) => setTimeout(r, 250));
          continue;
        }
        throw err;
      }
      let content = "";
      let updates = 0;
      let finish = "";
      await readSSE(res, (ev) => {
        if (ev.error) throw new APIError(ev.error.status || 500, ev);
        const ch = ev.choices && ev.choices[0];
        if (ch && ch.delta && ch.delta.content) {
          content += ch.delta.content;
          updates++;
          answer.dataset.updates = String(updates);
          setMessageText(answer, content);
          answer.scrollIntoView({ block: "end" });
        }
        if (ch && ch.finish_reason) finish = ch.finish_reason;
        if (ev.usage) setMeta(answer, ev.usage.completion_tokens + " tokens" + (finish ? " · " + finish : ""));
      });
      answer.dataset.finish = finish || "stop";
      if (body.session_id) touchSession(body.session_id);
    } catch (err) {
      if (err.name === "AbortError") {
        if (answer) {
          answer.dataset.finish = "cancelled";
          setMeta(answer, "stopped — this turn was not saved to the session");
        }
      } else {
        if (answer && !answer.dataset.text) answer.remove();
        if (userDiv && !answer) userDiv.remove();
        if (!$("prompt").value) $("prompt").value = text;
        showError(err);
      }
    } finally {
      if (answer) answer.classList.remove("streaming");
      state.controller = null;
      setBusy(false);
      $("prompt").focus();
    }
  }

  function touchSession(id) {
    const i = state.sessions.findIndex((s) => s.id === id);
    if (i > 0) state.sessions.unshift(state.sessions.splice(i, 1)[0]);
    renderSessions();
  }

  function setBusy(busy) {
    $("send").hidden = busy;
    $("stop").hidden = !busy;
    $("new-session").disabled = busy;
  }

  // ---------- extensions ----------

  async function loadExtensions() {
    try {
      const data = await api("GET", "/v1/extensions");
      const list = Array.isArray(data) ? data : (data && data.data) || [];
      for (const [sel, kind, label] of [["template-ext", "template", "built-in DeepSeek-V3 template"], ["sampler-ext", "sampler", "built-in sampler"]]) {
        const s = $(sel);
        const keep = s.value;
        s.replaceChildren(new Option(label, ""));
        for (const x of list.filter((e) => e.kind === kind)) s.appendChild(new Option(x.name, x.name));
        s.value = [...s.options].some((o) => o.value === keep) ? keep : "";
      }
    } catch (err) {
      // The picker stays at the built-ins; auth errors show when chatting.
    }
  }

  async function upload(e) {
    e.preventDefault();
    const status = $("upload-status");
    const file = $("ext-file").files[0];
    if (!file) return;
    const form = new FormData();
    form.append("name", $("ext-name").value.trim());
    form.append("kind", $("ext-kind").value);
    form.append("module", file, file.name);
    status.textContent = "Uploading…";
    try {
      const key = $("admin-key").value.trim();
      const res = await fetch("/v1/extensions", { method: "POST", headers: key ? { Authorization: "Bearer " + key } : {}, body: form });
      const data = await res.json().catch(() => null);
      if (!res.ok) throw new APIError(res.status, data);
      status.textContent = "Uploaded " + data.name + " (" + data.kind + ", " + data.size + " bytes)";
      await loadExtensions();
    } catch (err) {
      status.textContent = describe(err);
    }
  }

  // ---------- wiring ----------

  function closeSidebar() {
    $("sidebar").classList.remove("open");
    $("toggle-sidebar").setAttribute("aria-expanded", "false");
  }

  function saveParams() {
    const p = {};
    for (const id of ["temperature", "top-p", "max-tokens", "seed", "sampler-args"]) p[id] = $(id).value;
    store.setItem(KEY.params, JSON.stringify(p));
  }

  function restoreParams() {
    try {
      const p = JSON.parse(store.getItem(KEY.params) || "{}");
      for (const id of Object.keys(p)) if ($(id)) $(id).value = p[id];
    } catch (e) { /* ignore a corrupt entry */ }
  }

  async function init() {
    $("api-key").value = store.getItem(KEY.apiKey) || "";
    restoreParams();
    $("api-key").addEventListener("change", async () => {
      store.setItem(KEY.apiKey, $("api-key").value.trim());
      showError(null);
      await loadSessions();
      await loadExtensions();
      if (state.session) await switchSession(state.session);
    });
    for (const id of ["temperature", "top-p", "max-tokens", "seed", "sampler-args"]) $(id).addEventListener("change", saveParams);
    $("composer").addEventListener("submit", (e) => { e.preventDefault(); send(); });
    $("prompt").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        send();
      }
    });
    $("stop").addEventListener("click", () => {
      if (!state.controller) return;
      state.abortedAt = Date.now();
      state.controller.abort();
    });
    $("new-session").addEventListener("click", () => switchSession(""));
    $("rename-session").addEventListener("click", startRename);
    $("delete-session").addEventListener("click", deleteSession);
    $("upload-form").addEventListener("submit", upload);
    $("toggle-sidebar").addEventListener("click", () => {
      const open = $("sidebar").classList.toggle("open");
      $("toggle-sidebar").setAttribute("aria-expanded", String(open));
    });
    try {
      const models = await api("GET", "/v1/models");
      if (models && models.data && models.data[0]) state.model = models.data[0].id;
    } catch (err) {
      showError(err);
    }
    await loadSessions();
    await loadExtensions();
    if (state.session) await switchSession(state.session);
    $("prompt").focus();
    document.body.dataset.ready = "true";
  }

  init();
})();
