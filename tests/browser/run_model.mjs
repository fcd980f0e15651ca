// Runs an emitted kuma model in headless Chromium with WebGPU, exactly as a
// web page would: a static server on 127.0.0.1 (a secure context) serves the
// model folder, the page imports <model>/index.js, loads it with onProgress
// and runs it once. Tensors cross as base64 of their little-endian bytes,
// which is exact for float32.
//
//   node run_model.mjs <root> <model> <inputs.json>   one run, prints one JSON object
//   node run_model.mjs --serve                        one browser for many runs: a JSON
//       request {root, model, inputs, options?} per stdin line, a JSON reply per stdout line
//       (options: extra load() options, e.g. { deviceClass: "gpu" }; the reply names the
//       device class the model runs, the model's files the page fetched and the dispatches in
//       each command buffer run() submitted)
//
// inputs: {name: {dtype: "float32"|"int32", shape, data: base64}}; outputs alike.
// Any page error, console error or uncaptured WebGPU error fails the run.

import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import readline from "node:readline";
import { pathToFileURL } from "node:url";
import { chromium } from "playwright-core";

const CHROMIUM = process.env.KUMA_CHROMIUM ?? "/usr/bin/chromium";
// headless Chromium finds the SwiftShader WebGPU adapter with only these; the
// rest keep it off the network and quick to start
const FLAGS = ["--no-sandbox", "--enable-unsafe-webgpu", "--disable-background-networking", "--disable-component-update",
  "--disable-sync", "--no-first-run", "--disable-quic"];
const TIMEOUT_MS = Number(process.env.KUMA_BROWSER_TIMEOUT_MS ?? 120_000);
const CONTENT_TYPES = { ".js": "text/javascript", ".mjs": "text/javascript", ".bin": "application/octet-stream",
  ".json": "application/json", ".html": "text/html; charset=utf-8", ".ts": "text/plain", ".css": "text/css" };
const PAGE = '<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><title>kuma browser test</title>';

// each run mounts its folder under a fresh /m<n>/ prefix, so a rebuilt model is never a cached module
export function startServer() {
  const mounts = new Map();
  const requests = []; // [path, bytes served] of each request, for tests that count downloads
  const server = http.createServer((request, response) => {
    const url = new URL(request.url, "http://127.0.0.1");
    const logged = [url.pathname, 0];
    requests.push(logged);
    if (url.pathname === "/") return send(response, 200, ".html", PAGE);
    const [, prefix, ...rest] = url.pathname.split("/");
    const root = mounts.get(prefix);
    const file = root && path.resolve(root, decodeURIComponent(rest.join("/")));
    if (!file || !file.startsWith(root + path.sep) || !fs.statSync(file, { throwIfNoEntry: false })?.isFile()) {
      return send(response, 404, ".txt", "not found");
    }
    const size = fs.statSync(file).size;
    logged[1] = size;
    response.writeHead(200, { "Content-Type": CONTENT_TYPES[path.extname(file)] ?? "application/octet-stream",
      "Content-Length": size, "Cache-Control": "no-store" });
    fs.createReadStream(file).pipe(response);
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => {
    const origin = `http://127.0.0.1:${server.address().port}`;
    resolve({ server, origin, requests, mount(root) {
      const prefix = `m${mounts.size}`;
      mounts.set(prefix, path.resolve(root));
      return `/${prefix}`;
    } });
  }));
}

function send(response, status, ext, body) {
  response.writeHead(status, { "Content-Type": CONTENT_TYPES[ext] ?? "text/plain" });
  response.end(body);
}

// runs inside the page
async function runInPage({ url, inputs, options }) {
  const { decode, encode, arrays } = window.kumaCodec;
  // the dispatches encoded before each queue.submit during run(), counted through the real calls:
  // run() submits its command buffers as it encodes them (templates/runtime.js, SUBMIT_FIRST); the
  // cache's stores after load() may submit copies meanwhile (none with load({ cache: false }))
  const submits = [];
  let dispatched = 0;
  const { submit } = GPUQueue.prototype;
  const { dispatchWorkgroups } = GPUComputePassEncoder.prototype;
  GPUComputePassEncoder.prototype.dispatchWorkgroups = function (...args) { dispatched++; return dispatchWorkgroups.apply(this, args); };
  GPUQueue.prototype.submit = function (buffers) { submits.push(dispatched); dispatched = 0; return submit.call(this, buffers); };
  const progress = [];
  const gpuErrors = [];
  const started = performance.now();
  const { load } = await import(url);
  const model = await load({ ...options, onProgress: (loaded, total) => progress.push([loaded, total]) });
  const loadMs = performance.now() - started;
  model.device.addEventListener("uncapturederror", (e) => gpuErrors.push(e.error.message));
  try {
    const feed = {};
    for (const [name, { dtype, data }] of Object.entries(inputs)) feed[name] = new arrays[dtype](decode(data).buffer);
    const runStarted = performance.now();
    submits.length = dispatched = 0; // load's submits (warm-up, state) are not the run's
    const result = await model.run(feed);
    const runMs = performance.now() - runStarted;
    const runSubmits = [...submits];
    const outputs = {};
    for (const { name, shape, dtype } of model.outputs) {
      const array = result[name];
      outputs[name] = { dtype, shape, data: encode(new Uint8Array(array.buffer, array.byteOffset, array.byteLength)) };
    }
    const info = model.device.adapterInfo ?? (await navigator.gpu.requestAdapter()).info;
    const adapter = { vendor: info.vendor, architecture: info.architecture, device: info.device, description: info.description };
    const monotonic = progress.every(([loaded, total], i) => total === progress[0][1] && (i === 0 || loaded >= progress[i - 1][0]));
    return { outputs, adapter, progress: { calls: progress.length, first: progress[0] ?? null, last: progress.at(-1) ?? null, monotonic },
      loadMs, runMs, gpuErrors, deviceClass: model.deviceClass, submits: runSubmits };
  } finally {
    model.dispose();
  }
}

