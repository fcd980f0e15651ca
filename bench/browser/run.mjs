// Browser benchmark driver: Kuma's emitted modules vs ONNX Runtime Web (WebGPU EP)
// in one headless Chromium (WebGPU on SwiftShader without a GPU).
//
//   node run.mjs <job.json>
//
// job: {timing: {warmup, minRuns, maxRuns, budgetMs}, timeoutMs,
//       cases: [{model, engines: {kuma?: {path, inputs}, ort?: {path, inputs}}}]}
//   kuma: path is the emitted model folder; ort: path is the .onnx file;
//   inputs: {name: {dtype: "float32"|"int32"|"int64", shape, data: base64}}.
// stdout: one JSON line {ready, chromium, ort}, then one line per case, in order:
//   {model, ok, error?, adapter, console, engines: {name: {ok, error?, loadMs, medianMs, minMs, maxMs, runs, shipped, outputs}}}.
//
// A static server on 127.0.0.1 (a secure context) serves every file and logs the
// requests, so "shipped" is what each engine really fetched (weights excluded).
// Each model gets a fresh browser context (empty HTTP cache) and fresh URL prefixes;
// page.mjs loads both engines there and times them turn by turn.
// Every wait has a deadline; a case that fails or hangs is reported and the
// benchmark goes on (a hung case restarts the browser).

import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import zlib from "node:zlib";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ORT_DIST = path.join(HERE, "node_modules", "onnxruntime-web", "dist");
const ORT_ENTRY = "ort.webgpu.min.mjs"; // the WebGPU build that fetches its .mjs + .wasm separately
const CHROMIUM = process.env.KUMA_CHROMIUM ?? "/usr/bin/chromium";
// the flags of tests/browser/run_model.mjs
const FLAGS = ["--no-sandbox", "--enable-unsafe-webgpu", "--disable-background-networking", "--disable-component-update",
  "--disable-sync", "--no-first-run", "--disable-quic"];
const CONTENT_TYPES = { ".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm",
  ".json": "application/json", ".html": "text/html; charset=utf-8" };
const PAGE = '<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><title>kuma browser bench</title>';

function startServer() {
  const mounts = new Map(); // prefix -> folder
  const requests = []; // [prefix, relative path]
  const server = http.createServer((request, response) => {
    const url = new URL(request.url, "http://127.0.0.1");
    if (url.pathname === "/") return send(response, 200, ".html", PAGE);
    if (url.pathname === "/page.mjs") return send(response, 200, ".mjs", fs.readFileSync(path.join(HERE, "page.mjs")));
    const [, prefix, ...rest] = url.pathname.split("/");
    const root = mounts.get(prefix);
    const relative = decodeURIComponent(rest.join("/"));
    const file = root && path.resolve(root, relative);
    if (!file || !file.startsWith(root + path.sep) || !fs.statSync(file, { throwIfNoEntry: false })?.isFile()) {
      return send(response, 404, ".txt", "not found");
    }
    requests.push([prefix, relative]);
    response.writeHead(200, { "Content-Type": CONTENT_TYPES[path.extname(file)] ?? "application/octet-stream",
      "Content-Length": fs.statSync(file).size, "Cache-Control": "no-store" });
    fs.createReadStream(file).pipe(response);
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve({
    server, requests, origin: `http://127.0.0.1:${server.address().port}`,
    mount(folder) {
      const prefix = `m${mounts.size}`;
      mounts.set(prefix, path.resolve(folder));
      return prefix;
    },
    mountRoot: (prefix) => mounts.get(prefix),
  })));
}

function send(response, status, ext, body) {
  response.writeHead(status, { "Content-Type": CONTENT_TYPES[ext] ?? "text/plain" });
  response.end(body);
}

