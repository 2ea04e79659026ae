// Browser test of the official ComfyUI editor (comfyui-frontend-package) served by comfy-rs:
// it must load without console errors or failed requests, show the graph canvas, load a
// workflow through its "Open" file input, queue it with its Run button and show the image.
//
//   node tests/browser/editor.mjs <server url> <artifact dir> <workflow.json> <output prefix>
//
// The workflow file is opened as a user would; the test then waits for the websocket
// messages of the run and for the editor to fetch the saved image from /api/view.
import { check, cliArgs, fail, runTest, waitFrames } from "./lib.mjs";

const { url, artifacts, rest } = cliArgs();
const [workflowFile, prefix] = rest;
if (!workflowFile || !prefix) fail("usage: editor.mjs <url> <artifacts> <workflow.json> <output prefix>");

await runTest("official-editor", url, artifacts, async ({ page, record }) => {
  await page.goto(url, { waitUntil: "load" });
  // The canvas, then the app object with a graph (set once the editor finished start-up).
  await page.waitForSelector("#graph-canvas", { state: "visible", timeout: 120000 });
  await page.waitForFunction(() => window.app && window.app.graph && window.app.canvas, null, { timeout: 120000 });
  // The start-up sequence must have reached the server's node definitions.
  await page.waitForFunction(() => window.app.graph && Object.keys(window.LiteGraph?.registered_node_types || {}).length > 0, null, { timeout: 120000 }).catch(() => {});
  check(record.requests.some((r) => r.startsWith("200 GET /api/object_info")), "the editor never loaded /api/object_info");
  await page.screenshot({ path: `${artifacts}/official-editor-start.png` });

  // A new user (no "Comfy.TutorialCompleted" yet) gets the template browser over the canvas,
  // filled from /templates/index.json (comfy-rs ships no core templates: an empty index).
  // Close it as a user would, with the "x" in its corner: from 1.28 the dialog is a
  // BaseModalLayout whose close control is an icon button holding `<i class="pi pi-times">`
  // (no aria-label); older frontends (PrimeVue's own dialog header) label it "Close".
  const dialog = page.locator(".p-dialog-mask .p-dialog").first();
  await dialog.waitFor({ state: "visible", timeout: 60000 });
  const end0 = Date.now() + 30000;
  while (!record.requests.some((r) => r.startsWith("200 GET /templates/index.json"))) {
    check(Date.now() < end0, "the template browser never loaded /templates/index.json");
    await page.waitForTimeout(200);
  }
  const close = dialog.locator('button:has(> i.pi-times), button[aria-label="Close"]').first();
  await close.waitFor({ state: "visible", timeout: 30000 });
  await close.click();
  await page.waitForSelector(".p-dialog-mask", { state: "detached", timeout: 30000 });

  // Open the workflow through the editor's own file input.
  await page.setInputFiles("#comfy-file-input", workflowFile);
  await page.waitForFunction((p) => {
    const nodes = window.app.graph._nodes || window.app.graph.nodes || [];
    return nodes.some((n) => n.type === "SaveImage" && (n.widgets || []).some((w) => w.name === "filename_prefix" && w.value === p));
  }, prefix, { timeout: 60000 });

  // Show the whole graph, as a user presses "." (fit view): the editor fetches a node's images
  // only when it draws the node, and SaveImage starts outside the 1400x900 window.
  await page.locator("#graph-canvas").focus();
  await page.keyboard.press(".");
  await page.waitForTimeout(500);

  // Run it from the UI.
  const queued = page.waitForResponse((r) => r.url().endsWith("/api/prompt") && r.request().method() === "POST", { timeout: 60000 });
  queued.catch(() => {});
  await page.click('[data-testid="queue-button"] button[aria-label="Run"]');
  const resp = await queued;
  check(resp.status() === 200, `POST /api/prompt answered ${resp.status()}: ${await resp.text()}`);
  const promptId = (await resp.json()).prompt_id;
  await waitFrames(record, (fs) => fs.some((f) => f.type === "execution_success" && f.data.prompt_id === promptId), "execution_success", 300000);
  for (const t of ["execution_start", "executing", "executed"]) {
    check(record.frames.some((f) => f.type === t && f.data.prompt_id === promptId), `no ${t} message for the prompt`);
  }
  const executed = record.frames.find((f) => f.type === "executed" && f.data.prompt_id === promptId);
  const image = executed.data.output.images[0];
  check(image.filename.startsWith(prefix.split("/").pop()), `unexpected output ${JSON.stringify(image)}`);

  // The editor shows it: it fetches the file from /api/view and the SaveImage node holds it.
  const end = Date.now() + 60000;
  while (!record.requests.some((r) => r.startsWith("200 GET /api/view") && r.includes(encodeURIComponent(image.filename)))) {
    check(Date.now() < end, `the editor never fetched ${image.filename} from /api/view`);
    await page.waitForTimeout(200);
  }
  await page.waitForFunction(() => {
    const nodes = window.app.graph._nodes || window.app.graph.nodes || [];
    const save = nodes.find((n) => n.type === "SaveImage");
    return save && save.imgs && save.imgs.length > 0 && save.imgs[0].complete && save.imgs[0].naturalWidth > 0;
  }, null, { timeout: 60000 });
  if (record.frames.some((f) => f.type === "progress" && f.data.prompt_id === promptId)) console.log("progress messages received");
  await page.waitForTimeout(500);

  // A fresh user has no user.css, workflows/subgraphs folders or template settings yet: the
  // real ComfyUI answers these 404 too and the editor treats them as empty (api.md §8.1).
  const expected404 = (path, search) =>
    ["/user.css", "/api/userdata/user.css", "/api/userdata/comfy.templates.json"].includes(path) ||
    (path === "/api/userdata" && /^\?dir=(workflows|subgraphs)(%2F)?&/.test(search));
  const bad = record.badStatus.filter((b) => !(b.status === 404 && expected404(b.path, b.search)));
  const badUrls = record.badStatus.filter((b) => !bad.includes(b)).map((b) => b.path + b.search);
  const errors = record.consoleErrors.filter((e) => {
    if (!e.startsWith("Failed to load resource")) return true;
    if (e.includes("ERR_BLOCKED_BY_CLIENT") && !e.includes(new URL(url).host)) return false; // foreign host, blocked by this test
    return !badUrls.some((u) => e.includes(u));
  });
  const failed = record.failed.filter((f) => !badUrls.some((u) => f.includes(u)));
  check(errors.length === 0, `console errors: ${errors.join("\n")}`);
  check(failed.length === 0, `failed requests: ${failed.join("\n")}`);
  check(bad.length === 0, `error responses: ${JSON.stringify(bad)}`);
});
