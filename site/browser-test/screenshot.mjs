// The README's screenshot (docs/screenshot.png), from a real run: `glimpse` with two local
// workers on untrained random weights (nothing to download, and the page's banner says the
// labels are meaningless), the repository's four sample images dropped on the page, the
// picture taken once every card has its answer. Run through scripts/screenshot.
//
//   GLIMPSE_BIN   path to the binary (default: ../../target/debug/glimpse)
//   CHROMIUM      browser executable (default: /usr/bin/chromium)
//   SCREENSHOT    where to write it (default: ../../docs/screenshot.png)

import { spawn } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { freePort, get, launchChromium, waitFor as waitForWithin } from "./server.mjs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..", "..");
const bin = process.env.GLIMPSE_BIN || path.join(root, "target", "debug", "glimpse");
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const target = process.env.SCREENSHOT || path.join(root, "docs", "screenshot.png");
const images = path.join(root, "model", "tests", "fixtures", "images");
const TIMEOUT = 120_000;

function log(...a) { console.log("[screenshot]", ...a); }

// Waits up to TIMEOUT unless told otherwise.
const waitFor = (what, fn, ms = TIMEOUT) => waitForWithin(what, fn, ms);

async function main() {
  if (!existsSync(bin)) throw new Error(`glimpse binary not found at ${bin}`);
  const files = readdirSync(images).sort().map((f) => path.join(images, f));
  const port = await freePort();
  const url = `https://127.0.0.1:${port}/`;
  const args = ["--local-workers", "2", "--weights", "random", "--listen", `127.0.0.1:${port}`, "--grpc-listen", "off"];
  log("starting", bin, ...args);
  const proc = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, GLIMPSE_LOG: "warn" } });
  let output = "";
  proc.stdout.on("data", (d) => { output += d; });
  proc.stderr.on("data", (d) => { output += d; });
  const exited = new Promise((r) => proc.on("exit", r));
  let browser;
  try {
    await waitFor("/readyz to be 200", async () => proc.exitCode === null && (await get(`${url}readyz`)) === 200);
    browser = await launchChromium(executablePath);
    const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    page.setDefaultTimeout(TIMEOUT);
    await page.goto(url);
    await page.waitForFunction(() => document.getElementById("ready").textContent === "ready");
    await page.setInputFiles("#files", files);
    await page.waitForFunction((n) => {
      const cards = [...document.querySelectorAll(".card")];
      return cards.length === n && cards.every((c) => c.dataset.status === "ok");
    }, files.length);
    // The banner must be there: these labels come from untrained weights.
    const banner = await page.textContent("#warning");
    if (!(await page.isVisible("#warning")) || !banner.includes("untrained")) {
      throw new Error(`no untrained-weights banner: ${banner}`);
    }
    // Let the nodes panel (polled every 2 s) count what was served.
    await page.waitForFunction((n) => {
      let served = 0;
      for (const d of document.querySelectorAll(".node .node-stats div")) {
        if (d.querySelector("dt").textContent === "served") served += Number(d.querySelector("dd").textContent);
      }
      return served >= n;
    }, files.length);
    await page.screenshot({ path: target, fullPage: true });
    log("wrote", target);
  } catch (e) {
    process.stderr.write(output);
    throw e;
  } finally {
    if (browser) await browser.close().catch(() => {});
    proc.kill("SIGTERM");
    await Promise.race([exited, new Promise((r) => setTimeout(r, 30_000))]);
    if (proc.exitCode === null) proc.kill("SIGKILL");
  }
}

main().catch((e) => {
  console.error("[screenshot] FAIL:", e.message || e);
  process.exitCode = 1;
});