async function withTimeout(promise, ms, what) {
  let timer;
  const deadline = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out after ${ms / 1000} s ${what}`)), ms); });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

// the code files a case fetched under `prefix` (once each), raw and gzip -9 sizes; weights excluded
function shipped(server, prefix, isWeights) {
  const root = server.mountRoot(prefix);
  const names = [...new Set(server.requests.filter(([p, rel]) => p === prefix && !isWeights(rel)).map(([, rel]) => rel))].sort();
  const files = names.map((name) => {
    const data = fs.readFileSync(path.join(root, name));
    return { name, bytes: data.length, gzip: zlib.gzipSync(data, { level: 9 }).length };
  });
  return { files, bytes: files.reduce((s, f) => s + f.bytes, 0), gzip: files.reduce((s, f) => s + f.gzip, 0) };
}

// one model: both engines in one fresh page, with their code and model files under fresh prefixes
async function runCase(browser, server, job, { model, engines }) {
  const context = await browser.newContext();
  const messages = [];
  try {
    const page = await context.newPage();
    page.on("pageerror", (error) => messages.push(`page error: ${error.message}`));
    page.on("console", (m) => { if (["error", "warning"].includes(m.type())) messages.push(`console ${m.type()}: ${m.text()}`); });
    await page.goto(`${server.origin}/`);
    const args = {};
    const code = {}; // engine -> [prefix of its code files, which of them are weights]
    if (engines.kuma) {
      const prefix = server.mount(path.dirname(engines.kuma.path));
      args.kuma = { moduleUrl: `/${prefix}/${encodeURIComponent(path.basename(engines.kuma.path))}/index.js`, inputs: engines.kuma.inputs };
      code.kuma = [prefix, (rel) => rel.split("/").at(-2) === "weights" && rel.endsWith(".bin")];
    }
    if (engines.ort) {
      const prefix = server.mount(ORT_DIST);
      const modelUrl = `/${server.mount(path.dirname(engines.ort.path))}/${encodeURIComponent(path.basename(engines.ort.path))}`;
      args.ort = { ortUrl: `/${prefix}/${ORT_ENTRY}`, modelUrl, inputs: engines.ort.inputs };
      code.ort = [prefix, () => false]; // the weights are in the .onnx file, served from the model's own prefix
    }
    const result = await page.evaluate(async (request) => (await import("/page.mjs")).benchModel(request),
      { engines: args, timing: job.timing });
    for (const [name, outcome] of Object.entries(result.engines)) {
      if (outcome.ok) outcome.shipped = shipped(server, ...code[name]);
      else outcome.error = [outcome.error, ...messages.slice(0, 5)].join("\n");
    }
    return { model, ok: true, ...result, console: messages.slice(0, 20) };
  } catch (error) {
    const detail = messages.filter((m) => !error.message.includes(m)).slice(0, 10);
    throw new Error([error.message.split("\n")[0], ...detail].join("\n"));
  } finally {
    await withTimeout(context.close(), 15_000, "closing the page").catch(() => {});
  }
}

const launch = () => withTimeout(chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS }), 60_000, "starting Chromium");

async function main([jobFile]) {
  if (!jobFile) throw new Error("usage: node run.mjs <job.json>");
  const job = JSON.parse(fs.readFileSync(jobFile, "utf8"));
  const server = await startServer();
  let browser = await launch();
  try {
    const ortVersion = JSON.parse(fs.readFileSync(path.join(ORT_DIST, "..", "package.json"), "utf8")).version;
    write({ ready: true, chromium: browser.version(), ort: ortVersion });
    for (const benchCase of job.cases) {
      process.stderr.write(`bench: ${benchCase.model} on ${Object.keys(benchCase.engines).join(" and ")}\n`);
      try {
        write(await withTimeout(runCase(browser, server, job, benchCase), job.timeoutMs, `running ${benchCase.model}`));
      } catch (error) {
        write({ model: benchCase.model, ok: false, error: error.message });
        if (error.message.startsWith("timed out")) { // the page may still be busy: start over with a fresh browser
          await withTimeout(browser.close(), 20_000, "closing Chromium").catch(() => {});
          browser = await launch();
        }
      }
    }
  } finally {
    await withTimeout(browser.close(), 20_000, "closing Chromium").catch(() => {});
    server.server.closeAllConnections?.();
    server.server.close();
  }
}

function write(object) {
  process.stdout.write(JSON.stringify(object) + "\n");
}

main(process.argv.slice(2)).then(() => process.exit(0), (error) => {
  process.stderr.write(`bench: ${error.message}\n`);
  process.exit(1); // playwright kills the browser on exit
});
