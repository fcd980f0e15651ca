// In-page side of the browser benchmark: loads Kuma's module and ONNX Runtime
// Web for one model in the same page, then times them turn by turn, so both
// see the same machine load (this machine is shared and noisy). run.mjs
// serves this file and calls benchModel through page.evaluate.
//
// load time = import of the engine's code + model load + the first run's
// outputs back on the CPU. Latency = one run with its read back, after
// `warmup` runs of each engine; rounds (one timed run of each engine) go on
// until minRuns rounds and budgetMs have both passed (at most maxRuns), and
// each engine's median is reported. An engine that fails is reported and left
// out of the rounds. Tensors cross as base64 of their little-endian bytes.

const ARRAYS = { float32: Float32Array, int32: Int32Array, int64: BigInt64Array };

function decode({ dtype, data }) {
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  return new ARRAYS[dtype](bytes.buffer);
}

function encode(dtype, shape, array) {
  const bytes = new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return { dtype, shape, data: btoa(text) };
}

// Kuma: the emitted index.js; run() returns typed arrays already read back
async function loadKuma({ moduleUrl, inputs }) {
  const feed = Object.fromEntries(Object.entries(inputs).map(([name, spec]) => [name, decode(spec)]));
  const started = performance.now();
  const { load } = await import(moduleUrl);
  const model = await load();
  let result = await model.run(feed);
  return {
    loadMs: performance.now() - started,
    run: async () => { result = await model.run(feed); },
    outputs: () => Object.fromEntries(model.outputs.map(({ name, shape, dtype }) => [name, encode(dtype, shape, result[name])])),
    dispose: async () => model.dispose(),
  };
}

// ONNX Runtime Web, WebGPU execution provider, default session options; outputs
// come back on the CPU (its default location)
async function loadOrt({ ortUrl, modelUrl, inputs }) {
  const arrays = Object.entries(inputs).map(([name, spec]) => [name, spec, decode(spec)]);
  const started = performance.now();
  const ort = await import(ortUrl);
  ort.env.wasm.numThreads = 1; // the page is not cross-origin isolated: no wasm threads either way
  ort.env.logLevel = "warning";
  const session = await ort.InferenceSession.create(modelUrl, { executionProviders: ["webgpu"] });
  const feeds = Object.fromEntries(arrays.map(([name, spec, data]) => [name, new ort.Tensor(spec.dtype, data, spec.shape)]));
  const readBack = async () => {
    const result = await session.run(feeds);
    for (const tensor of Object.values(result)) if (tensor.location !== "cpu") await tensor.getData(true);
    return result;
  };
  let result = await readBack();
  return {
    loadMs: performance.now() - started,
    run: async () => { result = await readBack(); },
    outputs: () => Object.fromEntries(session.outputNames.map((name) => [name, encode(result[name].type, result[name].dims, result[name].data)])),
    dispose: () => session.release(),
  };
}

const LOADERS = { kuma: loadKuma, ort: loadOrt };

function summary(times) {
  const sorted = [...times].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const medianMs = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  return { medianMs, minMs: sorted[0], maxMs: sorted.at(-1), runs: times.length };
}

// engines: {kuma?: args, ort?: args}; returns {adapter, engines: {name: {ok, error?, loadMs, medianMs, ..., outputs}}}
export async function benchModel({ engines, timing }) {
  const { warmup, minRuns, maxRuns, budgetMs } = timing;
  const results = {};
  const live = {};
  const fail = (name, what, error) => {
    results[name] = { ok: false, error: `${what}: ${error?.message ?? error}` };
    delete live[name];
  };
  for (const [name, args] of Object.entries(engines)) {
    try {
      live[name] = await LOADERS[name](args);
      results[name] = { ok: true, loadMs: live[name].loadMs, times: [] };
    } catch (error) {
      fail(name, "load", error);
    }
  }
  const runEach = async (record) => {
    for (const [name, engine] of Object.entries(live)) {
      try {
        const t = performance.now();
        await engine.run();
        if (record) results[name].times.push(performance.now() - t);
      } catch (error) {
        fail(name, "run", error);
      }
    }
  };
  for (let i = 0; i < warmup; i++) await runEach(false);
  const started = performance.now();
  for (let round = 0; round < maxRuns && (round < minRuns || performance.now() - started < budgetMs); round++) {
    if (!Object.keys(live).length) break;
    await runEach(true);
  }
  for (const [name, engine] of Object.entries(live)) {
    const { times, ...rest } = results[name];
    results[name] = { ...rest, ...summary(times), outputs: engine.outputs() };
    await engine.dispose();
  }
  const info = (await navigator.gpu?.requestAdapter())?.info;
  return { adapter: info ? { vendor: info.vendor, architecture: info.architecture } : null, engines: results };
}
