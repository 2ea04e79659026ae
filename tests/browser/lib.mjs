// Shared helpers of the browser tests: a headless Debian Chromium driven by playwright-core,
// a fresh profile, every request to another host blocked, and a record of console errors,
// failed requests and websocket messages.
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];

/** Fails the test with a message (exit code 1). */
export function fail(msg) {
  console.error(`FAIL: ${msg}`);
  process.exit(1);
}

export function check(cond, msg) {
  if (!cond) throw new Error(msg);
}

/** Parses `node <script> <url> <artifact dir> [extra...]`. */
export function cliArgs() {
  const [url, artifacts, ...rest] = process.argv.slice(2);
  if (!url || !artifacts) fail(`usage: node ${process.argv[1]} <server url> <artifact dir> [...]`);
  mkdirSync(artifacts, { recursive: true });
  return { url: url.replace(/\/?$/, "/"), artifacts, rest };
}

/**
 * Opens the browser on a fresh profile. Returns `{context, page, record, close}`; `record`
 * collects console errors, failed requests to the server, blocked foreign requests and the
 * websocket frames the page received.
 */
export async function openBrowser(serverUrl) {
  let chromium;
  try {
    ({ chromium } = await import("playwright-core"));
  } catch (e) {
    fail(`playwright-core is not installed (npm install --prefix tests/browser): ${e.message}`);
  }
  const server = new URL(serverUrl);
  const profile = mkdtempSync(join(tmpdir(), "comfy-rs-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1400, height: 900 },
    acceptDownloads: false,
  });
  const record = { consoleErrors: [], failed: [], aborted: [], blocked: [], badStatus: [], frames: [], requests: [] };
  // Requests the server answered. Chromium reports a request whose response the page never
  // reads as failed (net::ERR_ABORTED) when the body is empty (e.g. `POST /api/settings/{id}`,
  // which answers 200 with no body, as ComfyUI does); those are kept apart in `aborted`.
  const answered = new WeakSet();
  await context.route("**/*", (route) => {
    const u = new URL(route.request().url());
    if (u.protocol === "data:" || u.protocol === "blob:" || u.host === server.host) return route.continue();
    record.blocked.push(route.request().url());
    return route.abort("blockedbyclient");
  });
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(60000);
  page.on("console", (m) => {
    if (m.type() === "error") record.consoleErrors.push(`${m.text()} @ ${JSON.stringify(m.location())}`);
  });
  page.on("pageerror", (e) => record.consoleErrors.push(`pageerror: ${e.message}`));
  page.on("requestfailed", (r) => {
    const u = new URL(r.url());
    if (u.host !== server.host) return;
    const line = `${r.method()} ${r.url()}: ${r.failure()?.errorText}`;
    if (answered.has(r) && r.failure()?.errorText === "net::ERR_ABORTED") record.aborted.push(line);
    else record.failed.push(line);
  });
  page.on("response", (r) => {
    const u = new URL(r.url());
    if (u.host !== server.host) return;
    answered.add(r.request());
    record.requests.push(`${r.status()} ${r.request().method()} ${u.pathname}${u.search}`);
    if (r.status() >= 400) record.badStatus.push({ status: r.status(), method: r.request().method(), path: u.pathname, search: u.search });
  });
  page.on("websocket", (ws) => {
    ws.on("framereceived", (f) => {
      if (typeof f.payload !== "string") return;
      try {
        record.frames.push(JSON.parse(f.payload));
      } catch {
        /* not JSON */
      }
    });
  });
  const close = async () => {
    await context.close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
  };
  return { context, page, record, close };
}

/** Waits until `pred(frames)` holds for the websocket frames seen so far. */
export async function waitFrames(record, pred, what, timeoutMs = 120000) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (pred(record.frames)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  const types = record.frames.map((f) => f.type).join(",");
  throw new Error(`timed out waiting for ${what}; websocket messages seen: ${types}`);
}

/** Runs `body`, saving a screenshot (also on failure) and reporting the record. */
export async function runTest(name, serverUrl, artifacts, body) {
  const b = await openBrowser(serverUrl);
  let error = null;
  try {
    await body(b);
  } catch (e) {
    error = e;
  }
  const shot = join(artifacts, `${name}${error ? "-failed" : ""}.png`);
  await b.page.screenshot({ path: shot, fullPage: false }).catch((e) => console.error(`screenshot failed: ${e.message}`));
  console.log(`screenshot: ${shot}`);
  console.log(`requests to the server: ${b.record.requests.length}`);
  if (b.record.blocked.length) console.log(`blocked foreign requests: ${b.record.blocked.join(" ")}`);
  if (b.record.aborted.length) console.log(`answered, body left unread by the page: ${b.record.aborted.join(" ")}`);
  await b.close();
  if (error) {
    console.error(`console errors: ${JSON.stringify(b.record.consoleErrors, null, 1)}`);
    console.error(`bad responses: ${JSON.stringify(b.record.badStatus)}`);
    console.error(`failed requests: ${JSON.stringify(b.record.failed)}`);
    fail(`${name}: ${error.stack || error.message}`);
  }
  console.log(`PASS ${name}`);
}
