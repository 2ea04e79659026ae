// Browser test of the built-in page (web/builtin/) served by comfy-rs when no editor is installed:
// paste an API workflow (EmptyImage -> ImageBlur -> SaveImage), queue it, follow it live, find
// the image in the gallery; then cancel a pending prompt and interrupt a running one.
//
//   node tests/browser/builtin.mjs <server url> <artifact dir>
import { check, cliArgs, runTest, waitFrames } from "./lib.mjs";

const { url, artifacts } = cliArgs();
const prefix = `web_builtin_${Date.now()}`;
const blurGraph = {
  "1": { class_type: "EmptyImage", inputs: { width: 96, height: 64, batch_size: 1, color: 3381759 } },
  "2": { class_type: "ImageBlur", inputs: { image: ["1", 0], blur_radius: 4, sigma: 2.0 } },
  "3": { class_type: "SaveImage", inputs: { images: ["2", 0], filename_prefix: prefix } },
};
// Many short nodes: long enough to still be running when the test interrupts it, while each
// node ends quickly (the interrupt takes effect between nodes).
function slowGraph(tag, blurs) {
  const g = { "1": { class_type: "EmptyImage", inputs: { width: 192, height: 192, batch_size: 1, color: 1193046 } } };
  let last = "1";
  for (let i = 0; i < blurs; i++) {
    const id = `b${i}`;
    g[id] = { class_type: "ImageBlur", inputs: { image: [last, 0], blur_radius: 9, sigma: 4.0 } };
    last = id;
  }
  g["save"] = { class_type: "SaveImage", inputs: { images: [last, 0], filename_prefix: tag } };
  return g;
}

/** Pastes `graph`, clicks "Queue prompt", returns the prompt id the server answered. */
async function queueFromPage(page, graph) {
  await page.fill("#workflow", JSON.stringify(graph));
  const answered = page.waitForResponse((r) => r.url().endsWith("/api/prompt") && r.request().method() === "POST", { timeout: 30000 });
  await page.click("#queue-btn");
  const r = await answered;
  check(r.status() === 200, `POST /api/prompt answered ${r.status()}`);
  const id = (await r.json()).prompt_id;
  await page.waitForFunction((id) => document.getElementById("message").textContent.includes(id), id, { timeout: 30000 });
  return id;
}

await runTest("builtin-page", url, artifacts, async ({ page, record }) => {
  await page.goto(url, { waitUntil: "load" });
  check((await page.title()) === "comfy-rs", `unexpected title ${await page.title()}`);
  await page.waitForSelector("#conn.on", { timeout: 30000 });

  // 1. Queue the blur workflow and follow it.
  const promptId = await queueFromPage(page, blurGraph);
  await waitFrames(record, (fs) => fs.some((f) => f.type === "execution_success" && f.data.prompt_id === promptId), "execution_success");
  for (const t of ["execution_start", "executing", "executed"]) {
    check(record.frames.some((f) => f.type === t && f.data.prompt_id === promptId), `no ${t} message for the prompt`);
  }
  await page.waitForFunction((id) => document.getElementById("progress").dataset.done === id, promptId, { timeout: 30000 });
  const logText = await page.textContent("#log");
  check(logText.includes(`started ${promptId}`) && logText.includes(`finished ${promptId}`), `progress log lacks start/finish: ${logText}`);

  // 2. The image is in the gallery and really loaded.
  const img = `#gallery img[data-filename^="${prefix}"]`;
  await page.waitForSelector(img, { timeout: 30000 });
  await page.waitForFunction((sel) => {
    const i = document.querySelector(sel);
    return i && i.complete && i.naturalWidth > 0;
  }, img, { timeout: 30000 });
  const size = await page.$eval(img, (i) => [i.naturalWidth, i.naturalHeight]);
  check(size[0] === 96 && size[1] === 64, `gallery image is ${size}, want 96x64`);
  await page.screenshot({ path: `${artifacts}/builtin-page-gallery.png` });

  // 3. Queue panel: a pending prompt is cancelled, the running one is interrupted.
  const slowId = await queueFromPage(page, slowGraph(`${prefix}_slow`, 400));
  const pendingId = await queueFromPage(page, slowGraph(`${prefix}_pending`, 2));
  await waitFrames(record, (fs) => fs.some((f) => f.type === "execution_start" && f.data.prompt_id === slowId), "slow prompt start");
  const pendingBtn = `#queue-list li[data-prompt-id="${pendingId}"] button.cancel`;
  await page.waitForSelector(pendingBtn, { timeout: 30000 });
  check((await page.textContent(pendingBtn)) === "Cancel", "pending item has no Cancel button");
  await page.click(pendingBtn);
  await page.waitForSelector(`#queue-list li[data-prompt-id="${pendingId}"]`, { state: "detached", timeout: 30000 });
  const runningBtn = `#queue-list li[data-prompt-id="${slowId}"] button.cancel`;
  await page.waitForSelector(runningBtn, { timeout: 30000 });
  check((await page.textContent(runningBtn)) === "Interrupt", "running item has no Interrupt button");
  await page.click(runningBtn);
  await waitFrames(record, (fs) => fs.some((f) => f.type === "execution_interrupted" && f.data.prompt_id === slowId), "execution_interrupted");
  await page.waitForSelector(`#queue-list li[data-prompt-id="${slowId}"]`, { state: "detached", timeout: 30000 });
  check(!record.frames.some((f) => f.type === "execution_start" && f.data.prompt_id === pendingId), "the cancelled prompt ran anyway");
  await page.waitForFunction(() => /Interrupted/.test(document.getElementById("message").textContent), null, { timeout: 30000 });

  check(record.consoleErrors.length === 0, `console errors: ${record.consoleErrors.join("\n")}`);
  check(record.failed.length === 0, `failed requests: ${record.failed.join("\n")}`);
  check(record.badStatus.length === 0, `error responses: ${JSON.stringify(record.badStatus)}`);
  check(record.blocked.length === 0, `the page tried to reach other hosts: ${record.blocked.join(" ")}`);
});