// window.kumaCodec in a page: the tests' inputs and outputs travel as base64 of their bytes
export const PAGE_CODEC = `
window.kumaCodec = {
  decode: (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)),
  encode(bytes) {
    let text = "";
    for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return btoa(text);
  },
  arrays: { float32: Float32Array, int32: Int32Array },
};`;

// a fresh page on the server that records page errors and console errors in `problems`,
// and the URL of the model's index.js there; `init` scripts run before the page's own (after PAGE_CODEC)
export async function modelPage(browser, server, root, model, init = []) {
  const context = await browser.newContext();
  for (const content of [PAGE_CODEC, ...init]) await context.addInitScript({ content });
  const problems = [];
  const page = await context.newPage();
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => { if (message.type() === "error") problems.push(`console error: ${message.text()}`); });
  await page.goto(`${server.origin}/`);
  return { context, page, problems, url: `${server.mount(root)}/${encodeURIComponent(model)}/index.js` };
}

// { ok: true, ...fn({ url, ...arg }) } evaluated in a fresh model page (modelPage); the page's
// problems and the uncaptured WebGPU errors fn returns (gpuErrors) fail it; seen(result, url) may
// add to the result before the page closes
export async function inModelPage(browser, server, { root, model }, fn, arg, seen = () => {}) {
  const { context, page, problems, url } = await modelPage(browser, server, root, model);
  try {
    const result = await withTimeout(page.evaluate(fn, { url, ...arg }), `running ${model}`);
    seen(result, url);
    problems.push(...result.gpuErrors.map((m) => `uncaptured WebGPU error: ${m}`));
    if (problems.length) throw new Error(problems.join("\n"));
    delete result.gpuErrors;
    return { ok: true, ...result };
  } catch (error) {
    // an error thrown in the page arrives wrapped; the console lines explain it
    throw new Error([error.message, ...problems.filter((p) => !error.message.includes(p))].join("\n"));
  } finally {
    await context.close();
  }
}

async function runModel(browser, server, request) {
  const before = server.requests.length;
  return inModelPage(browser, server, request, runInPage, { inputs: request.inputs, options: request.options ?? {} }, (result, url) => {
    const folder = url.slice(0, url.lastIndexOf("/") + 1);
    result.fetched = server.requests.slice(before).filter(([file]) => file.startsWith(folder)).map(([file]) => file.slice(folder.length));
  });
}

let serving = false;

function fail(message) {
  if (serving) process.stdout.write(JSON.stringify({ ok: false, error: message }) + "\n");
  process.stderr.write(`run_model: ${message}\n`);
  process.exit(1); // playwright kills the browser on exit
}

// a hung browser or page must never hang the tests: past the deadline, exit
export async function withTimeout(promise, what) {
  const timer = setTimeout(() => fail(`timed out after ${TIMEOUT_MS / 1000} s ${what}`), TIMEOUT_MS);
  try {
    return await promise;
  } finally {
    clearTimeout(timer);
  }
}

export async function start() {
  const server = await startServer();
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
  return { server, browser, version: browser.version() };
}

async function oneRun([root, model, inputsFile]) {
  if (!inputsFile) throw new Error("usage: node run_model.mjs <root> <model> <inputs.json>  |  node run_model.mjs --serve");
  const inputs = JSON.parse(fs.readFileSync(inputsFile, "utf8"));
  await withTimeout((async () => {
    const { server, browser, version } = await start();
    try {
      const result = await runModel(browser, server, { root, model, inputs });
      process.stdout.write(JSON.stringify({ ...result, chromium: version }) + "\n");
    } finally {
      await browser.close();
      server.server.close();
    }
  })(), `running ${model}`);
}

// one browser for many requests: a JSON request per stdin line, handle(browser, server, request)'s
// reply (or { ok: false, error }) per stdout line
export async function serve(handle) {
  serving = true;
  const { server, browser, version } = await withTimeout(start(), "starting Chromium");
  process.stdout.write(JSON.stringify({ ready: true, chromium: version }) + "\n");
  for await (const line of readline.createInterface({ input: process.stdin })) {
    if (!line.trim()) continue;
    let reply;
    try {
      reply = await handle(browser, server, JSON.parse(line));
    } catch (error) {
      reply = { ok: false, error: error.message };
    }
    process.stdout.write(JSON.stringify(reply) + "\n");
  }
  await browser.close();
  server.server.close();
}

// a script, unless imported for its server and browser launch (run_app.mjs)
if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const args = process.argv.slice(2);
  const runOne = (browser, server, request) => withTimeout(runModel(browser, server, request), `running ${request.model}`);
  (args[0] === "--serve" ? serve(runOne) : oneRun(args)).catch((error) => fail(error.message));
}
