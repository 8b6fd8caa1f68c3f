// What the browser test and the screenshot script both need to start and wait for a
// front-end: a free port, an HTTPS GET that never throws, and a deadline-bounded wait.
import https from "node:https";
import net from "node:net";
import { chromium } from "playwright-core";

/** A TCP port free on 127.0.0.1 right now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

/** The status of a GET of `url` (self-signed certificates accepted), 0 when it failed. */
export function get(url) {
  return new Promise((resolve) => {
    const req = https.get(url, { rejectUnauthorized: false, timeout: 5000 }, (res) => { res.resume(); resolve(res.statusCode); });
    req.on("error", () => resolve(0));
    req.on("timeout", () => { req.destroy(); resolve(0); });
  });
}

/** Polls `fn` every 200 ms until it is true, or throws after `ms`. */
export async function waitFor(what, fn, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await fn()) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/**
 * Debian's headless chromium at `executablePath`, quiet (no background traffic, no updates).
 * `protocol` "h2" keeps it on HTTPS over TCP (QUIC off, so Alt-Svc cannot move it);
 * "h3" forces QUIC to `origin` and trusts the certificate whose SPKI hash is `spki`.
 */
export function launchChromium(executablePath, { protocol = "h2", origin, spki } = {}) {
  const transport = protocol === "h3"
    ? ["--enable-quic", `--origin-to-force-quic-on=${origin}`, `--ignore-certificate-errors-spki-list=${spki}`]
    : ["--disable-quic"];
  return chromium.launch({
    executablePath,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", ...transport,
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}
