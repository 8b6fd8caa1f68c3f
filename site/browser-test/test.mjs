// Browser test of the Glimpse upload page: Debian's headless chromium, driven by
// playwright-core (which never downloads a browser), against the real `glimpse` binary.
//
//   GLIMPSE_BIN      path to the binary (default: ../../target/debug/glimpse)
//   GLIMPSE_ARGS     worker flags (default: "--local-workers 2 --model synthetic --service-ms 30")
//   CHROMIUM         browser executable (default: /usr/bin/chromium)
//
// The README's screenshot is made by scripts/screenshot (screenshot.mjs), not by this test.
//
// Two servers: one without keys (uploads, cards in the order chosen, one banner for
// synthetic answers, the nodes panel, a file over --max-file-bytes refused before upload, a
// non-image, phone width), then one with --api-keys (a clear "needs an API key" state, images
// chosen meanwhile wait for the key; the page asks for a key once), then one over HTTP/3
// only (chromium forced onto QUIC: the page and the uploads use h3). Exits non-zero on any
// failure. Writes out/page.png (desktop), out/phone.png (phone width), out/error.png,
// out/key-needed.png and out/keys.png; a test run leaves tracked files alone.

import { spawn, execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync, existsSync, readFileSync, rmSync } from "node:fs";
import { createHash, X509Certificate } from "node:crypto";
import { freePort, get, launchChromium, waitFor as waitForWithin } from "./server.mjs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..", "..");
const out = path.join(here, "out");
const bin = process.env.GLIMPSE_BIN || path.join(root, "target", "debug", "glimpse");
const workerArgs = (process.env.GLIMPSE_ARGS || "--local-workers 2 --model synthetic --service-ms 30").split(/\s+/).filter(Boolean);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const TIMEOUT = 60_000;
// The main server's per-file limit: small, so a file over it is quick to make.
const MAX_FILE_BYTES = 1 << 20;

function log(...a) { console.log("[browser-test]", ...a); }

// Waits up to TIMEOUT unless told otherwise.
const waitFor = (what, fn, ms = TIMEOUT) => waitForWithin(what, fn, ms);

// Small, distinct test images drawn by the browser itself (PNG and JPEG encoders included).
async function makeImages(page) {
  const images = await page.evaluate(() => {
    function draw(kind, hue, shape) {
      const c = document.createElement("canvas");
      c.width = 320; c.height = 240;
      const g = c.getContext("2d");
      const grad = g.createLinearGradient(0, 0, 320, 240);
      grad.addColorStop(0, `hsl(${hue}, 70%, 60%)`);
      grad.addColorStop(1, `hsl(${(hue + 80) % 360}, 70%, 35%)`);
      g.fillStyle = grad; g.fillRect(0, 0, 320, 240);
      g.fillStyle = "rgba(255,255,255,0.85)";
      g.beginPath();
      if (shape === "circle") g.arc(160, 120, 70, 0, Math.PI * 2);
      else if (shape === "square") g.rect(100, 60, 120, 120);
      else { g.moveTo(160, 40); g.lineTo(260, 200); g.lineTo(60, 200); g.closePath(); }
      g.fill();
      return c.toDataURL(kind).split(",")[1];
    }
    return [
      ["sunset-circle.png", draw("image/png", 20, "circle")],
      ["ocean-square.jpg", draw("image/jpeg", 200, "square")],
      ["forest-triangle.png", draw("image/png", 110, "triangle")],
    ];
  });
  const dir = path.join(out, "images");
  mkdirSync(dir, { recursive: true });
  return images.map(([name, b64]) => {
    const p = path.join(dir, name);
    writeFileSync(p, Buffer.from(b64, "base64"));
    return p;
  });
}

// Starts `glimpse ARGS` on a free port; resolves once /readyz is 200.
async function startServer(args) {
  const port = await freePort();
  const url = `https://127.0.0.1:${port}/`;
  log("starting", bin, ...args, "on", url);
  const proc = spawn(bin, [...args, "--listen", `127.0.0.1:${port}`], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || "warn" },
  });
  const server = { proc, url, log: "" };
  proc.stdout.on("data", (d) => { server.log += d; });
  proc.stderr.on("data", (d) => { server.log += d; });
  server.exited = new Promise((r) => proc.on("exit", (code) => r(code)));
  await waitFor("the server to print its URL", async () => server.log.includes("Glimpse is serving at"));
  await waitFor("/readyz to be 200", async () => (await get(`${url}readyz`)) === 200);
  log("server ready");
  return server;
}

