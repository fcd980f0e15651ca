// The Node side of the Dawn benchmark (issue 12), driven by bench/gpu/dawn/bench.py: one engine on
// one model per process, on Dawn (dawn.node from the npm package `webgpu`, Chrome's WebGPU engine).
//
//   node run.mjs <job.json> <result.json>
//   job: {engine: "kuma" | "decode" | "copy" | "read" | "ort" | "probe", path, inputs: {name: {file, dtype, shape}},
//         expected: {file, shape}, timing: {warmup, minRuns, budgetMs}, profile: bool, dawnFlags: [..]}
//
// kuma:  the model folder's emitted index.js, its own load() and run() as a page calls them (the
//        weight chunks through a fetch of file: URLs). Latency is run() end to end: input upload, the
//        dispatches in the runtime's command buffers (submitted while encoded), readback. Runs go back to back after the warm-up, so the GPU stays at its working clock
//        (an idle GPU drops it, docs/performance.md). With profile, the same program (parsed from
//        index.js and the picked device class's module) is rebuilt on a device with timestamp-query: the GPU time of one pass, of runs
//        back to back in one pass, and of each dispatch in a pass of its own, and each kernel's share
//        of the back-to-back time (the runs again without its dispatches). Both use the kernel
//        variant the runtime picks on this adapter (variant(): subgroup matrices or the kernels' code),
//        which the result names, beside the adapter's subgroup sizes and subgroup-matrix configs; on
//        subgroup matrices the profile also times the pass and those dispatches on the shader-f16 code.
// ort:   ONNX Runtime Web's WebGPU EP on the same Dawn, for the model's ONNX export.
// probe: Dawn's cost per dispatch: 1000 tiny dispatches in one pass, one submit; and one submit alone.
// decode: a step model's greedy decode loop (docs/generative.md), for bench/gpu/dawn/decode.py.
// copy:  Dawn's device-to-device copy bandwidth (copyBufferToBuffer).
// read:  the bandwidth of a compute kernel reading a buffer with 16-byte loads.
// kuma and ort check their output against PyTorch's (expected: raw little-endian float32); decode
// returns its tokens, which decode.py checks.

import fs from "node:fs";
import path from "node:path";
import { pathToFileURL, fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const MODULES = process.env.KUMA_DAWN_MODULES ?? path.join(HERE, "node_modules"); // the carried kit sets this
const ARRAYS = { float32: Float32Array, int32: Int32Array, int64: BigInt64Array };
// index.js's line with the program, JSON (kuma_build/outfolder.py's PROGRAM_LINE)
const PROGRAM_LINE = "\nconst program = ";

const [jobFile, resultFile] = process.argv.slice(2);
const job = JSON.parse(fs.readFileSync(jobFile, "utf8"));

// navigator.gpu from dawn.node; the flags turn off timestamp quantization (exact per-dispatch times)
const { create, globals } = await import(pathToFileURL(path.join(MODULES, "webgpu", "index.js")));
Object.assign(globalThis, globals); // GPUBufferUsage, GPUMapMode, ... as in a browser
const gpu = create(job.dawnFlags ?? []);
if (typeof globalThis.navigator === "undefined") globalThis.navigator = {};
Object.defineProperty(globalThis.navigator, "gpu", { value: gpu, configurable: true });

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

function readArray(file, dtype) {
  const bytes = fs.readFileSync(file);
  const copy = new Uint8Array(bytes.byteLength); // own, aligned buffer
  copy.set(bytes);
  return new ARRAYS[dtype](copy.buffer);
}

function relL2(actual, expected) {
  if (actual.length !== expected.length) return Infinity;
  let num = 0;
  let den = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = actual[i] - expected[i];
    num += d * d;
    den += expected[i] * expected[i];
  }
  return Number.isNaN(num) ? Infinity : Math.sqrt(num / Math.max(den, 1e-30));
}

