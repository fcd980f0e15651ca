// kuma runtime: loads a compiled program onto WebGPU and runs it.
//
// load: the device class ("gpu" or "cpu" kernels) is picked by the adapter (a software or fallback
// one gets "cpu") unless load({ deviceClass }) names one, and only that class's module is imported.
// The device is asked for the limits the model needs, and every buffer is checked against
// them before any is made. The kernels compile while the weight chunks stream in, at most
// CONCURRENCY at a time; each chunk is put into its GPU buffers as soon as it is whole and its
// SHA-256 begins with its id, then dropped, so JS memory holds a few chunks whatever the model's
// size, and load() resolves once all the SHA-256s match the program's digest (outfolder.chunk_id).
// A chunk comes from the Cache API (one cache per model, keyed by content hash) or from the
// network, where network errors, stalls, 5xx and 429 are retried. The chunks that came from the
// network are stored in the cache after load() resolves, read back from the GPU one at a time, so
// the cache's writes never compete with the downloads. A load that fails destroys what it made and
// returns no model, so no run ever reads bytes that were not verified.
// run: the inputs are checked when run() is called, and written then (or copied, for a run queued
// behind others); the dispatches go to the GPU in a few command buffers of growing size as they are
// encoded (SUBMIT_FIRST), the last with the copies of the outputs, and the only CPU wait is the
// final read of the outputs asked for (the others stay on the GPU, as outputBuffer(name)). While it
// waits, the next run's command buffers are encoded, so that run only submits them. State buffers (a KV
// cache forward() updates in place) keep their contents from one run to the next; they are set at
// load and by reset().
// dims (a model built for a range of sizes): run() infers each dim's value from the input lengths,
// writes the values to the "dims" uniform buffer the kernels read (when they change), computes the
// workgroup counts and reads the outputs back at their current lengths.

// What a model may need of the runtime; scripts/minify_runtime.mjs derives runtimes with some of
// them false, where terser drops the code behind them, and index.js ships the smallest whose false
// switches the model does not need (jsmodule.runtime_needs; docs/benchmarks.md has the sizes):
// DIMS, a model with dims (the dims uniform, inferring dims, { size, per } counts, `when` ranges,
// sizes with terms); MATRICES, kernels with a subgroup-matrix variant (those of an f16 build's
// "-f16" program: picking the program and them); STATE, state buffers (setting them at load and on
// reset()); F16, an f16 build's widened weights
const DIMS = true, MATRICES = true, STATE = true, F16 = true;

const USAGE_STORAGE = 0x80 | 0x08 | 0x04; // STORAGE | COPY_DST | COPY_SRC
const USAGE_READBACK = 0x01 | 0x08; // MAP_READ | COPY_DST
const USAGE_DIMS = 0x40 | 0x08; // UNIFORM | COPY_DST
const ARRAY_TYPES = { float32: Float32Array, int32: Int32Array };
const CONCURRENCY = 4; // chunk downloads at once: enough to fill the link while one chunk is hashed; JS memory holds this many chunks
const ATTEMPTS = 4; // per chunk, for network errors, stalls, 5xx and 429
const BACKOFF_MS = 250; // before the 2nd attempt; doubled for each next one, with jitter
const MAX_RETRY_AFTER_MS = 10_000; // a server's Retry-After is honoured up to this
const STALL_MS = 30_000; // default load({ timeout }): an attempt with no bytes for this long is retried
// A run's dispatches are submitted as they are encoded, so the GPU starts on the first while the
// host encodes the rest: Dawn (Chrome's WebGPU) spends ~4.4 µs of host time on each dispatch and the
// GPU starts only at a submit. A command buffer is submitted after SUBMIT_FIRST dispatches, the next
// each time the count reaches SUBMIT_GROWTH times the last (8, 24, 72, 216...: 4 submits for
// BERT-base's 123): the GPU (10-60 µs a dispatch for the models of docs/performance.md on an H200)
// runs each while the host encodes the next (at most 3 times as many, at ~4.4 µs each), and a
// submit (~40 µs of host time) is paid a few times only. A run whose command buffers were encoded
// ahead (runnable's `ahead`) submits them in the same pieces: Dawn records a command buffer for the
// GPU at its submit (part of those 4.4 µs), so the GPU starts after the first piece's.
const SUBMIT_FIRST = 8;
const SUBMIT_GROWTH = 3;

// a fault worth another attempt (the server or the connection, not the deployed files)
class Transient extends Error {
  constructor(message, retryAfterMs) {
    super(message);
    this.retryAfterMs = retryAfterMs;
  }
}

// what the model tells its caller about a tensor (TensorInfo in runtime.d.ts): not the buffer index;
// a size that depends on dims as text ("seq", "2*seq + 1"), as jsmodule.size_text writes it in index.d.ts
function tensorInfo(specs) {
  const text = (s) => (DIMS && typeof s === "object" ? s.map(([coef, ...names]) => (coef === 1 && names.length ? names : [coef, ...names]).join("*")).join(" + ").replaceAll("+ -", "- ") : s);
  return specs.map(({ name, shape, dtype }) => ({ name, shape: shape.map(text), dtype }));
}

// a size of the program at the dims' values: a number, a dim's name, or terms [coef, name, ...] summed
function size(s, values) {
  if (!DIMS || typeof s === "number") return s;
  if (typeof s === "string") return values[s];
  return s.reduce((sum, [coef, ...names]) => sum + names.reduce((p, n) => p * values[n], coef), 0);
}

const numel = (shape, values) => shape.reduce((p, s) => p * size(s, values), 1);

async function requestAdapter() {
  if (typeof navigator === "undefined" || !navigator.gpu) {
    throw new Error("kuma: WebGPU is not available in this browser (navigator.gpu is missing). Use a browser with WebGPU enabled, or pass load({ device }).");
  }
  const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) throw new Error("kuma: no WebGPU adapter found; the browser or GPU driver does not support WebGPU here.");
  return adapter;
}

