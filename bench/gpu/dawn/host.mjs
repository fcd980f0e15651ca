// Where run()'s host time goes on Dawn (issue 12): run() of an emitted index.js takes longer than
// its passes' GPU time back to back; this splits the difference.
//
//   node host.mjs [--runs N] [--warmup N] [--rounds N] [--stream N] [--flag DAWN_FLAG]... [--no-replays]
//                 [--out result.json] [MODEL_FOLDER...]
//
// basics (own device): the round trip of an empty submit to onSubmittedWorkDone, of one tiny
//   dispatch, of a 16-byte copy to mapAsync (and with onSubmittedWorkDone awaited first), mapAsync
//   of an idle buffer, writeBuffer's call at three sizes, a typed array's slice (run()'s input copy),
//   one event-loop hop (setImmediate) idle and while dawn.node polls (it polls its instance from a
//   setImmediate chain while a promise of its is pending: AsyncRunner in Dawn's src/dawn/node),
//   and, where the adapter has timestamp-query, how long after a longer kernel ends on the GPU its
//   onSubmittedWorkDone resolves.
// per model folder (random inputs of the right shapes; these timings do not depend on the values):
//   plain     run() back to back, nothing wrapped: the number the benchmark reports
//   phases    run() with the WebGPU calls it makes wrapped to note the time (the runtime is not
//             touched): before the first encoder, writeBuffer, each command buffer's encoding (from
//             the call for the first, writeBuffer left out; 0 dispatches where the previous run
//             encoded them while it waited) and submit call, the wait from the last submit to
//             mapAsync's resolution, the copy-out.
//             With timestamp-query each pass (one per command buffer) gets stamps: the GPU's busy
//             time, its idle time between a run's passes (waiting for the host) and between runs.
//   replays   one run()'s calls recorded (pipelines, bind groups, workgroup counts, writes, copies,
//             maps) and replayed on the model's device with other submit schedules and readbacks:
//             "8x3" is the runtime's (SUBMIT_FIRST, SUBMIT_GROWTH), so it should read as plain;
//             "once" one submit at the end; "every16" a submit each 16 dispatches; "doneThenMap"
//             awaits onSubmittedWorkDone before mapAsync; "stream" submits 20 runs without waiting
//             and reads back after the last (per run: what the GPU and the submits allow);
//             "encodeOnly" encodes and finishes without submitting (the host's encoding alone);
//             "ahead" encodes the next run's command buffers while it waits for this one's outputs.
//             `matches`: replays read back run()'s outputs byte for byte.
// Prints one JSON object (and writes it to --out). KUMA_DAWN_MODULES: the folder holding `webgpu`.