// warm-up runs, then back-to-back timed runs until both minRuns and budgetMs are reached
async function timeRuns(run, { warmup, minRuns, budgetMs, maxRuns = 1000 }) {
  for (let i = 0; i < warmup; i++) await run();
  const times = [];
  const started = performance.now();
  while (times.length < maxRuns && (times.length < minRuns || performance.now() - started < budgetMs)) {
    const t = performance.now();
    await run();
    times.push(performance.now() - t);
  }
  const sorted = [...times].sort((a, b) => a - b);
  return { medianMs: median(times), minMs: sorted[0], p90Ms: sorted[Math.floor(0.9 * (sorted.length - 1))], runs: times.length };
}

// fetch for the weight chunks: Node's fetch has no file: URLs
async function fileFetch(url) {
  const file = fileURLToPath(url);
  if (!fs.existsSync(file)) return new Response(null, { status: 404 });
  return new Response(fs.readFileSync(file), { status: 200, headers: { "Content-Type": "application/octet-stream" } });
}

async function adapterInfo() {
  const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) throw new Error("Dawn found no WebGPU adapter: no Vulkan driver (check VK_DRIVER_FILES or VK_ICD_FILENAMES and the Vulkan loader)");
  const { vendor, architecture, device, description, subgroupMinSize, subgroupMaxSize } = adapter.info;
  const subgroupMatrixConfigs = [...(adapter.info.subgroupMatrixConfigs ?? [])].map(({ componentType, resultComponentType, M, N, K }) => ({ componentType, resultComponentType, M, N, K }));
  return { vendor, architecture, device, description, features: [...adapter.features].sort(), subgroupMinSize, subgroupMaxSize, subgroupMatrixConfigs };
}

// The kernel variant templates/runtime.js picks for a program on an adapter (requestDevice and
// kernelSources there; this mirrors them): "f16m" (subgroup matrices: only an f16 build's "-f16"
// program has them, whose code is the kernels' shader-f16 code) or "code".
const MATRIX = "chromium-experimental-subgroup-matrix";
function variant(program, adapter) {
  const info = adapter.info;
  const matrix = program.kernels.some((k) => k.f16m) && adapter.features.has("shader-f16") && adapter.features.has(MATRIX) &&
    info.subgroupMinSize === 32 && info.subgroupMaxSize === 32 &&
    [...(info.subgroupMatrixConfigs ?? [])].some((c) => c.componentType === "f16" && c.resultComponentType === "f32" && c.M === 16 && c.N === 16 && c.K === 16);
  return matrix ? "f16m" : "code";
}

// ---- Kuma ----

function kumaInputs(program) {
  return Object.fromEntries(program.inputs.map((spec) => {
    const given = job.inputs[spec.name];
    const array = readArray(given.file, given.dtype);
    return [spec.name, spec.dtype === "int32" && array instanceof BigInt64Array ? Int32Array.from(array, Number) : array];
  }));
}

// The model folder's index.js loaded as a page loads it, and the program of the class the runtime
// picked (its kernels and plan joined to what the classes share, as outfolder.read_program joins them).
async function loadKuma() {
  const indexJs = path.join(job.path, "index.js");
  const text = fs.readFileSync(indexJs, "utf8");
  const start = text.indexOf(PROGRAM_LINE) + PROGRAM_LINE.length;
  const shared = JSON.parse(text.slice(start, text.indexOf(";\n", start)));
  const loadStarted = performance.now();
  const { load } = await import(pathToFileURL(indexJs));
  // the device the runtime asks for (its limits and features), which profileKuma's device repeats
  let descriptor = null;
  const requestDevice = GPUAdapter.prototype.requestDevice;
  GPUAdapter.prototype.requestDevice = function (asked = {}) {
    descriptor = asked;
    return requestDevice.call(this, asked);
  };
  let model;
  try {
    model = await load({ fetch: fileFetch, cache: false });
  } finally {
    GPUAdapter.prototype.requestDevice = requestDevice;
  }
  if (!descriptor) throw new Error("run.mjs: load() asked for no device through GPUAdapter.prototype.requestDevice");
  const loadMs = performance.now() - loadStarted;
  // an f16 build's "<class>-f16" program where the runtime took it (loadModel: the adapter has
  // shader-f16 and subgroup matrices), for which alone it asked for shader-f16; else "<class>"
  const module = async (name) => (await import(pathToFileURL(path.join(job.path, `${name}.js`)))).program;
  const name = model.deviceClass + (descriptor.requiredFeatures?.includes("shader-f16") ? "-f16" : "");
  const part = await module(name);
  // a buffer is its size, or [size, kind] (outfolder.ship_buffers)
  return { model, loadMs, name, descriptor, program: { ...shared, ...part, buffers: part.buffers.map((b) => ({ size: b[0] ?? b, kind: b[1] })) } };
}

