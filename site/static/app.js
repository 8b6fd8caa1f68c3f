// Glimpse upload page. Plain JavaScript, no build step. Every string that came from a
// user or a node (file names, labels, node names, errors) is written with textContent
// and never parsed as HTML, so nothing uploaded can inject markup.
//
// Who we are: without API keys the server sets an HttpOnly cookie that scopes our jobs and
// events to this browser; with keys the page asks for one once, keeps it in localStorage
// and sends it as `Authorization: Bearer` on every request. Events are read with fetch()
// (EventSource cannot send that header).
"use strict";

const UPLOAD_CONCURRENCY = 4;
const MAX_RETRIES_BUSY = 30;
const KEY_STORAGE = "glimpse-api-key";

let session = null;             // what GET /api/v1/session said about us
let listening = false;          // an event stream loop is running
let polling = false;            // a status poll loop is running

const cardsByJob = new Map();   // job id -> card state
const early = new Map();        // job id -> latest event seen before the POST answered
let pending = [];               // cards waiting to be uploaded, in the order chosen
let uploading = 0;
let total = 0;
let maxFileBytes = 0;           // the server's per-file limit, once /api/v1/status said it
const statusWarnings = new Set();  // "synthetic" / "untrained", as the status says now
const seenWarnings = new Set();    // the same, from the results shown on this page

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------- the API, with our key when the server wants one ----------

function apiKey() {
  try { return localStorage.getItem(KEY_STORAGE) || ""; } catch { return ""; }
}

async function api(path, opts = {}) {
  const headers = new Headers(opts.headers || {});
  const key = apiKey();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  const resp = await fetch(path, { ...opts, headers, credentials: "same-origin" });
  if (resp.status === 401) askForKey(apiKey() ? "That key was not accepted." : "");
  return resp;
}

// The server answered 401: say so where the user looks (a panel above the drop zone, the
// status pill, the nodes panel), and hold uploads until a key is accepted.
function askForKey(message) {
  session = null;
  try { localStorage.removeItem(KEY_STORAGE); } catch { /* private mode */ }
  $("key-error").textContent = message || "";
  showKeyPrompt(true);
  $("key").focus();
  setReady(null, "API key needed");
  $("nodes").replaceChildren(el("p", "muted", "Waiting for an API key (paste one above)."));
  for (const card of pending) setStatus(card, "waiting", "waiting for an API key");
}

function showKeyPrompt(show) {
  $("key-needed").hidden = !show;
  $("key-form").hidden = !show;
}