// a software implementation of WebGPU (SwiftShader, lavapipe, WARP) or a fallback adapter runs
// the "cpu" class's kernels 2 to 6 times faster than the "gpu" class's (docs/performance.md)
const SOFTWARE = /swiftshader|llvmpipe|lavapipe|softpipe|software|warp|basic render/i;

function isSoftware(info) {
  return Boolean(info && (info.isFallbackAdapter || SOFTWARE.test([info.vendor, info.architecture, info.device, info.description].join(" "))));
}

function chooseClass(names, software, wanted) {
  if (wanted !== undefined) {
    if (!names.includes(wanted)) throw new Error(`kuma: load({ deviceClass: ${JSON.stringify(wanted)} }): this model was built for ${names.join(" and ")} (kuma.toml target).`);
    return wanted;
  }
  const preferred = software ? "cpu" : "gpu";
  return names.includes(preferred) ? preferred : names[0];
}

// An f16 build has a program "<class>" for every device (devices.F16_PROGRAM): the f32 build's kernels
// with the weights widened to f32 as they are written (kind "widen"); and, where some kernel has a
// variant on subgroup matrices (tensor cores; MATRICES) or the products are convolutions, "<class>-f16",
// whose kernels read the f16 weights natively, taken on a device with shader-f16 and those matrices:
// where only the f16 arithmetic of linear layers was left, it was 2-5% slower than f32 on BERT, GPT-2
// and ViT (H200, docs/precision.md), so the build writes no "-f16" program for them without matrices
// (none for "cpu": software adapters offer none), and a runtime without MATRICES has no code for one.
const F16_PROGRAM = "-f16";
// each use spells out `F16 && b.kind === WIDEN`: behind a helper terser kept the widening code in the
// runtimes without F16 (+256 bytes gzip of runtime.plain.min.js)
const WIDEN = "widen";

// the device class by the adapter (or the device passed in), its program joined to what the classes share
async function loadModel(shared, deviceClasses, chunkUrls, options = {}) {
  options.signal?.throwIfAborted();
  const cache = openCache(shared, options); // meanwhile: the adapter, the class's module, the device
  const adapter = options.device ? undefined : await requestAdapter();
  const software = isSoftware(options.device ? options.device.adapterInfo : adapter.info);
  const name = chooseClass(MATRICES ? shared.classes.filter((n) => !n.endsWith(F16_PROGRAM)) : shared.classes, software, options.deviceClass);
  const wanted = MATRICES && shared.classes.includes(name + F16_PROGRAM) &&
    (options.device ? f16Matrices(options.device.features, options.device.adapterInfo) : f16Matrices(adapter.features, adapter.info));
  let { program: part } = await deviceClasses[wanted ? name + F16_PROGRAM : name]();
  // the "-f16" program may take more workgroup memory than WebGPU's default (kernels/attention_matrix.py):
  // where the adapter (or the device passed) has less, the plain program
  const half = wanted && !(part.workgroupBytes > (options.device ?? adapter).limits.maxComputeWorkgroupStorageSize);
  if (wanted && !half) ({ program: part } = await deviceClasses[name]());
  const { classes, format, dims: ranges, ...common } = shared;
  // a buffer is its size where its kind follows (an input's or output's, which their specs name, else
  // a weight's: describeBuffer), else [size, kind] (outfolder.ship_buffers)
  const buffers = part.buffers.map((b) => ({ size: b[0] ?? b, kind: b[1] }));
  return createModel({ ...common, ...part, buffers, ranges, deviceClass: name, ...(half && { half }) }, chunkUrls, options, adapter, software, cache);
}

async function requestDevice(adapter, program, need) {
  checkLimits(program, need, adapter.limits, "this GPU's adapter");
  // an f16 build's "-f16" program (program.half: loadModel took it, where the adapter has both
  // features) reads f16 weights natively; its f16m kernels run on subgroup matrices
  const half = MATRICES && program.half;
  return adapter.requestDevice({ requiredLimits: need.limits, ...(half && { requiredFeatures: ["shader-f16", ...(program.kernels.some((k) => k.f16m) ? [MATRIX] : [])] }) });
}

// subgroup matrices as kernels/gemm_matrix.py's variant needs them: f16 x f16 -> f32 blocks of
// 16 x 16 x 16, in subgroups of exactly 32 invocations
const MATRIX = "chromium-experimental-subgroup-matrix";
const f16Matrices = (features, info) => features.has("shader-f16") && tensorCores(features, info);
function tensorCores(features, info) {
  return features.has(MATRIX) && info?.subgroupMinSize === 32 && info.subgroupMaxSize === 32 &&
    [...(info.subgroupMatrixConfigs ?? [])].some((c) => c.componentType === "f16" && c.resultComponentType === "f32" && c.M === 16 && c.N === 16 && c.K === 16);
}

// a buffer's bytes on the GPU: a widened weight's size is that of its f16 values
const gpuBytes = F16 ? (b) => (b.kind === WIDEN ? 2 * b.size : b.size) : (b) => b.size;

// the limits the model needs, and for each what asks for it (to name it in an error)
function neededLimits(program) {
  const sizes = program.buffers.map(gpuBytes);
  const size = Math.max(4, Math.ceil(Math.max(0, ...sizes) / 4) * 4);
  const largest = `${describeBuffer(program, sizes.indexOf(Math.max(...sizes)))} is ${size} bytes`;
  // storage buffers a dispatch binds (the dims buffer is a uniform)
  const storage = program.dispatches.map((d) => (DIMS ? d[1].filter((b) => program.buffers[b].kind !== "dims").length : d[1].length));
  const bindings = Math.max(1, ...storage);
  const kernel = program.kernels[program.dispatches[storage.indexOf(bindings)]?.[0]]?.name;
  const memory = MATRICES && program.workgroupBytes; // emit.program_dict: only where it is over the default
  return {
    limits: { maxStorageBufferBindingSize: size, maxBufferSize: size, maxStorageBuffersPerShaderStage: bindings, ...(memory && { maxComputeWorkgroupStorageSize: memory }) },
    why: { maxStorageBufferBindingSize: largest, maxBufferSize: largest, maxStorageBuffersPerShaderStage: `kernel ${kernel} binds ${bindings} storage buffers`,
      ...(memory && { maxComputeWorkgroupStorageSize: `kernels take ${memory} bytes of workgroup memory` }) },
  };
}