import fs from "node:fs";
import path from "node:path";
import { pathToFileURL, fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const MODULES = process.env.KUMA_DAWN_MODULES ?? path.join(HERE, "node_modules");

const args = process.argv.slice(2);
// runs: timed runs per measurement; warmup: run()s before them; rounds: of the replays, each variant
// in turn; stream: runs submitted without waiting, in "stream"
const options = { runs: 50, warmup: 50, rounds: 5, stream: 20, flags: [], out: null, folders: [], replays: true };
for (let i = 0; i < args.length; i++) {
  if (["--runs", "--warmup", "--rounds", "--stream"].includes(args[i])) options[args[i].slice(2)] = Number(args[++i]);
  else if (args[i] === "--flag") options.flags.push(args[++i]);
  else if (args[i] === "--out") options.out = args[++i];
  else if (args[i] === "--no-replays") options.replays = false;
  else options.folders.push(args[i]);
}

const { create, globals } = await import(pathToFileURL(path.join(MODULES, "webgpu", "index.js")));
Object.assign(globalThis, globals);
const gpu = create(options.flags);
if (typeof globalThis.navigator === "undefined") globalThis.navigator = {};
Object.defineProperty(globalThis.navigator, "gpu", { value: gpu, configurable: true });

const now = () => performance.now();
const median = (xs) => {
  const s = xs.filter((x) => x !== undefined && !Number.isNaN(x)).sort((a, b) => a - b);
  const m = s.length >> 1;
  return !s.length ? null : s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const us = (ms) => (ms === null ? null : Math.round(ms * 1e4) / 10); // ms -> µs, 0.1 µs
const hop = () => new Promise((resolve) => setImmediate(resolve));

// µs per call of fn (async or not), median of `runs` after `warmup`
async function timed(fn, runs, warmup = 5) {
  for (let i = 0; i < warmup; i++) await fn();
  const times = [];
  for (let i = 0; i < runs; i++) {
    const t = now();
    await fn();
    times.push(now() - t);
  }
  return us(median(times));
}

// replaces proto[name] with make(original); returns the undo
function patch(proto, name, make) {
  const original = proto[name];
  proto[name] = make(original);
  return () => { proto[name] = original; };
}

// ---- basics ----

async function basics() {
  const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  const stamps = adapter.features.has("timestamp-query");
  const device = await adapter.requestDevice({ requiredFeatures: stamps ? ["timestamp-query"] : [] });
  const queue = device.queue;
  const storage = device.createBuffer({ size: 1 << 20, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
  const readback = device.createBuffer({ size: 256, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  // x[0] = an LCG stepped x[1] times: one thread, a kernel as long as x[1] says
  const module = device.createShaderModule({ code: `@group(0) @binding(0) var<storage, read_write> x: array<u32>;
@compute @workgroup_size(1) fn main() { var a = x[0]; for (var i = 0u; i < x[1]; i++) { a = a * 1664525u + 1013904223u; } x[0] = a; }` });
  const pipeline = device.createComputePipeline({ layout: "auto", compute: { module, entryPoint: "main" } });
  const bindGroup = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: storage, size: 256 } }] });
  const steps = (n) => queue.writeBuffer(storage, 4, Uint32Array.of(n));
  const dispatch = (encoder, querySet) => {
    const pass = encoder.beginComputePass(querySet ? { timestampWrites: { querySet, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 } } : {});
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(1);
    pass.end();
  };
  const done = () => queue.onSubmittedWorkDone();
  const result = { adapter: adapter.info.description || adapter.info.device, timestampQuery: stamps };

  result.emptySubmitDoneUs = await timed(() => { queue.submit([device.createCommandEncoder().finish()]); return done(); }, 200);
  steps(1);
  result.dispatchSubmitDoneUs = await timed(() => { const e = device.createCommandEncoder(); dispatch(e); queue.submit([e.finish()]); return done(); }, 200);
  const copyMap = async (waitFirst) => {
    const e = device.createCommandEncoder();
    e.copyBufferToBuffer(storage, 0, readback, 0, 16);
    queue.submit([e.finish()]);
    if (waitFirst) await done();
    await readback.mapAsync(GPUMapMode.READ);
    readback.getMappedRange(0, 16).slice(0);
    readback.unmap();
  };
  result.copyMapUs = await timed(() => copyMap(false), 200);
  result.copyDoneMapUs = await timed(() => copyMap(true), 200);
  result.idleMapUs = await timed(async () => { await readback.mapAsync(GPUMapMode.READ); readback.unmap(); }, 200);
  // writeBuffer's call alone (the copy into Dawn's staging memory); the queue drained between calls
  result.writeBufferUs = {};
  for (const bytes of [512, 64 << 10, 588 << 10]) {
    const data = new Uint8Array(bytes).fill(1);
    const times = [];
    for (let i = 0; i < 55; i++) {
      const t = now();
      queue.writeBuffer(storage, 256, data);
      if (i >= 5) times.push(now() - t);
      queue.submit([]);
      await done();
    }
    result.writeBufferUs[bytes] = us(median(times));
  }
  const image = new Float32Array(3 * 224 * 224).fill(1);
  result.slice588kUs = await timed(() => { image.slice(); }, 100);
  result.hopIdleUs = await timed(hop, 1000, 50);
  // hops while a GPU job is pending (dawn.node's setImmediate chain runs between ours), and the
  // delivery latency: onSubmittedWorkDone's resolution after the kernel's end on the GPU
  const querySet = stamps && device.createQuerySet({ type: "timestamp", count: 2 });
  const resolved = stamps && device.createBuffer({ size: 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
  const longJob = async (n) => {
    steps(n);
    const e = device.createCommandEncoder();
    dispatch(e, querySet);
    if (stamps) {
      e.resolveQuerySet(querySet, 0, 2, resolved, 0);
      e.copyBufferToBuffer(resolved, 0, readback, 0, 16);
    }
    const t = now();
    queue.submit([e.finish()]);
    let hops = 0;
    let finished = false;
    const counting = (async () => { while (!finished) { await hop(); hops++; } })();
    await done();
    const wallMs = now() - t;
    finished = true;
    await counting;
    let gpuMs = null;
    if (stamps) {
      await readback.mapAsync(GPUMapMode.READ);
      const ticks = new BigInt64Array(readback.getMappedRange(0, 16).slice(0));
      readback.unmap();
      gpuMs = Number(ticks[1] - ticks[0]) / 1e6;
    }
    return { wallMs, gpuMs, hops };
  };
  // steps for a kernel of about 2 ms of wall time (on a CPU adapter too; dawn.node's null backend,
  // which runs nothing, stops at 2^24 steps and reads as such)
  await longJob(1); // SwiftShader compiles at the first dispatch
  let n = 1024;
  for (let i = 0; i < 14 && (await longJob(n)).wallMs < 2; i++) n *= 2;
  const jobs = [];
  for (let i = 0; i < 20; i++) jobs.push(await longJob(n));
  const wall = median(jobs.map((j) => j.wallMs));
  result.longJob = {
    steps: n, wallUs: us(wall), gpuUs: stamps ? us(median(jobs.map((j) => j.gpuMs))) : null,
    beyondGpuUs: stamps ? us(median(jobs.map((j) => j.wallMs - j.gpuMs))) : null,
    hopWhilePendingUs: us(median(jobs.map((j) => j.wallMs / Math.max(1, j.hops)))),
  };
  device.destroy();
  return result;
}

// ---- a model ----

// fetch for the weight chunks: Node's fetch has no file: URLs
async function fileFetch(url) {
  const file = fileURLToPath(url);
  if (!fs.existsSync(file)) return new Response(null, { status: 404 });
  return new Response(fs.readFileSync(file), { status: 200 });
}

// random inputs of the model's shapes (a model without dims: its sizes are numbers)
function randomInputs(model) {
  return Object.fromEntries(model.inputs.map(({ name, shape, dtype }) => {
    if (!shape.every((s) => typeof s === "number")) throw new Error(`host.mjs: input ${name} has a dim (${shape}); build the model without dims`);
    const count = shape.reduce((p, s) => p * s, 1);
    const array = dtype === "int32" ? Int32Array.from({ length: count }, (_, i) => (i * 7919) % 100) : Float32Array.from({ length: count }, () => Math.random() - 0.5);
    return [name, array];
  }));
}

// run() with its WebGPU calls noted, and with stamps on its passes where the device has them
async function phases(model, feed, runs) {
  const device = model.device;
  const stamps = device.features.has("timestamp-query");
  const capacity = 4096;
  const querySet = stamps && device.createQuerySet({ type: "timestamp", count: capacity });
  let used = 0;
  let cur = null;
  // a wrapper adding each call's host time to the current run's `field`
  const timed = (field) => (f) => function (...a) {
    const t = now();
    const r = f.apply(this, a);
    if (cur) cur[field] += now() - t;
    return r;
  };
  const undo = [
    patch(GPUDevice.prototype, "createCommandEncoder", (f) => function (...a) { if (cur) cur.encoder ??= now(); return f.apply(this, a); }),
    patch(GPUQueue.prototype, "writeBuffer", timed("writeMs")),
    patch(GPUQueue.prototype, "submit", (f) => function (...a) {
      const t = now();
      const r = f.apply(this, a);
      if (cur) { cur.submits.push({ at: t, end: now(), dispatches: cur.count }); cur.count = 0; }
      return r;
    }),
    patch(GPUComputePassEncoder.prototype, "dispatchWorkgroups", (f) => function (...a) { if (cur) cur.count++; return f.apply(this, a); }),
    patch(GPUCommandEncoder.prototype, "beginComputePass", (f) => function (descriptor = {}) {
      if (!cur || !querySet || used + 2 > capacity) return f.call(this, descriptor);
      cur.passes.push(used);
      used += 2;
      return f.call(this, { ...descriptor, timestampWrites: { querySet, beginningOfPassWriteIndex: used - 2, endOfPassWriteIndex: used - 1 } });
    }),
    patch(GPUBuffer.prototype, "mapAsync", (f) => function (...a) {
      const run = cur;
      if (run) run.mapCall ??= now();
      const p = f.apply(this, a);
      return run ? p.then((v) => { run.mapDone = now(); return v; }) : p;
    }),
    patch(GPUBuffer.prototype, "getMappedRange", timed("rangeMs")),
    patch(GPUBuffer.prototype, "unmap", (f) => function (...a) {
      const t = now();
      const r = f.apply(this, a);
      if (cur) { cur.unmapMs += now() - t; cur.unmapped = now(); }
      return r;
    }),
  ];
  const notes = [];
  try {
    // one run more: a runtime that encodes a run's command buffers during the previous run's wait
    // gives a run's notes the next run's passes (the same statistics), which the last one runs
    for (let r = 0; r <= runs; r++) {
      cur = { call: now(), writeMs: 0, rangeMs: 0, unmapMs: 0, count: 0, submits: [], passes: [] };
      const run = model.run(feed);
      cur.returned = now();
      await run;
      cur.end = now();
      if (r < runs) notes.push(cur);
      cur = null;
    }
  } finally {
    undo.forEach((u) => u());
  }
  let ticks = null;
  if (stamps && used) {
    const resolved = device.createBuffer({ size: 8 * used, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    const readback = device.createBuffer({ size: 8 * used, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const e = device.createCommandEncoder();
    e.resolveQuerySet(querySet, 0, used, resolved, 0);
    e.copyBufferToBuffer(resolved, 0, readback, 0, 8 * used);
    device.queue.submit([e.finish()]);
    await readback.mapAsync(GPUMapMode.READ);
    ticks = Array.from(new BigInt64Array(readback.getMappedRange().slice(0)), (t) => Number(t) / 1e6); // ms
    readback.unmap();
    for (const b of [resolved, readback]) b.destroy(); // not querySet: command buffers encoded ahead may use it
  }
  // per run: host phases (ms), and from the stamps the GPU's view
  const rows = notes.map((n, r) => {
    const last = n.submits.at(-1);
    const chunks = n.submits.map((s, k) => ({
      dispatches: s.dispatches,
      encodeMs: s.at - (k ? n.submits[k - 1].end : n.call) - (k ? 0 : n.writeMs),
      submitMs: s.end - s.at,
    }));
    const row = {
      totalMs: n.end - n.call, takeMs: n.returned - n.call, beforeEncoderMs: n.encoder - n.call, writeMs: n.writeMs, chunks,
      hostToLastSubmitMs: last.end - n.call, waitMs: n.mapDone - last.end, copyOutMs: n.end - n.mapDone,
      rangeMs: n.rangeMs, unmapMs: n.unmapMs, afterUnmapMs: n.end - n.unmapped,
    };
    if (ticks) {
      const spans = n.passes.map((i) => [ticks[i], ticks[i + 1]]);
      row.gpuBusyMs = spans.reduce((s, [b, e]) => s + (e - b), 0);
      row.gpuSpanMs = spans.at(-1)[1] - spans[0][0];
      row.gpuGapsMs = spans.slice(1).map(([b], k) => b - spans[k][1]); // idle before each pass after the first
      const next = notes[r + 1]?.passes[0];
      row.gpuIdleToNextRunMs = next === undefined ? undefined : ticks[next] - spans.at(-1)[1];
    }
    return row;
  });
  const pick = (f) => us(median(rows.map(f)));
  const chunkCount = median(rows.map((r) => r.chunks.length));
  const same = rows.filter((r) => r.chunks.length === chunkCount);
  return {
    runs, stamps: Boolean(ticks),
    totalUs: pick((r) => r.totalMs), takeUs: pick((r) => r.takeMs), beforeEncoderUs: pick((r) => r.beforeEncoderMs), writeUs: pick((r) => r.writeMs),
    chunks: Array.from({ length: chunkCount }, (_, k) => ({
      dispatches: same[0].chunks[k].dispatches, encodeUs: us(median(same.map((r) => r.chunks[k].encodeMs))), submitUs: us(median(same.map((r) => r.chunks[k].submitMs))),
      gpuGapBeforeUs: k && ticks ? us(median(same.map((r) => r.gpuGapsMs[k - 1]))) : undefined,
    })),
    hostToLastSubmitUs: pick((r) => r.hostToLastSubmitMs), waitUs: pick((r) => r.waitMs), copyOutUs: pick((r) => r.copyOutMs),
    getMappedRangeUs: pick((r) => r.rangeMs), unmapUs: pick((r) => r.unmapMs), afterUnmapUs: pick((r) => r.afterUnmapMs),
    gpuBusyUs: ticks ? pick((r) => r.gpuBusyMs) : undefined, gpuSpanUs: ticks ? pick((r) => r.gpuSpanMs) : undefined,
    gpuIdleToNextRunUs: ticks ? pick((r) => r.gpuIdleToNextRunMs) : undefined,
  };
}

// one run()'s WebGPU calls: { writes: [[buffer, offset, data]], dispatches: [[pipeline, bindGroup, x, y, z]],
// copies: [[src, srcOffset, dst, dstOffset, size]], maps: [buffer] }
async function record(model, feed) {
  const calls = { writes: [], dispatches: [], copies: [], maps: [] };
  let pipeline, bindGroup;
  const undo = [
    patch(GPUQueue.prototype, "writeBuffer", (f) => function (buffer, offset, data, ...rest) {
      if (rest.length) throw new Error("host.mjs: writeBuffer with a data offset is not recorded");
      calls.writes.push([buffer, offset, data]);
      return f.call(this, buffer, offset, data);
    }),
    patch(GPUComputePassEncoder.prototype, "setPipeline", (f) => function (p) { pipeline = p; return f.call(this, p); }),
    patch(GPUComputePassEncoder.prototype, "setBindGroup", (f) => function (i, g, ...rest) { bindGroup = g; return f.call(this, i, g, ...rest); }),
    patch(GPUComputePassEncoder.prototype, "dispatchWorkgroups", (f) => function (x, y = 1, z = 1) { calls.dispatches.push([pipeline, bindGroup, x, y, z]); return f.call(this, x, y, z); }),
    patch(GPUCommandEncoder.prototype, "copyBufferToBuffer", (f) => function (...a) { calls.copies.push(a); return f.apply(this, a); }),
    patch(GPUBuffer.prototype, "mapAsync", (f) => function (...a) { calls.maps.push(this); return f.apply(this, a); }),
  ];
  try {
    await model.run(feed);
  } finally {
    undo.forEach((u) => u());
  }
  if (calls.copies.length !== calls.maps.length) throw new Error("host.mjs: run() copied a GPUBuffer input; feed typed arrays");
  return calls;
}

// counts at which a schedule submits, for n dispatches: the runtime's rule at (first, growth), or a submit each `every`
const geometric = (first, growth) => (n) => { const at = []; for (let c = first; c < n; c *= growth) at.push(c); return at; };
const every = (size) => (n) => Array.from({ length: Math.ceil(n / size) - 1 }, (_, i) => (i + 1) * size);

// the recorded run on its device: writes, the dispatches submitted at `points`, the output copies,
// then (read) mapAsync and the copy-out. submit=false encodes and drops the command buffers;
// ahead: the command buffers were encoded during the previous replay's wait, so a run only
// writes, submits them one by one, encodes the next run's and waits.
function replayer(device, calls, points, { read = true, submit = true, doneFirst = false, ahead = false } = {}) {
  const at = new Set(points(calls.dispatches.length));
  const queue = device.queue;
  const encodeAll = () => {
    const finished = [];
    let encoder = device.createCommandEncoder();
    let pass = encoder.beginComputePass();
    calls.dispatches.forEach(([pipeline, bindGroup, x, y, z], i) => {
      if (at.has(i)) {
        pass.end();
        finished.push(encoder.finish());
        if (!ahead && submit) queue.submit([finished.pop()]);
        encoder = device.createCommandEncoder();
        pass = encoder.beginComputePass();
      }
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(x, y, z);
    });
    pass.end();
    if (read) for (const c of calls.copies) encoder.copyBufferToBuffer(...c);
    finished.push(encoder.finish());
    return finished;
  };
  let ready = null;
  return async () => {
    for (const [buffer, offset, data] of calls.writes) queue.writeBuffer(buffer, offset, data);
    const buffers = ahead ? ready ?? encodeAll() : encodeAll();
    if (submit) for (const b of buffers) queue.submit([b]);
    if (ahead) ready = encodeAll();
    if (!read || !submit) return;
    if (doneFirst) await queue.onSubmittedWorkDone();
    await Promise.all(calls.maps.map((b) => b.mapAsync(GPUMapMode.READ)));
    return calls.maps.map((b, k) => {
      const bytes = new Uint8Array(b.getMappedRange(0, calls.copies[k][4]).slice(0));
      b.unmap();
      return bytes;
    });
  };
}

async function replays(model, feed, runs) {
  const device = model.device;
  const calls = await record(model, feed);
  // the check: a replay reads back run()'s outputs, byte for byte
  const want = Object.values(await model.run(feed)).map((a) => new Uint8Array(a.buffer));
  const same = (got) => got.length === want.length && got.every((g, k) => g.length === want[k].length && g.every((v, i) => v === want[k][i]));
  const STREAM = options.stream;
  const runtime = geometric(8, 3);
  const variants = {
    plain: () => model.run(feed),
    "8x3": replayer(device, calls, runtime),
    "8x2": replayer(device, calls, geometric(8, 2)),
    "4x2": replayer(device, calls, geometric(4, 2)),
    every16: replayer(device, calls, every(16)),
    once: replayer(device, calls, () => []),
    doneThenMap: replayer(device, calls, runtime, { doneFirst: true }),
    ahead: replayer(device, calls, runtime, { ahead: true }),
    encodeOnly: replayer(device, calls, runtime, { submit: false }),
  };
  const stream = async () => {
    const quiet = replayer(device, calls, runtime, { read: false });
    for (let i = 0; i < STREAM - 1; i++) await quiet(); // returns after its submits: nothing waits
    await replayer(device, calls, runtime)();
  };
  // rounds of every variant in turn, so that drift (clocks, other load) spreads over all
  const times = Object.fromEntries([...Object.keys(variants), "stream"].map((k) => [k, []]));
  const rounds = options.rounds;
  const per = Math.max(2, Math.ceil(runs / rounds));
  for (let round = 0; round < rounds; round++) {
    for (const [name, fn] of Object.entries(variants)) {
      for (let i = 0; i < 3; i++) await fn();
      for (let i = 0; i < per; i++) { const t = now(); await fn(); times[name].push(now() - t); }
    }
    await stream();
    for (let i = 0; i < Math.max(1, per >> 2); i++) { const t = now(); await stream(); times.stream.push((now() - t) / STREAM); }
  }
  const matches = same(await variants["8x3"]()) && same(await variants.ahead()) && same(await variants.ahead());
  return { dispatches: calls.dispatches.length, matches, medianUs: Object.fromEntries(Object.entries(times).map(([k, v]) => [k, us(median(v))])) };
}

async function modelProbe(folder, runs) {
  // the model's device gets timestamp-query where the adapter has it, for the stamps of phases()
  const undo = patch(GPUAdapter.prototype, "requestDevice", (f) => function (descriptor = {}) {
    const extra = this.features.has("timestamp-query") ? ["timestamp-query"] : [];
    return f.call(this, { ...descriptor, requiredFeatures: [...(descriptor.requiredFeatures ?? []), ...extra] });
  });
  let model;
  try {
    const { load } = await import(pathToFileURL(path.join(folder, "index.js")));
    model = await load({ fetch: fileFetch, cache: false });
  } finally {
    undo();
  }
  const feed = randomInputs(model);
  for (let i = 0; i < options.warmup; i++) await model.run(feed); // pipelines finish, clocks rise, the JIT settles
  const result = { folder, deviceClass: model.deviceClass };
  result.plainUs = await timed(() => model.run(feed), runs, 0);
  result.phases = await phases(model, feed, runs);
  if (options.replays) result.replays = await replays(model, feed, runs);
  model.dispose();
  return result;
}

// the result so far, after each step (a run cut short by a time limit keeps what it measured)
const result = { flags: options.flags, runs: options.runs, ok: false, models: [] };
const save = () => { if (options.out) fs.writeFileSync(options.out, JSON.stringify(result, null, 1)); };
try {
  result.basics = await basics();
  save();
  for (const folder of options.folders) {
    result.models.push(await modelProbe(path.resolve(folder), options.runs));
    save();
  }
  result.ok = true;
} catch (error) {
  result.error = `${error?.name ?? "Error"}: ${error?.message ?? error}\n${error?.stack ?? ""}`.slice(0, 3000);
}
save();
console.log(JSON.stringify(result, null, 1));
process.exit(0); // dawn.node keeps the event loop alive
