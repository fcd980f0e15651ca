// Load benchmark driver for bench/loading_bench.py: times a model's load in headless Chromium against
// the pure download of the same chunk files, under network throttles set through the DevTools protocol.
//
//   node load.mjs <request.json>    prints one JSON object
//   request: {root, model, chunks: [file], concurrency, repeats, throttles: [{name, mbps, latencyMs}]}
//
// Per throttle, in a fresh browser context (empty caches): the pure download (the chunk files fetched
// `concurrency` at a time, bodies read and dropped), a cold load (cache on, so it also fills the
// cache; model.cached says when its stores, which begin after load() resolves, are done), a second
// load from another page of the same context, and a load with { cache: false,
// warmup: false } from a third (the download, checks and GPU upload alone). JS memory (heap + ArrayBuffers,
// Runtime.getHeapUsage) is sampled back to back during the cold load; the peak is over the baseline
// taken after the module import. Each throttle is measured `repeats` times in turn (every repeat of
// every throttle in its own fresh context); the rows hold every repeat's numbers.
// Hashing: crypto.subtle.digest over every chunk, one after another.
// Uses tests/browser's server and Chromium launch (and its playwright-core).

import fs from "node:fs";
import { modelPage, start } from "../../tests/browser/run_model.mjs";

const request = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const { server, browser, version } = await start();

const memory = async (cdp) => {
  const usage = await cdp.send("Runtime.getHeapUsage");
  return usage.usedSize + (usage.backingStorageSize ?? 0);
};

async function throttled(cdp, { mbps, latencyMs }) {
  await cdp.send("Network.enable");
  if (mbps) {
    const bytesPerSecond = (mbps * 1e6) / 8;
    await cdp.send("Network.emulateNetworkConditions", { offline: false, latency: latencyMs, downloadThroughput: bytesPerSecond, uploadThroughput: bytesPerSecond });
  }
}

async function measure(throttle) {
  const { context, page, url } = await modelPage(browser, server, request.root, request.model);
  const cdp = await context.newCDPSession(page);
  await throttled(cdp, throttle);
  const folder = url.slice(0, url.lastIndexOf("/") + 1);
  const downloadMs = await page.evaluate(async ([urls, concurrency]) => {
    const started = performance.now();
    let next = 0;
    const worker = async () => {
      while (next < urls.length) {
        const reader = (await fetch(urls[next++], { cache: "no-store" })).body.getReader();
        while (!(await reader.read()).done);
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    return performance.now() - started;
  }, [request.chunks.map((f) => folder + f), request.concurrency]);

  await cdp.send("HeapProfiler.enable");
  await page.evaluate((url) => import(url), url);
  await cdp.send("HeapProfiler.collectGarbage");
  const baseline = await memory(cdp);
  let peak = baseline;
  let loading = true;
  const sampler = (async () => {
    while (loading) peak = Math.max(peak, await memory(cdp));
  })();
  const load = (page, options = {}) => page.evaluate(async ([url, options]) => {
    const { load } = await import(url);
    const started = performance.now();
    const model = await load(options);
    const ms = performance.now() - started;
    await model.cached; // the next page's load finds every chunk
    const cachedMs = performance.now() - started;
    model.dispose();
    return { ms, cachedMs };
  }, [url, options]);
  const { ms: coldMs, cachedMs } = await load(page);
  loading = false;
  await sampler;
  const second = await context.newPage();
  await second.goto(`${server.origin}/`);
  await throttled(await context.newCDPSession(second), throttle);
  const { ms: secondMs } = await load(second);
  // the load alone: no cache store, no warm-up run (a fresh page; the HTTP cache is bypassed by no-store)
  const third = await context.newPage();
  await third.goto(`${server.origin}/`);
  await throttled(await context.newCDPSession(third), throttle);
  const { ms: bareMs } = await load(third, { cache: false, warmup: false });
  await context.close();
  return { ...throttle, downloadMs, coldMs, cachedMs, bareMs, secondMs, peakBytes: peak - baseline };
}

// ms to hash every chunk, unthrottled
async function hashing() {
  const { context, page, url } = await modelPage(browser, server, request.root, request.model);
  const folder = url.slice(0, url.lastIndexOf("/") + 1);
  const ms = await page.evaluate(async (urls) => {
    const chunks = await Promise.all(urls.map(async (u) => (await fetch(u)).arrayBuffer()));
    const started = performance.now();
    for (const chunk of chunks) await crypto.subtle.digest("SHA-256", chunk);
    return performance.now() - started;
  }, request.chunks.map((f) => folder + f));
  await context.close();
  return ms;
}

try {
  const rows = request.throttles.map(() => []);
  for (let r = 0; r < (request.repeats ?? 1); r++) {
    for (const [i, throttle] of request.throttles.entries()) rows[i].push(await measure(throttle));
  }
  process.stdout.write(JSON.stringify({ chromium: version, rows, hashMs: await hashing() }) + "\n");
} finally {
  await browser.close();
  server.server.close();
}
