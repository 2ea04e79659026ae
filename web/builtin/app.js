// comfy-rs built-in page: queue an API-format workflow, follow it live, browse the outputs.
// Plain script, no build step. Talks to the same ComfyUI API as any client: /api/prompt,
// /api/queue, /api/interrupt, /api/history, /api/view and the /ws websocket.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const base = location.pathname.replace(/[^/]*$/, ""); // directory of this page
  const api = (route) => base + "api" + route;
  const clientId = sessionStorage.getItem("comfy-rs-client-id") || randomId();
  sessionStorage.setItem("comfy-rs-client-id", clientId);

  const EXAMPLE = {
    "1": { class_type: "EmptyImage", inputs: { width: 256, height: 256, batch_size: 1, color: 16744192 } },
    "2": { class_type: "ImageBlur", inputs: { image: ["1", 0], blur_radius: 8, sigma: 3.0 } },
    "3": { class_type: "SaveImage", inputs: { images: ["2", 0], filename_prefix: "builtin_blur" } },
  };

  const state = { prompts: new Map(), nodeTitles: new Map(), running: null, socket: null, retry: 0 };

  function randomId() {
    const a = new Uint8Array(16);
    crypto.getRandomValues(a);
    return Array.from(a, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function el(tag, props = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
      if (k === "class") e.className = v;
      else if (k === "dataset") Object.assign(e.dataset, v);
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return e;
  }

  function message(text, kind = "") {
    const m = $("message");
    m.textContent = text;
    m.className = kind;
  }

  function log(text) {
    const li = el("li", {}, `${new Date().toLocaleTimeString()}  ${text}`);
    $("log").prepend(li);
    while ($("log").children.length > 200) $("log").lastChild.remove();
  }

  async function call(method, route, body) {
    const opts = { method, headers: {} };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    const r = await fetch(api(route), opts);
    const text = await r.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { data = text; }
    if (!r.ok) {
      const err = new Error(`${method} ${route}: HTTP ${r.status}`);
      err.data = data;
      throw err;
    }
    return data;
  }

  // ------------------------------------------------------------------ workflow input
  function parseWorkflow() {
    const text = $("workflow").value.trim();
    if (!text) throw new Error("Paste or open a workflow first.");
    let wf;
    try { wf = JSON.parse(text); } catch (e) { throw new Error("Not valid JSON: " + e.message); }
    if (wf && typeof wf === "object" && wf.prompt && typeof wf.prompt === "object" && !Array.isArray(wf.prompt)) wf = wf.prompt;
    if (!wf || typeof wf !== "object" || Array.isArray(wf)) throw new Error("A workflow is a JSON object of nodes.");
    if (Array.isArray(wf.nodes)) {
      throw new Error("This is an editor-format workflow (it has \"nodes\"). Export it with \"Export (API)\" in the ComfyUI editor, or import it with ./manage.sh --action import-workflow.");
    }
    for (const [id, node] of Object.entries(wf)) {
      if (!node || typeof node.class_type !== "string") throw new Error(`Node ${id} has no class_type.`);
    }
    return wf;
  }

  function describeError(err) {
    const d = err.data;
    if (!d || typeof d !== "object") return err.message;
    const lines = [];
    if (d.error) lines.push(d.error.message + (d.error.details ? `: ${d.error.details}` : ""));
    for (const [id, ne] of Object.entries(d.node_errors || {})) {
      for (const e of ne.errors || []) lines.push(`node ${id} (${ne.class_type}): ${e.message}${e.details ? " - " + e.details : ""}`);
    }
    return lines.join("\n") || err.message;
  }

  async function queuePrompt() {
    let wf;
    try { wf = parseWorkflow(); } catch (e) { message(e.message, "error"); return; }
    const times = Math.max(1, Math.min(64, parseInt($("batch").value, 10) || 1));
    $("queue-btn").disabled = true;
    try {
      for (let i = 0; i < times; i++) {
        const reply = await call("POST", "/prompt", { prompt: wf, client_id: clientId });
        state.prompts.set(reply.prompt_id, { number: reply.number, titles: titlesOf(wf) });
        message(`Queued ${reply.prompt_id} (#${reply.number})`, "ok");
        log(`queued ${reply.prompt_id}`);
      }
    } catch (e) {
      message(describeError(e), "error");
    } finally {
      $("queue-btn").disabled = false;
      refreshQueue();
    }
  }

  function titlesOf(wf) {
    const t = new Map();
    for (const [id, n] of Object.entries(wf)) t.set(id, (n._meta && n._meta.title) || n.class_type);
    return t;
  }

  function nodeName(promptId, node) {
    const p = state.prompts.get(promptId);
    const title = p && p.titles.get(String(node));
    return title ? `${title} (#${node})` : `#${node}`;
  }

  // ------------------------------------------------------------------ queue
  async function refreshQueue() {
    let q;
    try { q = await call("GET", "/queue"); } catch { return; }
    const list = $("queue-list");
    list.replaceChildren();
    const item = (entry, running) => {
      const [number, id] = entry;
      const cancel = el("button", {
        class: "small cancel", type: "button", dataset: { promptId: id },
        onclick: () => cancelPrompt(id, running),
      }, running ? "Interrupt" : "Cancel");
      return el("li", { dataset: { promptId: id } },
        el("span", { class: "state" + (running ? " running" : "") }, running ? "running" : `#${number}`),
        el("span", { class: "id", title: id }, id), cancel);
    };
    for (const e of q.queue_running || []) list.append(item(e, true));
    const pending = [...(q.queue_pending || [])].sort((a, b) => a[0] - b[0]);
    for (const e of pending) list.append(item(e, false));
    if (!list.children.length) list.append(el("li", { class: "muted" }, "empty"));
  }

  async function cancelPrompt(id, running) {
    try {
      if (running) await call("POST", "/interrupt", { prompt_id: id });
      else await call("POST", "/queue", { delete: [id] });
      log(`${running ? "interrupted" : "cancelled"} ${id}`);
    } catch (e) {
      message(describeError(e), "error");
    }
    refreshQueue();
  }

  // ------------------------------------------------------------------ gallery
  function viewUrl(img, preview) {
    const p = new URLSearchParams({ filename: img.filename, subfolder: img.subfolder || "", type: img.type || "output" });
    if (preview) p.set("preview", "jpeg;85");
    return api("/view?" + p.toString());
  }

  async function refreshGallery() {
    let h;
    try { h = await call("GET", "/history?max_items=48"); } catch { return; }
    const g = $("gallery");
    const figures = [];
    const entries = Object.entries(h || {}).reverse(); // newest first
    for (const [promptId, entry] of entries) {
      for (const [nodeId, out] of Object.entries(entry.outputs || {})) {
        for (const img of out.images || []) {
          if (img.type === "temp" && figures.length > 24) continue;
          const full = viewUrl(img, false);
          const image = el("img", { src: viewUrl(img, true), alt: img.filename, loading: "lazy", dataset: { filename: img.filename, promptId, nodeId } });
          image.addEventListener("click", () => { $("viewer-img").src = full; $("viewer").showModal(); });
          figures.push(el("figure", {}, image, el("figcaption", { title: img.filename }, img.filename)));
        }
      }
    }
    g.replaceChildren(...figures);
    if (!figures.length) g.append(el("p", { class: "muted" }, "No images yet."));
  }

  // ------------------------------------------------------------------ websocket
  function connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${proto}//${location.host}${base}ws?clientId=${encodeURIComponent(clientId)}`);
    state.socket = ws;
    ws.binaryType = "arraybuffer";
    ws.addEventListener("open", () => {
      state.retry = 0;
      $("conn").textContent = "connected";
      $("conn").className = "pill on";
      ws.send(JSON.stringify({ type: "feature_flags", data: { supports_preview_metadata: false } }));
      refreshQueue();
      refreshGallery();
    });
    ws.addEventListener("close", () => {
      $("conn").textContent = "offline";
      $("conn").className = "pill off";
      const delay = Math.min(5000, 300 * 2 ** state.retry++);
      setTimeout(connect, delay);
    });
    ws.addEventListener("message", (ev) => {
      if (typeof ev.data !== "string") return; // binary previews are not shown
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      onMessage(msg.type, msg.data || {});
    });
  }

  function setProgress(value, max) {
    $("progress").max = max || 1;
    $("progress").value = value || 0;
  }

  function onMessage(type, d) {
    switch (type) {
      case "status": {
        const n = d.status && d.status.exec_info ? d.status.exec_info.queue_remaining : 0;
        $("queue-size").textContent = `queue: ${n}`;
        refreshQueue();
        break;
      }
      case "execution_start":
        state.running = d.prompt_id;
        $("now").textContent = `running ${d.prompt_id}`;
        setProgress(0, 1);
        log(`started ${d.prompt_id}`);
        break;
      case "execution_cached":
        if ((d.nodes || []).length) log(`cached: ${d.nodes.map((n) => nodeName(d.prompt_id, n)).join(", ")}`);
        break;
      case "executing":
        if (d.node == null) {
          $("now").textContent = "idle";
          state.running = null;
        } else {
          $("now").textContent = `executing ${nodeName(d.prompt_id, d.display_node || d.node)}`;
          setProgress(0, 1);
        }
        break;
      case "progress":
        setProgress(d.value, d.max);
        $("now").textContent = `${nodeName(d.prompt_id, d.node)}: ${d.value}/${d.max}`;
        break;
      case "executed":
        log(`output from ${nodeName(d.prompt_id, d.display_node || d.node)}`);
        refreshGallery();
        break;
      case "execution_success":
        setProgress(1, 1);
        $("progress").dataset.done = d.prompt_id;
        log(`finished ${d.prompt_id}`);
        message(`Finished ${d.prompt_id}`, "ok");
        refreshGallery();
        break;
      case "execution_error":
        message(`Error in ${nodeName(d.prompt_id, d.node_id)} (${d.node_type}): ${d.exception_message}`, "error");
        log(`failed ${d.prompt_id}`);
        break;
      case "execution_interrupted":
        message(`Interrupted ${d.prompt_id}`, "");
        log(`interrupted ${d.prompt_id}`);
        break;
      default:
        break;
    }
  }

  // ------------------------------------------------------------------ wiring
  $("queue-btn").addEventListener("click", queuePrompt);
  $("interrupt-btn").addEventListener("click", () => call("POST", "/interrupt", {}).catch((e) => message(describeError(e), "error")));
  $("clear-btn").addEventListener("click", () => call("POST", "/queue", { clear: true }).then(refreshQueue).catch((e) => message(describeError(e), "error")));
  $("refresh-btn").addEventListener("click", refreshGallery);
  $("example-btn").addEventListener("click", () => {
    $("workflow").value = JSON.stringify(EXAMPLE, null, 2);
    $("file-name").textContent = "";
  });
  $("file").addEventListener("change", async (ev) => {
    const f = ev.target.files && ev.target.files[0];
    if (!f) return;
    $("workflow").value = await f.text();
    $("file-name").textContent = f.name;
    ev.target.value = "";
  });
  // Drop a workflow file anywhere on the page.
  document.addEventListener("dragover", (ev) => ev.preventDefault());
  document.addEventListener("drop", async (ev) => {
    ev.preventDefault();
    const f = ev.dataTransfer && ev.dataTransfer.files[0];
    if (f) {
      $("workflow").value = await f.text();
      $("file-name").textContent = f.name;
    }
  });
  const saved = localStorage.getItem("comfy-rs-workflow");
  if (saved) $("workflow").value = saved;
  $("workflow").addEventListener("input", () => localStorage.setItem("comfy-rs-workflow", $("workflow").value));

  connect();
})();