async function stopServer(server) {
  server.proc.kill("SIGTERM");
  const code = await Promise.race([server.exited, new Promise((r) => setTimeout(() => r("timeout"), 30_000))]);
  if (code === "timeout") { server.proc.kill("SIGKILL"); throw new Error("glimpse did not stop on SIGTERM"); }
  if (process.exitCode) process.stderr.write(server.log);
}

function watchConsole(page, consoleErrors) {
  // HTTP error statuses (the expected 401 and 415, a missing favicon) are logged by chromium as
  // "Failed to load resource"; only script errors count as failures.
  page.on("console", (m) => { if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) consoleErrors.push(m.text()); });
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  page.setDefaultTimeout(TIMEOUT);
}

// HTTP/3: chromium forced onto QUIC for the front-end's origin (trusting its certificate
// by its public key, as Chromium requires for QUIC) loads the page, uploads three images and
// gets their answers; every one of those requests went over h3 (the Resource Timing API's
// nextHopProtocol). The certificate comes from glimpse-certs, beside the binary.
async function h3Scenario() {
  const dir = path.join(out, "h3-certs");
  rmSync(dir, { recursive: true, force: true });
  execFileSync(path.join(path.dirname(bin), "glimpse-certs"), ["init", "--dir", dir], { stdio: "ignore" });
  const cert = path.join(dir, "https.pem");
  const spki = createHash("sha256")
    .update(new X509Certificate(readFileSync(cert)).publicKey.export({ type: "spki", format: "der" }))
    .digest("base64");
  const server = await startServer([...workerArgs, "--tls-cert", cert, "--tls-key", path.join(dir, "https.key")]);
  const origin = new URL(server.url).host;
  let browser;
  try {
    browser = await launchChromium(executablePath, { protocol: "h3", origin, spki });
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    const consoleErrors = [];
    watchConsole(page, consoleErrors);
    await page.goto(server.url);
    await page.waitForFunction(() => document.getElementById("ready").textContent === "ready");
    const files = await makeImages(page);
    await page.setInputFiles("#files", files);
    await page.waitForFunction(() => {
      const cards = [...document.querySelectorAll(".card")];
      return cards.length === 3 && cards.every((c) => c.dataset.status === "ok");
    });
    const used = await page.evaluate(() => [
      ...performance.getEntriesByType("navigation"),
      ...performance.getEntriesByType("resource"),
    ].map((e) => ({ url: e.name, protocol: e.nextHopProtocol })));
    const uploads = used.filter((e) => e.url.includes("/api/v1/classify"));
    if (uploads.length < 1) throw new Error(`no upload in the resource timings: ${JSON.stringify(used)}`);
    const notH3 = used.filter((e) => e.url.startsWith(server.url) && e.protocol !== "h3");
    if (notH3.length) throw new Error(`requests not over HTTP/3: ${JSON.stringify(notH3)}`);
    log(`HTTP/3: the page and ${uploads.length} upload request(s) went over h3;`, used.length, "requests in all");
    if (consoleErrors.length) throw new Error(`console errors: ${consoleErrors.join(" | ")}`);
    await context.close();
  } finally {
    if (browser) await browser.close().catch(() => {});
    await stopServer(server);
  }
}