// (a buffer without a kind is a weight's: loadModel)
function describeBuffer(program, index) {
  const input = program.inputs.find((s) => s.buffer === index);
  const output = program.outputs.find((s) => s.buffer === index);
  const what = input ? `input "${input.name}"` : output ? `output "${output.name}"` : program.buffers[index]?.kind ?? "weight";
  return `buffer ${index} (${what})`;
}

// before any buffer is made: a model that cannot fit is one clear error, not a validation error later
function checkLimits(program, need, limits, whose) {
  for (const [name, value] of Object.entries(need.limits)) {
    if (value > limits[name]) {
      throw new Error(`kuma: model ${program.model} cannot run here: its ${need.why[name]}, but ${whose} allows ${name} = ${limits[name]}. ` +
        `Use a device with larger limits (load() asks the adapter for what the model needs; a device passed as load({ device }) must have been requested with them).`);
    }
  }
}

// the WGSL of each kernel for this device (the one place a later choice between kernel sets goes);
// adapter: the one the device came from (undefined for load({ device }))
function kernelSources(program, device, adapter) {
  if (!MATRICES) return program.kernels; // { name, code } already
  const matrix = f16Matrices(device.features, adapter ? adapter.info : device.adapterInfo);
  return program.kernels.map((k) => ({ name: k.name, code: (matrix && k.f16m) || k.code }));
}

