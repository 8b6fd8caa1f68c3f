// Glimpse upload page. Plain JavaScript, no build step. Every string that came from a
// user or a node (file names, labels, node names, errors) is written with textContent
// and never parsed as HTML, so nothing uploaded can inject markup.
"use strict";

const UPLOAD_CONCURRENCY = 4;
const MAX_RETRIES_503 = 30;

const cardsByJob = new Map();   // job id -> card state
const early = new Map();        // job id -> latest event seen before the POST answered
let pending = [];               // cards waiting to be uploaded
let uploading = 0;
let total = 0;

const $ = (id) => document.getElementById(id);

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
  if (n >= 1024) return `${Math.round(n / 1024)} KiB`;
  return `${n} B`;
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
  $("cards").prepend(node);
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

function showError(card, message, code) {
  card.final = true;
  card.node.classList.add("error");
  setStatus(card, "error", code ? `failed · ${code}` : "failed");
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
      // Labels from random weights or the synthetic model are never shown unmarked.
      if (job.warning) meta.append(el("span", "node-warn result-warn", job.warning));
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
  for (const f of files) pending.push(newCard(f));
  pump();
}

function pump() {
  while (uploading < UPLOAD_CONCURRENCY && pending.length > 0) {
    const card = pending.shift();
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
    resp = await fetch("/api/v1/classify", { method: "POST", body: form });
    body = await resp.json().catch(() => ({}));
  } catch (e) {
    showError(card, `upload failed: ${e.message || e}`);
    return;
  }
  if (resp.status === 503 && !body.jobs && retries < MAX_RETRIES_503) {
    const after = Number(resp.headers.get("Retry-After")) || 2;
    setStatus(card, "queued", `server busy, retrying in ${after} s`);
    await new Promise((r) => setTimeout(r, after * 1000));
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

function listen() {
  const es = new EventSource("/api/v1/events");
  es.addEventListener("job", (ev) => {
    let job;
    try { job = JSON.parse(ev.data); } catch { return; }
    const card = cardsByJob.get(job.id);
    if (card) {
      applyJob(card, job);
    } else {
      early.set(job.id, job);
      if (early.size > 2000) early.delete(early.keys().next().value);
    }
  });
  es.addEventListener("lagged", () => refreshUnfinished());
  es.onerror = () => setReady(null);
  es.onopen = () => refreshUnfinished();
}

// After a reconnect or a lag, ask for the jobs whose updates may have been missed.
async function refreshUnfinished() {
  for (const [id, card] of cardsByJob) {
    if (card.final) continue;
    try {
      const r = await fetch(`/api/v1/jobs/${encodeURIComponent(id)}`);
      if (r.ok) applyJob(card, await r.json());
    } catch { /* the next event or refresh will catch up */ }
  }
}

// ---------- nodes ----------

function setReady(ready) {
  const pill = $("ready");
  if (ready === null) { pill.textContent = "reconnecting…"; pill.className = "pill pill-wait"; return; }
  pill.textContent = ready ? "ready" : "no node ready";
  pill.className = ready ? "pill pill-ok" : "pill pill-bad";
}

function renderNodes(data) {
  setReady(data.ready);
  const lim = data.limits;
  if (lim) $("limits").textContent = `JPEG, PNG, GIF, WebP or BMP — up to ${fmtBytes(lim.max_file_bytes)} each`;
  const list = $("nodes");
  list.replaceChildren();
  if (!data.nodes.length) list.append(el("p", "muted", "No nodes configured."));
  const synthetic = [], untrained = [];
  for (const n of data.nodes) {
    const box = el("div", `node node-${n.state}`);
    const head = el("div", "node-head");
    head.append(el("span", `dot dot-${n.state}`), el("span", "node-name", n.name), el("span", "node-state", n.state));
    const stats = el("dl", "node-stats");
    for (const [k, v] of [["in flight", n.in_flight], ["served", n.served], ["failed", n.failed], ["p50", fmtMs(n.p50_ms)]]) {
      const d = el("div");
      d.append(el("dt", null, k), el("dd", null, String(v)));
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
    if (n.synthetic) {
      box.append(el("p", "node-warn", "SYNTHETIC MODEL — answers are fake"));
      synthetic.push(n.name);
    } else if (n.trained === false) {
      box.append(el("p", "node-warn", "UNTRAINED WEIGHTS — labels are meaningless"));
      untrained.push(n.name);
    }
    list.append(box);
  }
  const warnings = [];
  const names = (a) => a.length === 1 ? `${a[0]} runs` : `${a.join(", ")} run`;
  if (synthetic.length) warnings.push(`${names(synthetic)} a synthetic model: labels are made up (for load tests only).`);
  if (untrained.length) warnings.push(`${names(untrained)} untrained (random) weights: labels are meaningless.`);
  const w = $("warning");
  if (warnings.length) {
    w.replaceChildren(el("strong", null, "⚠ These are not real predictions. "), el("span", null, warnings.join(" ")));
    w.hidden = false;
  } else {
    w.hidden = true;
  }
}

async function pollNodes() {
  try {
    const r = await fetch("/api/v1/nodes");
    if (r.ok) renderNodes(await r.json());
  } catch { setReady(null); }
  setTimeout(pollNodes, 2000);
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
  listen();
  pollNodes();
});