async function runKuma() {
  const { model, loadMs, name, descriptor, program } = await loadKuma();
  const feed = kumaInputs(program);
  let outputs = await model.run(feed);
  const timing = await timeRuns(async () => { outputs = await model.run(feed); }, job.timing);
  const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  const result = { loadMs, ...timing, deviceClass: model.deviceClass, program: name, variant: variant(program, adapter), dispatches: program.dispatches.length,
    matrixKernels: program.kernels.filter((k) => k.f16m).length, relL2: relL2(Object.values(outputs)[0], readArray(job.expected.file, "float32")) };
  model.dispose();
  if (job.profile) result.profile = await profileKuma(program, feed, descriptor);
  return result;
}

// The program's copies [chunk, offset, buffer, offset, size], a bare buffer index being the one that
// follows from the copy before it, as templates/runtime.js's copyList reads them (outfolder.next_copy).
function copyList(program) {
  let last = [0, 0, -1, 0, 0];
  return program.copies.map((copy) => {
    if (typeof copy === "number") {
      let [chunk, at, buffer, start, size] = last;
      at += size;
      if (at === program.chunks[chunk].size) [chunk, at] = [chunk + 1, 0];
      start = copy === buffer ? start + size : 0;
      copy = [chunk, at, copy, start, Math.min(program.buffers[copy].size - start, program.chunks[chunk].size - at)];
    }
    return (last = copy);
  });
}