// Learn who we are (and get our cookie) before anything else, so the event stream and the
// uploads share one identity.
async function start() {
  let resp;
  try { resp = await api("/api/v1/session"); } catch { setReady(null); setTimeout(start, 2000); return; }
  if (resp.status === 401) return;  // askForKey has shown the form
  if (!resp.ok) { setReady(null); setTimeout(start, 2000); return; }
  session = await resp.json();
  showKeyPrompt(false);
  $("forget-key").hidden = session.auth !== "key";
  listen();
  // The limits first, so files over them are refused here instead of uploaded; then the
  // images chosen while we waited (for a key, say).
  await pollOnce();
  pump();
  pollStatus();
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function fmtMs(ms) {
  if (ms === null || ms === undefined) return "–";
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

function fmtBytes(n) {
  if (n >= 1048576) return `${(n / 1048576).toFixed(1)} MiB`;
  if (n >= 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${n} bytes`;
}

// ---------- cards ----------

function newCard(file) {
  const node = $("card-template").content.firstElementChild.cloneNode(true);
  const card = { node, file, job: null, final: false };
  node.querySelector(".name").textContent = file.name || "upload";
  node.querySelector(".name").title = file.name || "upload";
  const img = node.querySelector("img");
  if (file.type && file.type.startsWith("image/")) {
    const url = URL.createObjectURL(file);
    img.src = url;
    img.alt = file.name || "";
    img.addEventListener("error", () => node.classList.add("no-thumb"));
  } else {
    node.classList.add("no-thumb");
  }
  setStatus(card, "waiting", "waiting to upload");
  // In the order the files were chosen: the first one first.
  $("cards").append(node);
  total += 1;
  updateSummary();
  return card;
}

function setStatus(card, kind, text) {
  const badge = card.node.querySelector(".badge");
  badge.textContent = text;
  badge.className = `badge badge-${kind}`;
  card.node.dataset.status = kind;
}

function showError(card, message, code, badge) {
  card.final = true;
  card.node.classList.add("error");
  setStatus(card, "error", badge || (code ? `failed · ${code}` : "failed"));
  card.node.querySelector(".error-text").textContent = message;
  updateSummary();
}

function applyJob(card, job) {
  if (card.final) return;
  card.job = job.id;
  card.node.dataset.job = job.id;
  const meta = card.node.querySelector(".meta");
  switch (job.status) {
    case "queued":
      setStatus(card, "queued", "queued");
      break;
    case "running":
      setStatus(card, "running", job.note || (job.node ? `on ${job.node}` : "running"));
      break;
    case "retrying":
      setStatus(card, "retrying", job.note || `retry ${job.attempts}`);
      break;
    case "ok": {
      card.final = true;
      setStatus(card, "ok", "done");
      const list = card.node.querySelector(".labels");
      list.replaceChildren();
      for (const t of job.top) {
        const li = el("li", "label");
        const row = el("div", "label-row");
        row.append(el("span", "label-name", t.label), el("span", "label-pct", `${(t.probability * 100).toFixed(1)}%`));
        const bar = el("div", "bar");
        const fill = el("div", "fill");
        fill.style.width = `${Math.max(0.5, Math.min(100, t.probability * 100))}%`;
        bar.append(fill);
        li.append(row, bar);
        list.append(li);
      }
      const attempts = job.attempts === 1 ? "1 attempt" : `${job.attempts} attempts`;
      meta.replaceChildren(
        el("span", "meta-node", job.node || "?"),
        el("span", null, ` · ${fmtMs(job.latency_ms)} · ${attempts} · ${fmtBytes(job.bytes)}`),
      );
      // Labels from random weights or the synthetic model are never shown unmarked: the one
      // banner above says so (not a copy on every card), and the card is drawn as not real.
      if (job.warning) {
        card.node.classList.add("unreal");
        seenWarnings.add(/synthetic/i.test(job.warning) ? "synthetic" : "untrained");
        renderWarning();
      }
      updateSummary();
      break;
    }
    case "error":
      showError(card, job.error || "failed", job.code);
      break;
  }
}

function bindJob(card, job) {
  cardsByJob.set(job.id, card);
  applyJob(card, job);
  const seen = early.get(job.id);
  if (seen) {
    early.delete(job.id);
    applyJob(card, seen);
  }
}

function updateSummary() {
  let done = 0, failed = 0;
  for (const c of document.querySelectorAll(".card")) {
    if (c.dataset.status === "ok") done += 1;
    if (c.dataset.status === "error") failed += 1;
  }
  const busy = total - done - failed;
  $("summary").textContent = total === 0 ? "No images yet."
    : `${total} image${total === 1 ? "" : "s"} · ${done} done · ${failed} failed · ${busy} in progress`;
  $("clear").hidden = total === 0 || busy > 0;
}

// ---------- uploads ----------

function addFiles(files) {
  for (const f of files) {
    const card = newCard(f);
    if (!refuseTooLarge(card)) pending.push(card);
  }
  if (!session && !$("key-needed").hidden) {
    for (const card of pending) setStatus(card, "waiting", "waiting for an API key");
  }
  pump();
}

// A file over the server's per-file limit is refused here, by name, without sending a byte
// (the server would read it all to the limit and then refuse it anyway).
function refuseTooLarge(card) {
  const f = card.file;
  if (!maxFileBytes || f.size <= maxFileBytes) return false;
  showError(card, `"${f.name || "upload"}" is ${fmtBytes(f.size)}; the limit is ${fmtBytes(maxFileBytes)} per file`, null, "too large");
  return true;
}

function pump() {
  // Without a session (no key yet, or the server unreachable) cards wait; start() pumps.
  while (session && uploading < UPLOAD_CONCURRENCY && pending.length > 0) {
    const card = pending.shift();
    if (refuseTooLarge(card)) continue;
    uploading += 1;
    upload(card, 0).finally(() => { uploading -= 1; pump(); });
  }
}

async function upload(card, retries) {
  setStatus(card, "uploading", retries ? `busy, retry ${retries}` : "uploading");
  const form = new FormData();
  form.append("file", card.file, card.file.name || "upload");
  let resp, body;
  try {
    resp = await api("/api/v1/classify", { method: "POST", body: form });
    body = await resp.json().catch(() => ({}));
  } catch (e) {
    showError(card, `upload failed: ${e.message || e}`);
    return;
  }
  // The key was refused (or revoked): the card waits for the next one.
  if (resp.status === 401) {
    pending.unshift(card);
    setStatus(card, "waiting", "waiting for an API key");
    return;
  }
  // 503: the server is full; 429: we are over our own share. Both say when to come back.
  if ((resp.status === 503 || resp.status === 429) && !body.jobs && !body.results && retries < MAX_RETRIES_BUSY) {
    const after = Number(resp.headers.get("Retry-After")) || 2;
    setStatus(card, "queued", `${resp.status === 429 ? "over our share" : "server busy"}, retrying in ${after} s`);
    await sleep(after * 1000);
    return upload(card, retries + 1);
  }
  const jobs = body.jobs || body.results;
  if (Array.isArray(jobs) && jobs.length > 0) {
    bindJob(card, jobs[0]);
  } else {
    showError(card, body.error || `HTTP ${resp.status}`, resp.status);
  }
}

// ---------- live updates ----------

function onJobEvent(data) {
  let job;
  try { job = JSON.parse(data); } catch { return; }
  const card = cardsByJob.get(job.id);
  if (card) {
    applyJob(card, job);
  } else {
    early.set(job.id, job);
    if (early.size > 2000) early.delete(early.keys().next().value);
  }
}

// One Server-Sent Events block: `event:` and `data:` lines.
function parseEvent(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  return { event, data: data.join("\n") };
}

// Follow our job updates; reconnect after a pause whenever the stream ends.
async function listen() {
  if (listening) return;
  listening = true;
  while (session) {
    try {
      const resp = await api("/api/v1/events", { headers: { Accept: "text/event-stream" } });
      if (resp.status === 401) return;
      if (!resp.ok || !resp.body) throw new Error(`HTTP ${resp.status}`);
      refreshUnfinished();
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value.replace(/\r\n?/g, "\n");
        let end;
        while ((end = buf.indexOf("\n\n")) >= 0) {
          const ev = parseEvent(buf.slice(0, end));
          buf = buf.slice(end + 2);
          if (ev.event === "job") onJobEvent(ev.data);
          else if (ev.event === "lagged") refreshUnfinished();
        }
      }
    } catch { /* reconnect below */ }
    if (!session) break;
    setReady(null);
    await sleep(2000);
  }
  listening = false;
}

// After a reconnect or a lag, ask for the jobs whose updates may have been missed.
async function refreshUnfinished() {
  for (const [id, card] of cardsByJob) {
    if (card.final) continue;
    try {
      const r = await api(`/api/v1/jobs/${encodeURIComponent(id)}`);
      if (r.ok) applyJob(card, await r.json());
    } catch { /* the next event or refresh will catch up */ }
  }
}

// ---------- nodes ----------

function setReady(ready, text) {
  const pill = $("ready");
  if (ready === null) { pill.textContent = text || "reconnecting…"; pill.className = "pill pill-wait"; return; }
  pill.textContent = ready ? "ready" : "no node ready";
  pill.className = ready ? "pill pill-ok" : "pill pill-bad";
}

// What everyone may see: ready or not, the limits, and whether answers are real.
function renderStatus(st) {
  setReady(st.ready);
  const lim = st.limits;
  if (lim) {
    maxFileBytes = Number(lim.max_file_bytes) || 0;
    $("limits").textContent = `JPEG, PNG, GIF, WebP or BMP — up to ${fmtBytes(lim.max_file_bytes)} each`;
  }
  statusWarnings.clear();
  if (st.synthetic) statusWarnings.add("synthetic");
  if (st.untrained) statusWarnings.add("untrained");
  renderWarning();
  if (!session || !session.nodes) {
    const list = $("nodes");
    list.replaceChildren(el("p", "muted", `${st.nodes_ready} of ${st.nodes} node${st.nodes === 1 ? "" : "s"} ready`));
  }
}

// The one banner for answers that are not real predictions: what the nodes run now, and what
// answered the cards on this page.
function renderWarning() {
  const kinds = new Set([...statusWarnings, ...seenWarnings]);
  const text = [];
  if (kinds.has("synthetic")) text.push("A node runs a synthetic model: labels are made up (for load tests only).");
  if (kinds.has("untrained")) text.push("A node runs untrained (random) weights: labels are meaningless.");
  const w = $("warning");
  if (text.length) {
    w.replaceChildren(el("strong", null, "⚠ These are not real predictions. "), el("span", null, text.join(" ")));
    w.hidden = false;
  } else {
    w.hidden = true;
  }
}

// The full node list, for operators (and for everyone on a server without keys).
function renderNodes(data) {
  const list = $("nodes");
  list.replaceChildren();
  if (!data.nodes.length) list.append(el("p", "muted", "No nodes configured."));
  for (const n of data.nodes) {
    const box = el("div", `node node-${n.state}`);
    const head = el("div", "node-head");
    head.append(el("span", `dot dot-${n.state}`), el("span", "node-name", n.name), el("span", "node-state", n.state));
    const stats = el("dl", "node-stats");
    const share = n.placement_share == null ? "–" : `${(n.placement_share * 100).toFixed(1)}%`;
    // Short labels (a quarter of the panel each), spelled out in their tooltips.
    for (const [k, v, title] of [["in flight", n.in_flight], ["served", n.served], ["failed", n.failed], ["p50", fmtMs(n.p50_ms)],
                                 ["per image", fmtMs(n.service_ms), "measured service time per image"],
                                 ["next in", fmtMs(n.expected_ms), "when an image sent there now would be done"],
                                 ["share", share, "share of the placements"]]) {
      const d = el("div");
      const dt = el("dt", null, k);
      if (title) dt.title = title;
      d.append(dt, el("dd", null, String(v)));
      stats.append(d);
    }
    box.append(head, stats);
    if (n.model) {
      const model = el("p", "node-model");
      model.append(el("b", null, "model "), `${n.model} · ${n.backend || "?"}`);
      const weights = el("p", "node-model");
      weights.append(el("b", null, "weights "), n.weights || "?");
      box.append(model, weights);
    } else {
      box.append(el("p", "node-model", "model not reported yet"));
    }
    // A short tag; the banner above the page says what it means.
    if (n.synthetic) {
      box.append(el("p", "node-tag", "synthetic model"));
    } else if (n.trained === false) {
      box.append(el("p", "node-tag", "untrained weights"));
    }
    list.append(box);
  }
}

// start() has just polled once; from then on every 2 s.
async function pollStatus() {
  if (polling) return;
  polling = true;
  while (session) {
    await sleep(2000);
    if (session) await pollOnce();
  }
  polling = false;
}

async function pollOnce() {
  try {
    const r = await api("/api/v1/status");
    if (r.ok) renderStatus(await r.json());
    if (session && session.nodes) {
      const n = await api("/api/v1/nodes");
      if (n.ok) renderNodes(await n.json());
    }
  } catch { setReady(null); }
}

// ---------- wiring ----------

window.addEventListener("DOMContentLoaded", () => {
  const input = $("files");
  input.addEventListener("change", () => { addFiles(Array.from(input.files)); input.value = ""; });
  const drop = $("drop");
  for (const t of ["dragenter", "dragover"]) {
    drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const t of ["dragleave", "drop"]) {
    drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (e) => addFiles(Array.from(e.dataTransfer.files)));
  $("clear").addEventListener("click", () => {
    for (const c of document.querySelectorAll(".card")) {
      const img = c.querySelector("img");
      if (img && img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
      c.remove();
    }
    cardsByJob.clear();
    total = 0;
    updateSummary();
  });
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const key = $("key").value.trim();
    if (!key) return;
    try { localStorage.setItem(KEY_STORAGE, key); } catch { /* private mode: asked again next time */ }
    $("key").value = "";
    $("key-error").textContent = "";
    start();
  });
  $("forget-key").addEventListener("click", () => askForKey(""));
  start();
});
