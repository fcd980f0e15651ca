// Loads emitted models in headless Chromium under network faults, cache states and API misuse,
// for tests/test_browser_loading.py. Faults are injected with the DevTools protocol (Fetch domain
// interception of the weight chunk requests), JS memory is read with HeapProfiler/Runtime, and
// run_model.mjs's server logs every request it serves, so downloads are counted at the source.
//
//   node load_faults.mjs --serve     {"ready"} then one JSON reply per JSON request line:
//   {scenario, root, model, inputs, chunks: [{file, size, sha256}], ...}
//
// Each scenario (SCENARIOS below) runs in a fresh browser context (its own Cache Storage) and
// replies with what happened: outputs (base64 as in run_model.mjs), errors, request counts.
// Every step waits for an event (a paused request, a promise in the page), never for a delay.

import readline from "node:readline";
import { modelPage, start, withTimeout } from "./run_model.mjs";

// in every page: load + run with the outputs encoded, and a handle to abort a load
const HELPERS = `
window.kumaTest = {
  feed(inputs) {
    const arrays = { float32: Float32Array, int32: Int32Array };
    const out = {};
    for (const [name, { dtype, data }] of Object.entries(inputs)) {
      out[name] = new arrays[dtype](Uint8Array.from(atob(data), (c) => c.charCodeAt(0)).buffer);
    }
    return out;
  },
  encode(specs, result) {
    const out = {};
    for (const { name, shape, dtype } of specs) {
      const a = result[name];
      const bytes = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
      let text = "";
      for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
      out[name] = { dtype, shape, data: btoa(text) };
    }
    return out;
  },
  progress: [0, 0],
  abort: new AbortController(),
  async loadAndRun(url, inputs, options = {}) {
    const { load } = await import(url);
    let model;
    try {
      model = await load({ ...options, signal: this.abort.signal, onProgress: (loaded, total) => (this.progress = [loaded, total]) });
      const result = await model.run(this.feed(inputs));
      await model.cached; // the chunks are stored before the next page loads
      return { ok: true, outputs: this.encode(model.outputs, result), progress: this.progress };
    } catch (error) {
      return { ok: false, name: error.name, error: error.message, progress: this.progress };
    } finally {
      model?.dispose();
    }
  },
  async cacheKeys(model) {
    const cache = await caches.open("kuma:" + model);
    return (await cache.keys()).map((r) => r.url.split("/").at(-1));
  },
};
`;

const sessions = { browser: null, server: null };

// a fresh context and page with the helpers, a DevTools session, and the model's chunk URLs
async function open(request, init = []) {
  const { context, page, problems, url } = await modelPage(sessions.browser, sessions.server, request.root, request.model, [HELPERS, ...init]);
  const cdp = await context.newCDPSession(page);
  const index = (requestUrl) => request.chunks.findIndex((c) => requestUrl.endsWith("/" + c.file));
  return { context, page, problems, url, cdp, index };
}

// pauses every weight chunk request at `stage` and hands it to handler(event, chunk index, attempt)
async function intercept(env, stage, handler) {
  const attempts = new Map();
  env.cdp.on("Fetch.requestPaused", (event) => {
    const i = env.index(event.request.url);
    const attempt = (attempts.get(i) ?? 0) + 1;
    attempts.set(i, attempt);
    Promise.resolve(handler(event, i, attempt)).catch(() => {}); // a request the page cancelled
  });
  await env.cdp.send("Fetch.enable", { patterns: [{ urlPattern: "*/weights/*", requestStage: stage }] });
  return attempts;
}

const proceed = (env, event) => env.cdp.send("Fetch.continueRequest", { requestId: event.requestId });
const respond = (env, event, responseCode, body = "", headers = [{ name: "Content-Type", value: "application/octet-stream" }]) =>
  env.cdp.send("Fetch.fulfillRequest", { requestId: event.requestId, responseCode, responseHeaders: headers, body: Buffer.from(body).toString("base64") });

const loadAndRun = (env, request, options = {}) =>
  env.page.evaluate(([url, inputs, options]) => window.kumaTest.loadAndRun(url, inputs, options), [env.url, request.inputs, options]);

// weight chunk requests the server saw since `from`: {count, bytes}
function served(from) {
  const chunks = sessions.server.requests.slice(from).filter(([path]) => path.includes("/weights/"));
  return { count: chunks.length, bytes: chunks.reduce((sum, [, bytes]) => sum + bytes, 0), files: chunks.map(([path]) => path.split("/").at(-1)) };
}