// With --api-keys the page asks for a key once: a wrong one is refused with a message, the
// right one works and is remembered, so a new page does not ask again. A user key sees no
// node details, only how many nodes are ready.
async function keysScenario(browser) {
  const dir = path.join(out, "keys");
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, "keys.txt");
  writeFileSync(file, "");
  const key = execFileSync(bin, ["keys", "new", "--file", file, "--name", "browser"], { encoding: "utf8" }).trim();
  if (!key.startsWith("glk_")) throw new Error(`glimpse keys new printed ${key}`);
  const server = await startServer([...workerArgs, "--api-keys", file]);
  try {
    const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    const consoleErrors = [];
    watchConsole(page, consoleErrors);
    await page.goto(server.url);
    await page.waitForSelector("#key-form:not([hidden])");
    // A clear state: the panel says the server needs a key, the pill and the nodes panel say
    // what they wait for (not "Waiting for the cluster…").
    const needed = await page.textContent("#key-needed");
    if (!(await page.isVisible("#key-needed")) || !needed.includes("This server needs an API key")) {
      throw new Error(`no "needs an API key" panel: ${needed}`);
    }
    const pill = await page.textContent("#ready");
    if (pill !== "API key needed") throw new Error(`the status pill says ${pill}`);
    const waiting = await page.textContent("#nodes");
    if (!/API key/.test(waiting)) throw new Error(`the nodes panel says ${waiting}`);
    // An image chosen before the key waits for it instead of failing with 401.
    const early = await makeImages(page);
    await page.setInputFiles("#files", [early[1]]);
    await page.waitForFunction(() => {
      const b = document.querySelector(".card .badge");
      return b && b.textContent === "waiting for an API key";
    });
    await page.screenshot({ path: path.join(out, "key-needed.png"), fullPage: true });
    log("keys: the page says it needs a key, the nodes panel and the chosen image wait for it");
    await page.fill("#key", "glk_not-a-key");
    await page.click("#key-form button");
    await page.waitForFunction(() => document.getElementById("key-error").textContent.includes("not accepted"));
    await page.fill("#key", key);
    await page.click("#key-form button");
    await page.waitForFunction(() => document.getElementById("ready").textContent === "ready");
    if (await page.isVisible("#key-form")) throw new Error("the key form stayed after a good key");
    if (await page.isVisible("#key-needed")) throw new Error("the key panel stayed after a good key");
    const files = await makeImages(page);
    await page.setInputFiles("#files", [files[0]]);
    // The image chosen before the key went up once the key was accepted, then this one.
    await page.waitForFunction(() => {
      const cards = [...document.querySelectorAll(".card")];
      return cards.length === 2 && cards.every((c) => c.dataset.status === "ok");
    });
    const panel = await page.textContent("#nodes");
    if (!/\d+ of \d+ nodes? ready/.test(panel)) throw new Error(`a user key should see only a summary: ${panel}`);
    log("keys: a wrong key is refused, the right one works, the panel shows a summary");

    const again = await context.newPage();
    watchConsole(again, consoleErrors);
    await again.goto(server.url);
    await again.waitForFunction(() => document.getElementById("ready").textContent === "ready");
    if (await again.isVisible("#key-form")) throw new Error("the page asked for the key a second time");
    log("keys: a new page remembers the key");
    await again.screenshot({ path: path.join(out, "keys.png"), fullPage: true });
    if (consoleErrors.length) throw new Error(`console errors: ${consoleErrors.join(" | ")}`);
    await context.close();
  } finally {
    await stopServer(server);
  }
}