// The program rebuilt as templates/runtime.js builds it, on a device as the runtime asked for it
// (descriptor: loadKuma) with timestamp-query.
async function profileKuma(program, feed, descriptor) {
  const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter.features.has("timestamp-query")) return { error: "the adapter has no timestamp-query" };
  // a widened weight ("widen": an f16 build's program for adapters without tensor cores) is sent as f16, f32 on the GPU
  const gpuBytes = (b) => Math.ceil((b.kind === "widen" ? 2 * b.size : b.size) / 4) * 4;
  const picked = variant(program, adapter); // "f16m" or "code"
  const device = await adapter.requestDevice({ ...descriptor, requiredFeatures: ["timestamp-query", ...(descriptor.requiredFeatures ?? [])] });
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
  const buffers = program.buffers.map((b) => device.createBuffer({ size: Math.max(4, gpuBytes(b)), usage }));
  const f32 = (h) => { // an f16 bit pattern's value
    const e = (h >> 10) & 31, m = h & 1023, sign = h & 0x8000 ? -1 : 1;
    return e === 31 ? (m ? NaN : sign * Infinity) : sign * (e ? 1024 + m : 2 * m) * 2 ** (e - 25);
  };
  const copies = copyList(program);
  program.chunks.forEach((chunk, i) => {
    // named by its id, as kuma_build/outfolder.py's chunk_file names it
    const bytes = fs.readFileSync(path.join(job.path, "weights", `${chunk.id}.bin`));
    for (const [c, chunkOffset, buffer, bufferOffset, size] of copies) {
      if (c !== i) continue;
      if (program.buffers[buffer].kind === "widen") {
        const half = new Uint16Array(bytes.buffer.slice(bytes.byteOffset + chunkOffset, bytes.byteOffset + chunkOffset + size));
        device.queue.writeBuffer(buffers[buffer], 2 * bufferOffset, Float32Array.from(half, f32));
      } else device.queue.writeBuffer(buffers[buffer], bufferOffset, bytes, chunkOffset, size);
    }
  });
  program.inputs.forEach((spec) => device.queue.writeBuffer(buffers[spec.buffer], 0, feed[spec.name]));
  // the dispatches with the kernels of a variant
  const dispatchesOf = async (name) => {
    const pipelines = await Promise.all(program.kernels.map(async (k) => device.createComputePipelineAsync({
      label: k.name, layout: "auto", compute: { module: device.createShaderModule({ code: (name === "f16m" && k.f16m) || k.code }), entryPoint: "main" },
    })));
    return program.dispatches.map(([kernel, bound, groups]) => ({
      name: program.kernels[kernel].name, pipeline: pipelines[kernel], groups, matrix: Boolean(program.kernels[kernel].f16m),
      bindGroup: device.createBindGroup({ layout: pipelines[kernel].getBindGroupLayout(0), entries: bound.map((b, i) => ({ binding: i, resource: { buffer: buffers[b] } })) }),
    }));
  };
  const binds = await dispatchesOf(picked);
  const encode = (pass, list) => {
    for (const { pipeline, bindGroup, groups } of list) {
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(...groups);
    }
  };
  // passes: [[dispatch list, repeats]], each a pass with stamps at its start and end; ns per pass
  const stamped = async (passes) => {
    const count = 2 * passes.length;
    const queries = device.createQuerySet({ type: "timestamp", count });
    const resolved = device.createBuffer({ size: 8 * count, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    const readback = device.createBuffer({ size: 8 * count, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const encoder = device.createCommandEncoder();
    passes.forEach(([list, repeats], i) => {
      const pass = encoder.beginComputePass({ timestampWrites: { querySet: queries, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 } });
      for (let r = 0; r < repeats; r++) encode(pass, list);
      pass.end();
    });
    encoder.resolveQuerySet(queries, 0, count, resolved, 0);
    encoder.copyBufferToBuffer(resolved, 0, readback, 0, 8 * count);
    device.queue.submit([encoder.finish()]);
    await readback.mapAsync(GPUMapMode.READ);
    const ticks = new BigInt64Array(readback.getMappedRange().slice(0));
    readback.unmap();
    for (const b of [queries, resolved, readback]) b.destroy();
    return passes.map((_, i) => Number(ticks[2 * i + 1] - ticks[2 * i]));
  };
  const runs = job.profileRuns ?? 10;
  await stamped([[binds, 3]]); // warm-up: pipelines finish lazily, clocks rise
  const onePass = [];
  for (let r = 0; r < runs; r++) onePass.push((await stamped([[binds, 1]]))[0]);
  // back to back: enough repeats in one pass for ~0.2 s of work, at the clocks of steady work
  const repeats = Math.max(10, Math.min(2000, Math.round(2e8 / Math.max(median(onePass), 1000))));
  const backToBack = (await stamped([[binds, repeats]]))[0] / repeats;
  const perDispatch = binds.map(() => []);
  const limit = 2048; // passes per submit: 4096 queries
  for (let r = 0; r < runs; r++) {
    for (let s = 0; s < binds.length; s += limit) {
      const times = await stamped(binds.slice(s, s + limit).map((b) => [[b], 1]));
      times.forEach((ns, i) => perDispatch[s + i].push(ns));
    }
  }
  const dispatches = binds.map((b, i) => ({ name: b.name, groups: b.groups, us: median(perDispatch[i]) / 1e3 }));
  // on subgroup matrices: the same pass, and the dispatches that have a matrix variant, with the
  // kernels' code (their shader-f16 code in the "-f16" program) instead, what the matrices gain
  let insteadF16 = null;
  if (picked === "f16m") {
    const other = await dispatchesOf("code");
    await stamped([[other, 3]]);
    const pass = [];
    for (let r = 0; r < runs; r++) pass.push((await stamped([[other, 1]]))[0]);
    const matrix = other.map((b, i) => i).filter((i) => other[i].matrix);
    const times = [];
    for (let r = 0; r < runs; r++) times.push((await stamped(matrix.slice(0, limit).map((i) => [[other[i]], 1]))).reduce((a, b) => a + b, 0));
    insteadF16 = { passMs: median(pass) / 1e6, matrixDispatches: matrix.length,
      matrixDispatchesUs: matrix.slice(0, limit).reduce((sum, i) => sum + dispatches[i].us, 0), f16DispatchesUs: median(times) / 1e3 };
  }
  const kernels = {};
  for (const d of dispatches) {
    const k = (kernels[d.name] ??= { name: d.name, calls: 0, us: 0 });
    k.calls += 1;
    k.us += d.us;
  }
  // each kernel's share of the back-to-back time: the pass of `repeats` runs again without that
  // kernel's dispatches (the rest read what the full runs left, so their work and speed are
  // unchanged; the results are not used). A dispatch in a pass of its own also pays the pass's
  // start and end, and the small kernels' cost there is mostly that: back to back it overlaps.
  for (const k of Object.values(kernels)) {
    const rest = binds.filter((b) => b.name !== k.name);
    const without = rest.length ? (await stamped([[rest, repeats]]))[0] / repeats : 0;
    k.backToBackUs = (backToBack - without) / 1e3;
  }
  for (const b of buffers) b.destroy();
  device.destroy();
  return {
    variant: picked,
    passMs: median(onePass) / 1e6, backToBackMs: backToBack / 1e6, repeats,
    dispatchSumMs: dispatches.reduce((s, d) => s + d.us, 0) / 1e3, insteadF16,
    kernels: Object.values(kernels).sort((a, b) => b.us - a.us),
    dispatches,
  };
}

// ---- Kuma decoding (issue 10) ----

// The loop of docs/generative.md on a step model forward(token, pos) -> (token, logits): reset(), the
// prompt one token per run, then each step feeds the last token back as a GPUBuffer
// (model.outputBuffer) and reads back only the 4-byte token, awaited every step. `rounds`
// generations: the first warms up (pipelines compile lazily, clocks rise), the others are timed and
// must give the first one's tokens (reset() reproduces the generation). The warm-up's last step also
// reads the logits, for decode.py's check.
async function runDecode() {
  const { model, loadMs, descriptor, program } = await loadKuma();
  const { prompt, steps, rounds = 2 } = job;
  const read = { read: ["token"] };
  const generate = async (logits = false) => {
    await model.reset();
    const prefillMs = [];
    const decodeMs = [];
    let out;
    for (let pos = 0; pos < prompt.length; pos++) {
      const started = performance.now();
      out = await model.run({ token: Int32Array.of(prompt[pos]), pos: Int32Array.of(pos) }, read);
      prefillMs.push(performance.now() - started);
    }
    const tokens = [out.token[0]];
    const end = prompt.length + steps - 1;
    for (let pos = prompt.length; pos < end; pos++) {
      const started = performance.now();
      out = await model.run({ token: model.outputBuffer("token"), pos: Int32Array.of(pos) }, logits && pos === end - 1 ? { read: ["token", "logits"] } : read);
      decodeMs.push(performance.now() - started);
      tokens.push(out.token[0]);
    }
    return { tokens, prefillMs, decodeMs, logits: logits ? Array.from(out.logits) : null };
  };
  const first = await generate(true);
  const timed = [];
  for (let r = 1; r < rounds; r++) timed.push(await generate());
  model.dispose();
  const decodeMs = timed.flatMap((g) => g.decodeMs);
  const prefillMs = timed.flatMap((g) => g.prefillMs);
  const sum = (xs) => xs.reduce((a, b) => a + b, 0);
  const result = {
    loadMs, deviceClass: model.deviceClass, dispatches: program.dispatches.length, tokens: first.tokens, lastLogits: first.logits,
    repeatable: timed.every((g) => g.tokens.every((t, i) => t === first.tokens[i])),
    decodeSteps: decodeMs.length, decodeMsMedian: median(decodeMs), decodeMsMean: sum(decodeMs) / decodeMs.length,
    decodeTokensPerS: (1000 * decodeMs.length) / sum(decodeMs),
    prefillMsMedian: median(prefillMs), prefillTokensPerS: (1000 * prefillMs.length) / sum(prefillMs),
    firstRoundDecodeMsMedian: median(first.decodeMs),
  };
  if (job.profile) result.profile = await profileKuma(program, { token: Int32Array.of(prompt[0]), pos: Int32Array.of(0) }, descriptor);
  return result;
}

// ---- Dawn's memory bandwidth: copies, and a compute kernel's reads ----

// One unit of GPU work (encode(encoder) adds it) timed from submit to onSubmittedWorkDone: `repeats`
// units in one submit against one unit in one submit (median of `runs`); the difference over
// repeats - 1 is one unit without the submit's fixed cost, in ms.
async function unitMs(device, encode, repeats, runs) {
  const once = async (count) => {
    const started = performance.now();
    const encoder = device.createCommandEncoder();
    for (let i = 0; i < count; i++) encode(encoder);
    device.queue.submit([encoder.finish()]);
    await device.queue.onSubmittedWorkDone();
    return performance.now() - started;
  };
  const measure = async (count) => {
    for (let i = 0; i < 2; i++) await once(count);
    const times = [];
    for (let i = 0; i < runs; i++) times.push(await once(count));
    return median(times);
  };
  const manyMs = await measure(repeats);
  const oneMs = await measure(1);
  return { manyMs, oneMs, unitMs: (manyMs - oneMs) / (repeats - 1) };
}

// A device and a buffer of `bytes` (at most the adapter's largest) of random words, `usage` beside COPY_DST.
async function filledBuffer(usage, storage = false) {
  const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  const limit = storage ? Math.min(adapter.limits.maxBufferSize, adapter.limits.maxStorageBufferBindingSize) : adapter.limits.maxBufferSize;
  const bytes = Math.min(job.bytes ?? 256 * 2 ** 20, limit) & ~4095;
  const device = await adapter.requestDevice({ requiredLimits: { maxBufferSize: bytes, ...(storage ? { maxStorageBufferBindingSize: bytes } : {}) } });
  const src = device.createBuffer({ size: bytes, usage: usage | GPUBufferUsage.COPY_DST });
  const block = new Uint32Array(Math.min(bytes, 16 * 2 ** 20) / 4).map(() => (Math.random() * 2 ** 32) >>> 0);
  for (let offset = 0; offset < bytes; offset += block.byteLength) {
    device.queue.writeBuffer(src, offset, block, 0, Math.min(block.length, (bytes - offset) / 4));
  }
  return { device, src, bytes, block };
}

async function readBack(device, buffer, bytes) {
  const readback = device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const encoder = device.createCommandEncoder();
  encoder.copyBufferToBuffer(buffer, 0, readback, 0, bytes);
  device.queue.submit([encoder.finish()]);
  await readback.mapAsync(GPUMapMode.READ);
  const words = new Uint32Array(readback.getMappedRange().slice(0));
  readback.unmap();
  return words;
}

// copyBufferToBuffer of the buffer into another. GB/s counts the bytes read plus the bytes written,
// as bench/gpu/device.py counts torch's copy.
async function runCopy() {
  const { repeats = 32, runs = 10 } = job;
  const { device, src, bytes, block } = await filledBuffer(GPUBufferUsage.COPY_SRC);
  const dst = device.createBuffer({ size: bytes, usage: GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
  const timed = await unitMs(device, (encoder) => encoder.copyBufferToBuffer(src, 0, dst, 0, bytes), repeats, runs);
  const copied = await readBack(device, dst, block.byteLength); // the check: the copy's first block is the source's
  const same = copied.every((v, i) => v === block[i]);
  device.destroy();
  return { bytes, repeats, manyMs: timed.manyMs, oneMs: timed.oneMs, copyMs: timed.unitMs, gbps: (2 * bytes) / (timed.unitMs * 1e6), same };
}

// A compute kernel reading the buffer once as vec4<u32>s (16 bytes a load, each thread striding the
// whole grid, 4 loads in flight), XOR-ing them into one word a workgroup: what a memory-bound kernel
// such as decode's matrix-vector products can read at most. GB/s counts the bytes read.
const READ_GROUPS = 4096;
async function runRead() {
  const { repeats = 32, runs = 10 } = job;
  const { device, src, bytes, block } = await filledBuffer(GPUBufferUsage.STORAGE, true);
  const out = device.createBuffer({ size: 4 * READ_GROUPS, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
  const code = `
@group(0) @binding(0) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
var<workgroup> folded: atomic<u32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
  let n = arrayLength(&src);
  let stride = ${READ_GROUPS * 256}u;
  var acc = vec4<u32>();
  for (var i = gid.x; i < n; i += 4u * stride) {
    let a = src[i];
    let b = select(vec4<u32>(), src[min(i + stride, n - 1u)], i + stride < n);
    let c = select(vec4<u32>(), src[min(i + 2u * stride, n - 1u)], i + 2u * stride < n);
    let d = select(vec4<u32>(), src[min(i + 3u * stride, n - 1u)], i + 3u * stride < n);
    acc ^= a ^ b ^ c ^ d;
  }
  atomicXor(&folded, acc.x ^ acc.y ^ acc.z ^ acc.w);
  workgroupBarrier();
  if (li == 0u) { out[wg.x] = atomicLoad(&folded); }
}`;
  const pipeline = device.createComputePipeline({ layout: "auto", compute: { module: device.createShaderModule({ code }), entryPoint: "main" } });
  const group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: src } }, { binding: 1, resource: { buffer: out } }] });
  const timed = await unitMs(device, (encoder) => {
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(READ_GROUPS);
    pass.end();
  }, repeats, runs);
  // the check: the XOR of every word read is the XOR of the buffer's (its blocks repeat `block`)
  const folded = (await readBack(device, out, 4 * READ_GROUPS)).reduce((a, v) => a ^ v, 0) >>> 0;
  const blocks = Math.floor(bytes / block.byteLength), tail = (bytes % block.byteLength) / 4;
  let want = 0;
  if (blocks % 2) for (const v of block) want ^= v;
  for (let i = 0; i < tail; i++) want ^= block[i];
  device.destroy();
  return { bytes, repeats, manyMs: timed.manyMs, oneMs: timed.oneMs, readMs: timed.unitMs, gbps: bytes / (timed.unitMs * 1e6), same: folded === want >>> 0 };
}

// ---- ONNX Runtime Web ----

async function runOrt() {
  // dawn.node rejects views of wasm memory in writeBuffer: copy the data into a fresh array first
  const { writeBuffer } = GPUQueue.prototype;
  GPUQueue.prototype.writeBuffer = function (buffer, offset, data, dataOffset = 0, size) {
    const unit = ArrayBuffer.isView(data) ? (data.BYTES_PER_ELEMENT ?? 1) : 1;
    const bytes = ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : new Uint8Array(data);
    const begin = dataOffset * unit;
    const end = size === undefined ? bytes.byteLength : begin + size * unit;
    return writeBuffer.call(this, buffer, offset, bytes.slice(begin, end));
  };
  const dist = path.join(MODULES, "onnxruntime-web", "dist");
  const loadStarted = performance.now();
  const ort = await import(pathToFileURL(path.join(dist, "ort.webgpu.min.mjs")));
  ort.env.wasm.wasmPaths = pathToFileURL(dist + path.sep).href;
  ort.env.wasm.numThreads = 1;
  ort.env.logLevel = "error";
  const session = await ort.InferenceSession.create(fs.readFileSync(job.path), { executionProviders: ["webgpu"] });
  const feeds = Object.fromEntries(Object.entries(job.inputs).map(([name, spec]) => [name, new ort.Tensor(spec.dtype, readArray(spec.file, spec.dtype), spec.shape)]));
  const run = async () => {
    const result = await session.run(feeds);
    for (const tensor of Object.values(result)) if (tensor.location !== "cpu") await tensor.getData(true);
    return result;
  };
  let outputs = await run();
  const loadMs = performance.now() - loadStarted;
  const timing = await timeRuns(async () => { outputs = await run(); }, job.timing);
  const result = { loadMs, ...timing, ortVersion: ort.env.versions?.web, relL2: relL2(outputs[session.outputNames[0]].data, readArray(job.expected.file, "float32")) };
  await session.release();
  return result;
}

// ---- Dawn's cost per dispatch ----

async function runProbe() {
  const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  const stamps = adapter.features.has("timestamp-query");
  const device = await adapter.requestDevice({ requiredFeatures: stamps ? ["timestamp-query"] : [] });
  const module = device.createShaderModule({ code: "@group(0) @binding(0) var<storage, read_write> x: array<u32>;\n@compute @workgroup_size(1) fn main() { x[0] = x[0] + 1u; }" });
  const pipeline = device.createComputePipeline({ layout: "auto", compute: { module, entryPoint: "main" } });
  const buffer = device.createBuffer({ size: 16, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
  const bindGroup = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer } }] });
  const queries = stamps && device.createQuerySet({ type: "timestamp", count: 2 });
  const resolved = stamps && device.createBuffer({ size: 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
  const readback = device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const once = async (count) => {
    const started = performance.now();
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass(stamps ? { timestampWrites: { querySet: queries, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 } } : {});
    for (let i = 0; i < count; i++) {
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(1);
    }
    pass.end();
    if (stamps) {
      encoder.resolveQuerySet(queries, 0, 2, resolved, 0);
      encoder.copyBufferToBuffer(resolved, 0, readback, 0, 16);
    }
    device.queue.submit([encoder.finish()]);
    await device.queue.onSubmittedWorkDone();
    const wallMs = performance.now() - started;
    let gpuMs = null;
    if (stamps) {
      await readback.mapAsync(GPUMapMode.READ);
      const t = new BigInt64Array(readback.getMappedRange().slice(0));
      readback.unmap();
      gpuMs = Number(t[1] - t[0]) / 1e6;
    }
    return { wallMs, gpuMs };
  };
  const measure = async (count, runs) => {
    for (let i = 0; i < 5; i++) await once(count);
    const all = [];
    for (let i = 0; i < runs; i++) all.push(await once(count));
    return { wallMs: median(all.map((r) => r.wallMs)), gpuMs: stamps ? median(all.map((r) => r.gpuMs)) : null };
  };
  const many = await measure(1000, 30);
  const single = await measure(1, 100);
  // the check: every dispatch ran (5 + 30 runs of 1000, 5 + 100 of 1)
  device.queue.submit([(() => { const e = device.createCommandEncoder(); e.copyBufferToBuffer(buffer, 0, readback, 0, 16); return e.finish(); })()]);
  await readback.mapAsync(GPUMapMode.READ);
  const counted = new Uint32Array(readback.getMappedRange().slice(0))[0];
  readback.unmap();
  device.destroy();
  return {
    dispatches1000: many, submit1: single, counted, countedExpected: 35 * 1000 + 105,
    usPerDispatchWall: ((many.wallMs - single.wallMs) / 999) * 1e3,
    usPerDispatchGpu: stamps ? ((many.gpuMs - single.gpuMs) / 999) * 1e3 : null,
  };
}

const ENGINES = { kuma: runKuma, decode: runDecode, copy: runCopy, read: runRead, ort: runOrt, probe: runProbe };
let result;
try {
  result = { ok: true, adapter: await adapterInfo(), ...(await ENGINES[job.engine]()) };
} catch (error) {
  result = { ok: false, error: `${error?.name ?? "Error"}: ${error?.message ?? error}`.slice(0, 2000) };
}
fs.writeFileSync(resultFile, JSON.stringify(result));
process.exit(0); // dawn.node keeps the event loop alive