async function sha256(bytes) {
  if (!globalThis.crypto?.subtle) throw new Error("kuma: crypto.subtle is missing, so the weights cannot be verified; serve the page over https (WebGPU needs a secure context too).");
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

function delay(ms, signal) {
  return new Promise((resolve, reject) => {
    const stop = () => { clearTimeout(timer); reject(signal.reason); };
    const timer = setTimeout(() => { signal.removeEventListener("abort", stop); resolve(); }, ms);
    signal.addEventListener("abort", stop, { once: true });
  });
}

function retryAfterMs(response) {
  const value = response.headers.get("Retry-After");
  if (value === null) return undefined;
  const ms = /^\d+$/.test(value.trim()) ? Number(value) * 1000 : Date.parse(value) - Date.now();
  return Number.isFinite(ms) ? Math.min(Math.max(ms, 0), MAX_RETRY_AFTER_MS) : undefined;
}

// A body's bytes, at most size + 1 of them (one more means it is too long), and how many came.
// They land in slot.buffer, which each download worker reuses for all its chunks (the digest, the
// GPU upload and the cache's Response copy the bytes when called), and byte streams (fetch's) are
// read in place (BYOB): nothing is allocated per piece or per chunk, nothing left for the GC.
async function readBody(body, size, slot, onPiece) {
  let byob = null;
  try {
    byob = body.getReader({ mode: "byob" });
  } catch {
    // not a byte stream (a custom fetch's): copy each piece
  }
  const reader = byob ?? body.getReader();
  // a buffer lost in a failed read is detached (byteLength 0): make a new one
  if (!slot.buffer || slot.buffer.byteLength < size + 1) slot.buffer = new ArrayBuffer(Math.max(slot.room, size + 1));
  let buffer = slot.buffer;
  let at = 0;
  for (;;) {
    let piece;
    if (byob) {
      const { done, value } = await byob.read(new Uint8Array(buffer, at, size + 1 - at));
      if (value) buffer = slot.buffer = value.buffer; // the read moved the buffer into value
      if (done) break;
      piece = value.length;
    } else {
      const { done, value } = await reader.read();
      if (done) break;
      piece = value.length;
      new Uint8Array(buffer).set(value.subarray(0, size + 1 - at), at);
    }
    at += piece;
    if (at > size) {
      reader.cancel().catch(() => {});
      break;
    }
    onPiece(at);
  }
  return { bytes: new Uint8Array(buffer, 0, size), at };
}

// One download of a chunk: { bytes, at (how many came), type (Content-Type) }. `got(n)` is told of
// each piece; a stall (no bytes for ctx.timeout ms), a network error, a 5xx or a 429 throws
// Transient. A body that ends early or runs long came whole from the server (a dropped connection
// is a network error), so it is a wrong file, not a fault to retry: the caller checks it like a hash.
async function downloadOnce(url, size, ctx, cacheMode, got, slot) {
  const attempt = new AbortController();
  const abort = () => attempt.abort(ctx.signal.reason);
  ctx.signal.addEventListener("abort", abort, { once: true });
  let timer;
  const stalled = new Transient(`no bytes arrived for ${ctx.timeout} ms`);
  const alive = () => { clearTimeout(timer); timer = setTimeout(() => attempt.abort(stalled), ctx.timeout); };
  alive();
  try {
    const response = await ctx.fetch(url, { signal: attempt.signal, cache: cacheMode });
    const status = `HTTP ${response.status}${response.statusText ? " " + response.statusText : ""}`;
    if (response.status === 404 || response.status === 410) {
      throw new Error(`kuma: weight chunk ${url} is not on the server (${status}): the deployed files differ from this build of model ${ctx.model}. Deploy the model's whole output folder (index.js with its weights/) from one build.`);
    }
    if (response.status === 429 || response.status >= 500) throw new Transient(status, retryAfterMs(response));
    if (!response.ok) throw new Error(`kuma: fetching weight chunk ${url} failed: ${status}.`);
    if (!response.body || response.status === 204 || response.status === 205) {
      throw new Error(`kuma: weight chunk ${url} came back with no body (${status}); the server must send the file's ${size} bytes. Check the server or proxy configuration for this path.`);
    }
    const { bytes, at } = await readBody(response.body, size, slot, (at) => (alive(), got(at)));
    return { bytes, at, type: response.headers.get("Content-Type") ?? "" };
  } catch (error) {
    if (ctx.signal.aborted) throw ctx.signal.reason;
    if (attempt.signal.aborted && attempt.signal.reason === stalled) throw stalled;
    if (error instanceof TypeError) throw new Transient(error.message); // fetch's network errors
    throw error;
  } finally {
    clearTimeout(timer);
    ctx.signal.removeEventListener("abort", abort);
  }
}

// a chunk from the network, retrying transient faults with exponential backoff
async function download(url, size, ctx, cacheMode, got, slot) {
  for (let attempt = 1; ; attempt++) {
    ctx.signal.throwIfAborted();
    try {
      return await downloadOnce(url, size, ctx, cacheMode, got, slot);
    } catch (error) {
      if (!(error instanceof Transient)) throw error;
      if (attempt === ATTEMPTS) {
        throw new Error(`kuma: weight chunk ${url} could not be downloaded after ${ATTEMPTS} attempts (last: ${error.message}). Check the network connection and the server, then load again.`);
      }
      await delay(error.retryAfterMs ?? BACKOFF_MS * 2 ** (attempt - 1) * (0.5 + Math.random()), ctx.signal);
    }
  }
}

// the model's chunk cache and the keys in it, or null: opted out, no Cache API (http pages), or
// storage refused. The keys spare a cold load a lookup per chunk.
async function openCache(program, options) {
  if (options.cache === false || typeof caches === "undefined") return null;
  try {
    const cache = await caches.open(`kuma:${program.model}`);
    return { cache, cachedKeys: new Set((await cache.keys()).map((request) => request.url)) };
  } catch {
    return null;
  }
}

// keys are content hashes, so a new build finds its unchanged chunks under the same keys
const cacheKey = (chunk) => `https://kuma.invalid/chunks/${chunk.id}`;

// whether chunk i's bytes hash to a SHA-256 that begins with its id; remembers the SHA-256 for checkDigest
async function verified(ctx, i, bytes) {
  ctx.digests[i] = await sha256(bytes);
  return ctx.digests[i].startsWith(ctx.chunks[i].id);
}

// every chunk's whole SHA-256 at once, before load() resolves; on a mismatch (which chunk is not
// known) the model's cached chunks are dropped, so the next load fetches them all
async function checkDigest(program, ctx) {
  if (!ctx.digests.length || (await sha256(new TextEncoder().encode(ctx.digests.join("")))) === program.digest) return;
  await Promise.all(program.chunks.map((chunk) => ctx.cache?.delete(cacheKey(chunk)))).catch(() => {});
  throw new Error(`kuma: the weight chunks of model ${program.model} do not match this build in full (SHA-256): the deployed files differ from the build. Deploy the model's whole output folder from one build.`);
}

async function fromCache(ctx, i, chunk, slot) {
  if (!ctx.cache || !ctx.cachedKeys.has(cacheKey(chunk))) return null;
  try {
    const hit = await ctx.cache.match(cacheKey(chunk));
    if (!hit) return null;
    const { bytes, at } = await readBody(hit.body, chunk.size, slot, () => {});
    if (at === chunk.size && (await verified(ctx, i, bytes))) return bytes;
    await ctx.cache.delete(cacheKey(chunk)); // damaged: fetched again below
  } catch (error) {
    ctx.signal.throwIfAborted();
  }
  return null;
}

async function toCache(ctx, chunk, bytes) {
  if (!ctx.cache) return;
  try {
    await ctx.cache.put(cacheKey(chunk), new Response(bytes, { headers: { "Content-Type": "application/octet-stream" } }));
  } catch (error) {
    // quota or storage errors: load the rest without the cache, never fail the load
    console.warn(`kuma: the browser cache refused weight chunks of model ${ctx.model} (${error.name}: ${error.message}); loading without it.`);
    ctx.cache = null;
  }
}

// After load() resolved: each chunk that came from the network goes into the cache, read back from
// the GPU buffers it was written to, one chunk at a time (JS memory holds one). Storing costs the
// browser tens of ms of CPU per MiB; done during the downloads, it slowed them (docs/benchmarks.md).
// A chunk this class uses only in part does not come back whole: it fails its hash and is skipped.
// Stops storing when the device is lost or the cache is full. Never rejects.
async function storeChunks(ctx, program, device, buffers, copies, usable) {
  const cache = ctx.cache;
  if (!cache) return;
  for (const i of ctx.downloaded) {
    if (!ctx.cache || !usable()) break;
    const chunk = program.chunks[i];
    // a widened weight's f32 values land after the chunk's bytes and are narrowed back into them
    const wide = F16 ? copies[i].filter((copy) => program.buffers[copy[2]].kind === WIDEN) : [];
    const end = Math.ceil(chunk.size / 4) * 4;
    const readback = device.createBuffer({ size: F16 ? wide.reduce((at, copy) => at + 2 * copy[4], end) : end, usage: USAGE_READBACK });
    try {
      device.pushErrorScope("validation");
      const encoder = device.createCommandEncoder();
      for (const [, chunkOffset, buffer, bufferOffset, size] of copies[i]) {
        if (!(F16 && program.buffers[buffer].kind === WIDEN)) encoder.copyBufferToBuffer(buffers[buffer], bufferOffset, readback, chunkOffset, size);
      }
      if (F16) wide.reduce((at, [, , buffer, bufferOffset, size]) => (encoder.copyBufferToBuffer(buffers[buffer], 2 * bufferOffset, readback, at, 2 * size), at + 2 * size), end);
      device.queue.submit([encoder.finish()]);
      const invalid = await device.popErrorScope();
      await readback.mapAsync(1); // GPUMapMode.READ
      let bytes = new Uint8Array(readback.getMappedRange(), 0, chunk.size);
      if (F16 && wide.length) bytes = narrowed(bytes, wide, end);
      if (!invalid && (await sha256(bytes)) === ctx.digests[i]) await toCache(ctx, chunk, bytes); // the Response copies them
    } catch {
      break; // the device was lost meanwhile
    } finally {
      readback.destroy();
    }
  }
  await evictStale(cache, program);
}

// A widened weight's f16 values (bit patterns, little-endian as the GPU's) as f32 bit patterns, and
// back for the cache: exact both ways, NaN payloads included, so a stored chunk hashes as it came.
function widened(bytes, offset, size) {
  const half = new Uint16Array(bytes.buffer, bytes.byteOffset + offset, size / 2);
  const out = new Uint32Array(half.length);
  for (let i = 0; i < half.length; i++) {
    const h = half[i], sign = (h & 0x8000) << 16, e = (h >> 10) & 31, m = h & 1023;
    if (e === 31) out[i] = sign | 0x7f800000 | (m << 13);
    else if (e) out[i] = sign | ((e + 112) << 23) | (m << 13);
    else if (m) { // subnormal: m * 2^-24, normal as f32
      const shift = Math.clz32(m) - 21; // shifts m's leading 1 to bit 10
      out[i] = sign | ((113 - shift) << 23) | (((m << shift) & 1023) << 13);
    } else out[i] = sign;
  }
  return out;
}

// a copy of a chunk read back (its mapped range is not ours to write) with its widened copies' f32
// values, which follow it from `at` on, narrowed back into place
function narrowed(bytes, wide, at) {
  const out = bytes.slice();
  for (const [, chunkOffset, , , size] of wide) {
    const words = new Uint32Array(bytes.buffer, at, size / 2), half = new Uint16Array(out.buffer, chunkOffset, size / 2);
    for (let i = 0; i < words.length; i++) {
      const w = words[i], sign = (w >>> 16) & 0x8000, e = (w >>> 23) & 255, m = w & 0x7fffff;
      if (e === 255) half[i] = sign | 0x7c00 | (m >>> 13);
      else if (e >= 113) half[i] = sign | ((e - 112) << 10) | (m >>> 13);
      else if (e) half[i] = sign | ((m | 0x800000) >>> (126 - e)); // one of widened's subnormals
      else half[i] = sign;
    }
    at += 2 * size;
  }
  return out;
}

// drop the cached chunks this build no longer uses (older builds of the model)
async function evictStale(cache, program) {
  try {
    const used = new Set(program.chunks.map(cacheKey));
    for (const request of await cache.keys()) if (!used.has(request.url)) await cache.delete(request);
  } catch {
    // eviction is housekeeping: the next load tries again
  }
}

// The verified bytes of chunk i: from the cache, else downloaded, else downloaded once more
// bypassing every cache on a hash mismatch.
async function chunkBytes(program, urls, i, ctx, slot) {
  const chunk = program.chunks[i];
  let counted = 0; // bytes of this chunk already reported, so retries never count twice
  const got = (at) => {
    if (at > counted) ctx.progress(at - counted);
    counted = Math.max(counted, at);
  };
  const cached = await fromCache(ctx, i, chunk, slot);
  if (cached) {
    got(chunk.size);
    return cached;
  }
  for (const cacheMode of ["default", "reload"]) {
    const { bytes, at, type } = await download(urls[i], chunk.size, ctx, cacheMode, got, slot);
    if (at === chunk.size && (await verified(ctx, i, bytes))) {
      ctx.downloaded.push(i); // stored after the load (storeChunks)
      return bytes;
    }
    if (cacheMode === "reload") {
      const found = at === chunk.size ? `its SHA-256 is ${ctx.digests[i]}, the build's begins ${chunk.id}`
        : at > chunk.size ? `it is longer than the build's ${chunk.size} bytes` : `it is ${at} bytes, the build's ${chunk.size}`;
      const page = type.includes("text/html") ? " The server answered with an HTML page: does it serve a fallback page for missing files?" : "";
      throw new Error(`kuma: weight chunk ${urls[i]} does not match this build of model ${program.model} (${found}), also when fetched again bypassing caches: ` +
        `the deployed files differ from the build, or the server or a proxy alters them. Deploy the model's whole output folder from one build.${page}`);
    }
  }
}

// the program's copies [chunk, offset, buffer, offset, size], a bare buffer index being the one that
// follows from the copy before it (outfolder.next_copy: the next bytes, as many as both hold)
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

// Streams the chunks this class uses into the buffers, CONCURRENCY at a time (index.js lists every
// class's: a class whose passes treated a weight differently needs a chunk the others do not). On the first failure the other
// downloads are aborted and awaited, so nothing writes to the buffers after this rejects. Resolves
// with store(usable), which puts the downloaded chunks into the cache (storeChunks).
async function uploadChunks(program, urls, buffers, device, options, opened) {
  const copies = program.chunks.map(() => []);
  for (const copy of copyList(program)) copies[copy[0]].push(copy);
  const total = program.chunks.reduce((sum, chunk, i) => sum + (copies[i].length && chunk.size), 0); // this class's
  let loaded = 0;
  options.onProgress?.(0, total);
  const stop = new AbortController();
  const abort = () => stop.abort(options.signal.reason);
  options.signal?.addEventListener("abort", abort, { once: true });
  if (options.signal?.aborted) abort();
  const ctx = {
    model: program.model,
    fetch: options.fetch ?? globalThis.fetch.bind(globalThis),
    signal: stop.signal,
    timeout: options.timeout ?? STALL_MS,
    cache: null,
    cachedKeys: new Set(),
    ...(await opened), // the cache and its keys, if open
    downloaded: [], // indices of the chunks that came from the network, verified
    chunks: program.chunks,
    digests: [], // each used chunk's SHA-256 at its index, for checkDigest
    progress(bytes) {
      loaded += bytes;
      options.onProgress?.(loaded, total);
    },
  };
  let next = 0;
  let failure = null;
  const room = Math.max(0, ...program.chunks.map((c) => c.size)) + 1;
  async function worker() {
    const slot = { buffer: null, room };
    while (next < program.chunks.length && !failure) {
      const i = next++;
      if (!copies[i].length) continue; // another class's chunk
      try {
        const bytes = await chunkBytes(program, urls, i, ctx, slot);
        if (failure) return;
        for (const [, chunkOffset, buffer, bufferOffset, size] of copies[i]) {
          if (F16 && program.buffers[buffer].kind === WIDEN) device.queue.writeBuffer(buffers[buffer], 2 * bufferOffset, widened(bytes, chunkOffset, size));
          else device.queue.writeBuffer(buffers[buffer], bufferOffset, bytes, chunkOffset, size);
        }
      } catch (error) {
        failure ??= { error };
        stop.abort(error);
      }
    }
  }
  try {
    await Promise.all(Array.from({ length: Math.min(CONCURRENCY, program.chunks.length) }, worker));
  } finally {
    options.signal?.removeEventListener("abort", abort);
  }
  if (failure) throw failure.error;
  await checkDigest(program, ctx);
  return (usable) => storeChunks(ctx, program, device, buffers, copies, usable);
}

async function createModel(program, chunkUrls, options, adapter, software, cache) {
  options.signal?.throwIfAborted();
  const need = neededLimits(program);
  const ownsDevice = !options.device;
  const device = options.device ?? (await requestDevice(adapter, program, need));
  const made = [];
  let scoped = false;
  try {
    checkLimits(program, need, device.limits, "this device");
    const buffers = program.buffers.map((b) => device.createBuffer({ size: Math.max(4, Math.ceil(gpuBytes(b) / 4) * 4), usage: DIMS && b.kind === "dims" ? USAGE_DIMS : USAGE_STORAGE }));
    made.push(...buffers);
    device.pushErrorScope("validation");
    scoped = true;
    const pipelines = Promise.all(kernelSources(program, device, adapter).map(async ({ name, code }) => {
      const module = device.createShaderModule({ label: name, code });
      try {
        return await device.createComputePipelineAsync({ label: name, layout: "auto", compute: { module, entryPoint: "main" } });
      } catch (e) {
        const info = await module.getCompilationInfo();
        const messages = info.messages.map((m) => `line ${m.lineNum}: ${m.message}`).join("; ");
        throw new Error(`kuma: kernel ${name} of model ${program.model} does not compile on this device: ${messages || e.message}`);
      }
    }));
    pipelines.catch(() => {}); // awaited below; a failed download must not leave it unhandled
    const store = await uploadChunks(program, chunkUrls, buffers, device, options, cache);
    const compiled = await pipelines;
    const binds = program.dispatches.map(([kernel, bound, groups, when]) => ({
      pipeline: compiled[kernel],
      groups,
      when,
      bindGroup: device.createBindGroup({
        layout: compiled[kernel].getBindGroupLayout(0),
        entries: bound.map((b, i) => ({ binding: i, resource: { buffer: buffers[b] } })),
      }),
    }));
    scoped = false;
    const error = await device.popErrorScope();
    if (error) throw new Error(`kuma: model ${program.model} failed to load on this device: ${error.message}`);
    const readbacks = program.outputs.map((o) => device.createBuffer({ size: program.buffers[o.buffer].size, usage: USAGE_READBACK }));
    made.push(...readbacks);
    // warm-up: drivers finish pipelines and allocations lazily at their first dispatch; pay that
    // here (on the zeroed inputs) rather than in the caller's first run()
    // a software adapter compiles at pipeline creation, so its first run is no slower and the
    // warm-up would only be a whole run of the model on the CPU (measured: docs/benchmarks.md)
    const dims = dimsWriter(program, device, buffers);
    if (options.warmup ?? !software) {
      const least = !DIMS ? {} : Object.fromEntries(Object.entries(program.ranges ?? {}).map(([name, range]) => [name, range.min]));
      if (DIMS) dims(least);
      const submit = (buffer) => device.queue.submit([buffer]);
      submit(encodeDispatches(device, binds, least, submit));
      await device.queue.onSubmittedWorkDone();
    }
    resetState(program, device, buffers); // after the warm-up, which wrote to them
    options.signal?.throwIfAborted();
    return runnable(program, device, ownsDevice, buffers, binds, readbacks, store, dims);
  } catch (error) {
    if (scoped) device.popErrorScope().catch(() => {});
    for (const b of made) b.destroy();
    if (ownsDevice) device.destroy();
    throw error;
  }
}

// every dispatch of the plan, a compute pass per command buffer: all but the last handed to `flush`
// on the way (SUBMIT_FIRST), the last returned. A count { size, per } is ceil(size / per) at the dims'
// values, and a dispatch with no workgroups at them, or for other values ({ dim: [low, high] }: a
// kernel for few rows), is left out.
function encodeDispatches(device, binds, values, flush) {
  let encoder = device.createCommandEncoder();
  let pass = encoder.beginComputePass();
  let count = 0;
  let next = SUBMIT_FIRST;
  for (const { pipeline, bindGroup, groups, when = {} } of binds) {
    const [x, y, z] = !DIMS ? groups : groups.map((g) => (g.per ? Math.ceil(size(g.size, values) / g.per) : g));
    if (!x || (DIMS && Object.entries(when).some(([name, [low, high]]) => values[name] < low || values[name] > high))) continue;
    if (count++ === next) {
      pass.end();
      flush(encoder.finish());
      encoder = device.createCommandEncoder();
      pass = encoder.beginComputePass();
      next *= SUBMIT_GROWTH;
    }
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(x, y, z);
  }
  pass.end();
  return encoder.finish();
}

// writes the dims' values to the dims uniform (one u32 each, in the class program's order) when they change
function dimsWriter(program, device, buffers) {
  if (!DIMS) return () => {};
  const buffer = buffers[program.buffers.findIndex((b) => b.kind === "dims")];
  let written = "";
  return (values) => {
    if (!buffer) return;
    const words = Uint32Array.from(program.dims, (name) => values[name]);
    if (String(words) === written) return;
    device.queue.writeBuffer(buffer, 0, words);
    written = String(words);
  };
}

// every state buffer back to its initial value: a copy of its init buffer, or zeros
function resetState(program, device, buffers) {
  const states = program.state ?? [];
  if (!STATE || !states.length) return;
  const encoder = device.createCommandEncoder();
  for (const { buffer, init } of states) {
    if (init === null) encoder.clearBuffer(buffers[buffer]);
    else encoder.copyBufferToBuffer(buffers[init], 0, buffers[buffer], 0, buffers[buffer].size);
  }
  device.queue.submit([encoder.finish()]);
}

const isGPUBuffer = (value) => typeof GPUBuffer !== "undefined" && value instanceof GPUBuffer;

// the outputs run(inputs, { read }) reads back: their indices in program.outputs
function readIndices(program, options) {
  if (options == null || options.read === undefined) return program.outputs.map((_, i) => i);
  const names = program.outputs.map((o) => `"${o.name}"`).join(", ");
  if (!Array.isArray(options.read)) throw new TypeError(`kuma: run()'s read option is an array of output names (${names}).`);
  for (const name of options.read) {
    if (!program.outputs.some((o) => o.name === name)) throw new TypeError(`kuma: run() cannot read unknown output "${name}"; model ${program.model} has ${names}.`);
  }
  return program.outputs.flatMap((o, i) => (options.read.includes(o.name) ? [i] : []));
}

// " with seq = 5, ...": the values of the dims an input's shape names (for messages)
function withDims(spec, values) {
  if (!DIMS) return "";
  const known = spec.shape.filter((d) => typeof d === "string" && d in values).map((d) => `${d} = ${values[d]}`);
  return known.length ? ` with ${known.join(", ")}` : "";
}

// each dim's value from the input lengths: an input whose other dims are known gives its one
// unknown dim (as config.py checks that every dim can be), a typed array before a GPUBuffer;
// takeInputs then checks every length (a GPUBuffer may be longer, as for a model without dims)
function inferDims(program, inputs) {
  if (!DIMS) return {};
  const values = {};
  const ranges = program.ranges ?? {};
  // typed arrays first: a GPUBuffer (another run's output, planned for the maxima) may be longer than the input
  const specs = [...program.inputs].sort((a, b) => isGPUBuffer(inputs[a.name]) - isGPUBuffer(inputs[b.name]));
  for (let pass = 0; pass < Object.keys(ranges).length; pass++) {
    for (const spec of specs) {
      const unknown = spec.shape.filter((d) => typeof d === "string" && !(d in values));
      if (unknown.length !== 1) continue;
      const [dim] = unknown;
      const { min, max } = ranges[dim];
      const array = inputs[spec.name];
      const length = isGPUBuffer(array) ? array.size / 4 : array.length;
      const rest = numel(spec.shape, { ...values, [dim]: 1 });
      if (!(Number.isInteger(length / rest) && length / rest >= min && length / rest <= max)) {
        throw new RangeError(`kuma: input "${spec.name}" has ${length} values; its shape [${spec.shape}]${withDims(spec, values)} takes ${dim} from ${min} to ${max}, ` +
          `so it needs ${rest * min} to ${rest * max} values${rest > 1 ? `, a multiple of ${rest}` : ""}`);
      }
      values[dim] = length / rest;
    }
  }
  return values;
}

// the inputs of one run, checked; copied now (copy) when the run waits behind others, so that the
// caller may reuse its arrays at once (a run that starts at once writes them before run() returns,
// and a GPUBuffer is copied on the GPU when the run is submitted)
function takeInputs(program, inputs, copy) {
  const names = program.inputs.map((s) => `"${s.name}"`).join(", ");
  if (inputs === null || typeof inputs !== "object") {
    throw new TypeError(`kuma: run() takes an object mapping each input name (${names}) to a typed array, got ${inputs === null ? "null" : typeof inputs}.`);
  }
  for (const name of Object.keys(inputs)) {
    if (!program.inputs.some((s) => s.name === name)) throw new TypeError(`kuma: run() got an unknown input "${name}"; model ${program.model} takes ${names}.`);
  }
  for (const spec of program.inputs) {
    const array = inputs[spec.name];
    const Type = ARRAY_TYPES[spec.dtype];
    if (array === undefined) throw new TypeError(`kuma: run() is missing input "${spec.name}"`);
    if (isGPUBuffer(array)) {
      if (!(array.usage & GPUBufferUsage.COPY_SRC)) throw new TypeError(`kuma: GPUBuffer for input "${spec.name}" needs the COPY_SRC usage`);
    } else if (!(array instanceof Type || (spec.dtype === "int32" && array instanceof BigInt64Array))) {
      throw new TypeError(`kuma: input "${spec.name}" must be a ${Type.name}`);
    }
  }
  const values = inferDims(program, inputs);
  const arrays = program.inputs.map((spec) => {
    const array = inputs[spec.name];
    const count = numel(spec.shape, values);
    if (isGPUBuffer(array)) {
      if (array.size < count * 4) throw new RangeError(`kuma: GPUBuffer for input "${spec.name}" has ${array.size} bytes; it needs ${count * 4} (shape [${spec.shape}]${withDims(spec, values)}, ${spec.dtype})`);
      return array;
    }
    if (array.length !== count) throw new RangeError(`kuma: input "${spec.name}" needs ${count} values (shape [${spec.shape}]${withDims(spec, values)}), got ${array.length}`);
    return spec.dtype === "int32" && array instanceof BigInt64Array ? Int32Array.from(array, Number) : copy ? array.slice() : array;
  });
  return { arrays, values };
}

function runnable(program, device, ownsDevice, buffers, binds, readbacks, store, dims) {
  let queue = Promise.resolve();
  let disposed = false;
  let lostInfo = null;
  const lost = device.lost.then((info) => (lostInfo = info));

  // why this model cannot run any more, or null
  function unusable() {
    if (disposed) return `kuma: run() on model ${program.model} after dispose(): its GPU buffers are gone; load() it again.`;
    if (lostInfo) return `kuma: the GPU device of model ${program.model} was lost (${lostInfo.reason}: ${lostInfo.message}); load() the model again.`;
    return null;
  }
  function checkUsable() {
    const why = unusable();
    if (why) throw new Error(why);
  }

  // the cache's stores begin once the caller has the model (and may have started its first run);
  // they read the buffers back, so dispose() destroys them only after the stores
  const cached = new Promise((resolve) => setTimeout(resolve, 0)).then(() => store(() => lostInfo === null));

  // The next run's command buffers (its dispatches at the same dims' values), encoded while this
  // run's outputs come back: that run only submits them, so the GPU starts at once and never waits
  // for the host's encoding (Dawn's frontend and the JS calls, ~2 µs a dispatch: bench/gpu/dawn/host.mjs).
  let ahead = null;

  async function execute({ arrays, values }, read) {
    checkUsable();
    const queue = device.queue;
    let copyIn = null; // the GPUBuffer inputs, copied in the first submit, before the dispatches
    program.inputs.forEach((spec, i) => {
      const target = buffers[spec.buffer];
      if (isGPUBuffer(arrays[i])) (copyIn ??= device.createCommandEncoder()).copyBufferToBuffer(arrays[i], 0, target, 0, 4 * numel(spec.shape, values));
      else queue.writeBuffer(target, 0, arrays[i]);
    });
    if (DIMS) dims(values);
    const submit = (buffer, after = []) => {
      queue.submit(copyIn ? [copyIn.finish(), buffer, ...after] : [buffer, ...after]);
      copyIn = null;
    };
    const key = DIMS ? JSON.stringify(values) : "";
    const encoded = ahead?.key === key ? ahead.buffers : null;
    ahead = null;
    const last = encoded ? encoded.pop() : encodeDispatches(device, binds, values, submit);
    encoded?.forEach((buffer) => submit(buffer));
    const copyOut = device.createCommandEncoder();
    const bytes = read.map((i) => 4 * numel(program.outputs[i].shape, values));
    read.forEach((i, k) => copyOut.copyBufferToBuffer(buffers[program.outputs[i].buffer], 0, readbacks[i], 0, bytes[k]));
    submit(last, [copyOut.finish()]);
    const next = [];
    const tail = encodeDispatches(device, binds, values, (buffer) => next.push(buffer));
    ahead = { key, buffers: [...next, tail] };
    // the output arrays, made (their memory touched) while the GPU works: after it, only a copy
    const result = Object.fromEntries(read.map((i, k) => [program.outputs[i].name, new ARRAY_TYPES[program.outputs[i].dtype](bytes[k] / 4).fill(0)]));
    try {
      await Promise.all(read.map((i) => readbacks[i].mapAsync(1)));
    } catch (error) {
      throw new Error(unusable() ?? `kuma: reading the outputs of model ${program.model} failed: ${error.name}: ${error.message}`);
    }
    read.forEach((i, k) => {
      const output = result[program.outputs[i].name];
      output.set(new output.constructor(readbacks[i].getMappedRange(0, bytes[k])));
      readbacks[i].unmap();
    });
    return result;
  }

  // runs and resets are queued: they share the readback buffers and the state. With none pending,
  // one starts at once: its writes and submits happen within run(), with no copy of the inputs
  // (for an image's 0.6 MB, ~40 µs of host time on Dawn: bench/gpu/dawn/host.mjs)
  let pending = 0;
  function enqueue(work) {
    const next = (pending++ ? queue.then(work) : new Promise((resolve) => resolve(work()))).finally(() => pending--);
    queue = next.catch(() => {});
    return next;
  }

  return {
    device,
    deviceClass: program.deviceClass,
    inputs: tensorInfo(program.inputs),
    outputs: tensorInfo(program.outputs),
    // resolves with the GPUDeviceLostInfo ({ reason, message }) when the device is lost or destroyed
    lost,
    // resolves once the weight chunks are in the browser cache for the next load (never rejects)
    cached,
    run(inputs, options) {
      let taken, read;
      try {
        checkUsable();
        taken = takeInputs(program, inputs, pending > 0);
        read = readIndices(program, options);
      } catch (error) {
        return Promise.reject(error);
      }
      return enqueue(() => execute(taken, read));
    },
    // the GPUBuffer holding output `name` of the latest run (the model's own: the next run overwrites it)
    outputBuffer(name) {
      const spec = program.outputs.find((o) => o.name === name);
      if (!spec) throw new TypeError(`kuma: model ${program.model} has no output "${name}".`);
      checkUsable();
      return buffers[spec.buffer];
    },
    // state buffers back to their initial values, after the runs already called
    reset() {
      return enqueue(() => {
        checkUsable();
        resetState(program, device, buffers);
      });
    },
    dispose() {
      if (disposed) return;
      disposed = true;
      cached.then(() => {
        for (const b of [...buffers, ...readbacks]) b.destroy();
        if (ownsDevice) device.destroy();
      });
    },
  };
}