async function main() {
  mkdirSync(out, { recursive: true });
  if (!existsSync(bin)) throw new Error(`glimpse binary not found at ${bin} (build it: cargo build -p glimpse-site)`);
  const server = await startServer([...workerArgs, "--max-file-bytes", String(MAX_FILE_BYTES)]);
  const url = server.url;

  let browser;
  try {
    browser = await launchChromium(executablePath);
    const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    const consoleErrors = [];
    watchConsole(page, consoleErrors);
    const uploads = [];
    page.on("request", (r) => { if (r.method() === "POST" && r.url().includes("/api/v1/classify")) uploads.push(r.url()); });

    await page.goto(url);
    await page.waitForFunction(() => document.getElementById("ready").textContent === "ready");
    await page.waitForSelector(".node .node-name");
    log("page shows a ready cluster");

    const files = await makeImages(page);
    await page.setInputFiles("#files", files);
    await page.waitForFunction(() => {
      const cards = [...document.querySelectorAll(".card")];
      return cards.length === 3 && cards.every((c) => c.dataset.status === "ok" && c.querySelectorAll(".labels .label").length === 5);
    });
    const names = await page.$$eval(".card .name", (els) => els.map((e) => e.textContent));
    // The cards read in the order the files were chosen, the first one first.
    const chosen = files.map((f) => path.basename(f));
    if (names.join("|") !== chosen.join("|")) throw new Error(`cards out of order: ${names} (chosen: ${chosen})`);
    log("cards in the order chosen:", names.join(", "));
    // Synthetic answers: ONE banner says they are not real predictions, not one per card.
    const banners = await page.evaluate(() => {
      const text = document.body.innerText;
      return {
        visible: !document.getElementById("warning").hidden,
        madeUp: text.split("labels are made up").length - 1,
        notReal: text.split("not real predictions").length - 1,
        cardWarnings: document.querySelectorAll(".card .node-warn, .card .result-warn").length,
      };
    });
    if (!banners.visible || banners.madeUp !== 1 || banners.notReal !== 1 || banners.cardWarnings !== 0) {
      throw new Error(`expected one banner for the synthetic model: ${JSON.stringify(banners)}`);
    }
    log("one banner for synthetic answers, none on the cards");
    const meta = await page.$$eval(".card .meta", (els) => els.map((e) => e.textContent));
    if (!meta.every((m) => /local-\d/.test(m) && /ms|s/.test(m))) throw new Error(`cards lack node/latency: ${meta}`);
    log("3 cards with 5 labels each:", names.join(", "));
    // The nodes panel (polled every 2 s) catches up with what was served.
    await page.waitForFunction(() => {
      let served = 0;
      for (const n of document.querySelectorAll(".node .node-stats div")) {
        if (n.querySelector("dt").textContent === "served") served += Number(n.querySelector("dd").textContent);
      }
      return served >= 3;
    });
    await page.screenshot({ path: path.join(out, "page.png"), fullPage: true });

    // A file over the server's per-file limit is refused in the browser, by name, in MiB,
    // without an upload request.
    const big = path.join(out, "images", "big photo.jpg");
    writeFileSync(big, Buffer.alloc(Math.floor(MAX_FILE_BYTES * 1.5), 0xff));
    const before = uploads.length;
    await page.setInputFiles("#files", [big]);
    await page.waitForFunction(() => [...document.querySelectorAll(".card.error .name")].some((n) => n.textContent === "big photo.jpg"));
    const refusal = await page.evaluate(() => {
      const card = [...document.querySelectorAll(".card.error")].find((c) => c.querySelector(".name").textContent === "big photo.jpg");
      return card.querySelector(".error-text").textContent;
    });
    const expected = `"big photo.jpg" is 1.5 MiB; the limit is 1.0 MiB per file`;
    if (refusal !== expected) throw new Error(`refusal text: ${refusal} (expected ${expected})`);
    await page.waitForTimeout(500);
    if (uploads.length !== before) throw new Error(`the file over the limit was uploaded: ${uploads.slice(before)}`);
    log("a file over the limit is refused before upload:", refusal);

    // A file that is not an image gets an error card, and the good cards stay.
    const bogus = path.join(out, "images", "notes<b>.txt");
    writeFileSync(bogus, "this is not an image\n");
    await page.setInputFiles("#files", [bogus]);
    await page.waitForFunction(() => document.querySelectorAll(".card.error").length === 2);
    // The newest card is the last one.
    const errorText = await page.$eval(".card.error:last-child .error-text", (e) => e.textContent);
    if (!/not a supported image/.test(errorText)) throw new Error(`unexpected error text: ${errorText}`);
    const errorName = await page.$eval(".card.error:last-child .name", (e) => e.textContent);
    if (errorName !== "notes<b>.txt") throw new Error(`file name not shown verbatim: ${errorName}`);
    if ((await page.$$(".card b")).length !== 0) throw new Error("a file name was interpreted as HTML");
    log("non-image file shows an error card:", errorText);
    await page.screenshot({ path: path.join(out, "error.png"), fullPage: true });

    await page.setViewportSize({ width: 390, height: 844 });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    if (overflow > 1) throw new Error(`page scrolls sideways at phone width by ${overflow}px`);
    await page.screenshot({ path: path.join(out, "phone.png"), fullPage: false });
    log("phone width fits");

    if (consoleErrors.length) throw new Error(`console errors: ${consoleErrors.join(" | ")}`);

    await stopServer(server);
    await keysScenario(browser);
    await h3Scenario();
    log("PASS — screenshots in", out);
  } finally {
    if (browser) await browser.close().catch(() => {});
    if (server.proc.exitCode === null) await stopServer(server);
  }
}

main().catch((e) => {
  console.error("[browser-test] FAIL:", e.message || e);
  process.exitCode = 1;
});