const SCENARIOS = {
  // one load in a page, optionally with options (cache: false ...); reports what the server sent
  async plain(env, request) {
    const from = sessions.server.requests.length;
    return { ...(await loadAndRun(env, request, request.options)), served: served(from) };
  },

  // a first load fills the cache; a second page of the same origin loads again; a new build (root2)
  // of the same model then loads, reusing its unchanged chunks and evicting the rest
  async cache(env, request) {
    const loads = [];
    for (const root of [request.root, request.root, request.root2]) {
      const page = await env.context.newPage();
      await page.goto(sessions.server.origin + "/");
      const url = `${sessions.server.mount(root)}/${encodeURIComponent(request.model)}/index.js`;
      const from = sessions.server.requests.length;
      const result = await page.evaluate(([url, inputs]) => window.kumaTest.loadAndRun(url, inputs), [url, request.inputs]);
      loads.push({ ...result, served: served(from), keys: await page.evaluate((m) => window.kumaTest.cacheKeys(m), request.model) });
      await page.close();
    }
    return { loads };
  },

  // a cached chunk whose bytes were damaged is deleted and fetched again
  async damaged_cache(env, request) {
    const first = await loadAndRun(env, request);
    const { sha256 } = request.chunks[request.damage];
    const key = request.chunks[request.damage].file.split("/").at(-1).replace(".bin", ""); // the chunk's id
    await env.page.evaluate(async ([model, key]) => {
      const cache = await caches.open("kuma:" + model);
      const url = (await cache.keys()).find((r) => r.url.endsWith("/" + key)).url;
      const bytes = new Uint8Array(await (await cache.match(url)).arrayBuffer());
      bytes[0] ^= 1;
      await cache.put(url, new Response(bytes));
    }, [request.model, key]);
    const from = sessions.server.requests.length;
    const second = await loadAndRun(env, request);
    const repaired = await env.page.evaluate(async ([model, key, sha256]) => {
      const cache = await caches.open("kuma:" + model);
      const bytes = await (await cache.match("https://kuma.invalid/chunks/" + key)).arrayBuffer();
      const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
      return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("") === sha256;
    }, [request.model, key, sha256]);
    return { first, second, served: served(from), repaired };
  },

  // a first load fills the cache; then root2's build of the model, whose index.js has another
  // digest, loads in a page of the same origin
  async digest(env, request) {
    const first = await loadAndRun(env, request);
    const keys = async () => (await env.page.evaluate((m) => window.kumaTest.cacheKeys(m), request.model)).length;
    const stored = await keys();
    const url = `${sessions.server.mount(request.root2)}/${encodeURIComponent(request.model)}/index.js`;
    const second = await env.page.evaluate(([url, inputs]) => window.kumaTest.loadAndRun(url, inputs), [url, request.inputs]);
    return { first, keys: stored, second, keysAfter: await keys() };
  },

  // the JS heap with all but the last chunk loaded (the last one held back at the network), after GC
  async heap(env, request) {
    const last = request.chunks.length - 1;
    let release;
    const paused = new Promise((resolve) => (release = resolve));
    await intercept(env, "Request", (event, i) => (i === last ? release(event) : proceed(env, event)));
    await env.cdp.send("HeapProfiler.enable");
    // the inputs and the module go into the page first, so only the load itself is measured
    await env.page.evaluate(([url, inputs]) => ((window.kumaTest.inputs = inputs), import(url)), [env.url, request.inputs]);
    await env.cdp.send("HeapProfiler.collectGarbage");
    const before = await env.cdp.send("Runtime.getHeapUsage");
    const done = env.page.evaluate(([url, options]) => window.kumaTest.loadAndRun(url, window.kumaTest.inputs, options), [env.url, { cache: false }]);
    const held = await paused;
    const rest = request.chunks.reduce((sum, c) => sum + c.size, 0) - request.chunks[last].size;
    await env.page.waitForFunction((rest) => window.kumaTest.progress[0] >= rest, rest, { polling: "raf", timeout: 0 });
    await env.cdp.send("HeapProfiler.collectGarbage");
    const during = await env.cdp.send("Runtime.getHeapUsage");
    await proceed(env, held);
    return { ...(await done), before, during };
  },

  // the cache's stores wait until load() has resolved: every Cache.put is held until the page has
  // the model and has run it; then the stores finish and fill the cache. A second page disposes its
  // model right after load(): the stores still finish, and then the buffers and device are destroyed
  async deferred_store(env, request) {
    await env.page.evaluate(() => {
      const put = Cache.prototype.put;
      let release;
      window.held = { started: 0, released: new Promise((resolve) => (release = resolve)), release };
      Cache.prototype.put = async function (...args) {
        window.held.started++;
        await window.held.released;
        return put.apply(this, args);
      };
    });
    const result = await env.page.evaluate(async ([url, inputs]) => {
      const { load } = await import(url);
      const model = await load();
      const putsAtLoad = window.held.started;
      let settled = false;
      model.cached.then(() => (settled = true));
      const outputs = window.kumaTest.encode(model.outputs, await model.run(window.kumaTest.feed(inputs)));
      while (window.held.started === 0) await new Promise((resolve) => requestAnimationFrame(resolve)); // a store waits
      const settledWhileHeld = settled;
      window.held.release();
      await model.cached;
      model.dispose();
      return { ok: true, outputs, putsAtLoad, settledWhileHeld, keys: await window.kumaTest.cacheKeys("wide") };
    }, [env.url, request.inputs]);
    const page = await env.context.newPage();
    await page.goto(sessions.server.origin + "/");
    const disposed = await page.evaluate(async ([url, model]) => {
      await caches.delete("kuma:" + model);
      const { load } = await import(url);
      const loaded = await load();
      loaded.dispose();
      let destroyed = false;
      loaded.lost.then(() => (destroyed = true));
      await loaded.cached;
      const destroyedBeforeStored = destroyed;
      const lost = await loaded.lost;
      const cache = await caches.open("kuma:" + model);
      return { keys: (await cache.keys()).length, destroyedBeforeStored, lost: lost.reason };
    }, [`${sessions.server.mount(request.root)}/${encodeURIComponent(request.model)}/index.js`, request.model]);
    await page.close();
    return { ...result, disposed };
  },

  // chunk `corrupt` arrives with one bit flipped: on every request ("always") or the first ("once")
  async corrupt(env, request) {
    const attempts = await intercept(env, "Response", async (event, i, attempt) => {
      if (i !== request.corrupt || (request.mode === "once" && attempt > 1)) return proceed(env, event);
      const { body, base64Encoded } = await env.cdp.send("Fetch.getResponseBody", { requestId: event.requestId });
      const bytes = Buffer.from(body, base64Encoded ? "base64" : "utf8");
      bytes[bytes.length >> 1] ^= 0x10;
      return respond(env, event, 200, bytes);
    });
    const result = await loadAndRun(env, request, { cache: false });
    return { ...result, attempts: attempts.get(request.corrupt) };
  },

  // the first request of each of the first chunks fails: a reset connection, a 503, a 429
  async flaky(env, request) {
    const attempts = await intercept(env, "Request", (event, i, attempt) => {
      if (attempt > 1 || i >= 9) return proceed(env, event);
      if (i % 3 === 0) return env.cdp.send("Fetch.failRequest", { requestId: event.requestId, errorReason: "ConnectionReset" });
      return respond(env, event, i % 3 === 1 ? 503 : 429, "busy", [{ name: "Retry-After", value: "0" }]);
    });
    const result = await loadAndRun(env, request, { cache: false });
    return { ...result, attempts: Object.fromEntries(attempts) };
  },

  // the first request of chunk 0 never answers; load({ timeout }) retries it
  async stall(env, request) {
    const attempts = await intercept(env, "Request", (event, i, attempt) => (i === 0 && attempt === 1 ? null : proceed(env, event)));
    const result = await loadAndRun(env, request, { cache: false, timeout: request.timeout });
    return { ...result, attempts: attempts.get(0) };
  },

  // chunk 0 answers with this status (404, 204 ...), body and Content-Type
  async status(env, request) {
    const headers = [{ name: "Content-Type", value: request.type ?? "application/octet-stream" }];
    const attempts = await intercept(env, "Request", (event, i) => (i === 0 ? respond(env, event, request.status, request.body, headers) : proceed(env, event)));
    return { ...(await loadAndRun(env, request, { cache: false })), attempts: attempts.get(0) };
  },

  // the load is aborted while chunk 0's request is held
  async abort(env, request) {
    let held;
    const paused = new Promise((resolve) => (held = resolve));
    await intercept(env, "Request", (event, i) => (i === 0 ? held(event) : proceed(env, event)));
    const done = loadAndRun(env, request, { cache: false });
    await paused;
    await env.page.evaluate(() => window.kumaTest.abort.abort());
    return done;
  },

  // every Cache.put is refused as over quota (the rest of the Cache API is the browser's own)
  async quota(env, request) {
    const from = sessions.server.requests.length;
    const warnings = [];
    env.page.on("console", (message) => message.type() === "warning" && warnings.push(message.text()));
    const result = await loadAndRun(env, request);
    const keys = await env.page.evaluate((m) => window.kumaTest.cacheKeys(m), request.model);
    return { ...result, keys, warnings, served: served(from) };
  },

  // load and run inside a module Worker
  async worker(env, request) {
    return env.page.evaluate(async ([url, inputs]) => {
      const source = `import { load } from ${JSON.stringify(new URL(url, location.href).href)};
        self.onmessage = async ({ data }) => {
          try {
            const model = await load();
            const result = await model.run(data);
            self.postMessage({ ok: true, result, inWorker: typeof window === "undefined" });
          } catch (error) {
            self.postMessage({ ok: false, error: error.message });
          }
        };`;
      const worker = new Worker(URL.createObjectURL(new Blob([source], { type: "text/javascript" })), { type: "module" });
      const reply = await new Promise((resolve, reject) => {
        worker.onmessage = ({ data }) => resolve(data);
        worker.onerror = (event) => reject(new Error(`worker error: ${event.message}`));
        worker.postMessage(window.kumaTest.feed(inputs));
      });
      worker.terminate();
      if (!reply.ok) return reply;
      const { outputs } = await import(url);
      return { ok: true, inWorker: reply.inWorker, outputs: window.kumaTest.encode(outputs, reply.result) };
    }, [env.url, request.inputs]);
  },

  // load({ device }) with a device of default limits
  async limits(env) {
    return env.page.evaluate(async (url) => {
      const { load } = await import(url);
      const device = await (await navigator.gpu.requestAdapter()).requestDevice();
      try {
        await load({ device });
        return { ok: true };
      } catch (error) {
        return { ok: false, error: error.message, limit: device.limits.maxStorageBufferBindingSize };
      } finally {
        device.destroy();
      }
    }, env.url);
  },

  // the GPU process crashes under a loaded model (Browser.crashGpuProcess): model.lost resolves, run()
  // says so, and loading again (as docs/js-api.md shows) works
  async device_lost(env, request) {
    await env.page.evaluate(async (url) => {
      const { load } = await import(url);
      window.kumaTest.model = await load({ cache: false });
    }, env.url);
    const cdp = await sessions.browser.newBrowserCDPSession();
    await cdp.send("Browser.crashGpuProcess");
    await cdp.detach();
    return env.page.evaluate(async ([url, inputs]) => {
      const model = window.kumaTest.model;
      const lost = await model.lost;
      const afterLoss = await model.run(window.kumaTest.feed(inputs)).then(() => "resolved", (error) => error.message);
      const { load } = await import(url);
      const again = await load({ cache: false });
      const outputs = window.kumaTest.encode(again.outputs, await again.run(window.kumaTest.feed(inputs)));
      again.dispose();
      return { ok: true, lost: { reason: lost.reason, message: lost.message }, afterLoss, outputs };
    }, [env.url, request.inputs]);
  },

  // run() misuse: inputs changed right after run() (a run that starts at once, and one queued
  // behind it), null inputs, run after dispose(), model.lost
  async run_api(env, request) {
    return env.page.evaluate(async ([url, inputs]) => {
      const { load } = await import(url);
      const model = await load({ cache: false });
      const feed = window.kumaTest.feed(inputs);
      const queuedFeed = window.kumaTest.feed(inputs);
      const pending = model.run(feed);
      const queued = model.run(queuedFeed);
      for (const array of [...Object.values(feed), ...Object.values(queuedFeed)]) array.fill(0);
      const outputs = window.kumaTest.encode(model.outputs, await pending);
      const queuedOutputs = window.kumaTest.encode(model.outputs, await queued);
      const message = (promise) => promise.then(() => "resolved", (error) => `${error.name}: ${error.message}`);
      const nullInputs = await message(model.run(null));
      const unknown = await message(model.run({ ...feed, nope: new Float32Array(1) }));
      model.dispose();
      const afterDispose = await message(model.run(feed));
      const lost = await model.lost;
      return { ok: true, outputs, queuedOutputs, nullInputs, unknown, afterDispose, lost: { reason: lost.reason } };
    }, [env.url, request.inputs]);
  },
};

async function main() {
  const { server, browser, version } = await withTimeout(start(), "starting Chromium");
  Object.assign(sessions, { server, browser });
  process.stdout.write(JSON.stringify({ ready: true, chromium: version }) + "\n");
  for await (const line of readline.createInterface({ input: process.stdin })) {
    if (!line.trim()) continue;
    let reply;
    let env;
    try {
      const request = JSON.parse(line);
      env = await open(request, request.init ?? []);
      reply = await withTimeout(SCENARIOS[request.scenario](env, request), `scenario ${request.scenario}`);
      reply.problems = env.problems;
    } catch (error) {
      reply = { ok: false, error: `driver: ${error.message}`, problems: env?.problems };
    } finally {
      await env?.context.close();
    }
    process.stdout.write(JSON.stringify(reply) + "\n");
  }
  await browser.close();
  server.server.close();
}

main().catch((error) => {
  process.stdout.write(JSON.stringify({ ok: false, error: error.message }) + "\n");
  process.exit(1);
});
