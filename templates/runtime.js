// kuma runtime: runs a compiled program on WebGPU.
// all pipelines and bind groups are made once at load; each run() is one
// command encoder with one compute pass, and the only CPU wait is the final
// read of the outputs.

const USAGE_STORAGE = 0x80 | 0x08 | 0x04; // STORAGE | COPY_DST | COPY_SRC
const USAGE_READBACK = 0x01 | 0x08; // MAP_READ | COPY_DST
const ARRAY_TYPES = { float32: Float32Array, int32: Int32Array };

// what the model tells its caller about a tensor (TensorInfo in runtime.d.ts): not the buffer index
function tensorInfo(specs) {
  return specs.map(({ name, shape, dtype }) => ({ name, shape, dtype }));
}

async function requestDevice(program) {
  if (typeof navigator === "undefined" || !navigator.gpu) {
    throw new Error("kuma: WebGPU is not available in this browser (navigator.gpu is missing). Use a browser with WebGPU enabled, or pass load({ device }).");
  }
  const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) throw new Error("kuma: no WebGPU adapter found; the browser or GPU driver does not support WebGPU here.");
  const need = neededLimits(program);
  const requiredLimits = {};
  for (const [name, value] of Object.entries(need)) {
    if (value > adapter.limits[name]) {
      throw new Error(`kuma: model ${program.model} needs ${name} >= ${value}, but this GPU allows ${adapter.limits[name]}.`);
    }
    requiredLimits[name] = value;
  }
  // f16 weights: kernels have a native-f16 variant; ask for the feature only when it is there
  const requiredFeatures = program.kernels.some((k) => k.f16) && adapter.features.has("shader-f16") ? ["shader-f16"] : [];
  return adapter.requestDevice({ requiredLimits, requiredFeatures });
}

function neededLimits(program) {
  const largest = Math.max(4, ...program.buffers.map((b) => b.size));
  const bindings = Math.max(1, ...program.dispatches.map(([, buffers]) => buffers.length));
  return { maxStorageBufferBindingSize: largest, maxBufferSize: largest, maxStorageBuffersPerShaderStage: bindings };
}

async function fetchChunks(program, urls, fetchImpl, onProgress) {
  const total = program.chunks.reduce((sum, c) => sum + c.size, 0);
  let loaded = 0;
  onProgress?.(0, total);
  return Promise.all(urls.map(async (url, i) => {
    const response = await fetchImpl(url);
    if (!response.ok) throw new Error(`kuma: fetching weight chunk ${url} failed: HTTP ${response.status}`);
    const bytes = new Uint8Array(program.chunks[i].size);
    let at = 0;
    const reader = response.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (at + value.length > bytes.length) throw new Error(`kuma: weight chunk ${url} is larger than the build said; rebuild the model.`);
      bytes.set(value, at);
      at += value.length;
      loaded += value.length;
      onProgress?.(loaded, total);
    }
    if (at !== bytes.length) throw new Error(`kuma: weight chunk ${url} is truncated (${at} of ${bytes.length} bytes).`);
    return bytes;
  }));
}

async function createModel(program, chunkUrls, options = {}) {
  const ownsDevice = !options.device;
  const device = options.device ?? (await requestDevice(program));
  const buffers = program.buffers.map((b) => device.createBuffer({ size: Math.max(4, Math.ceil(b.size / 4) * 4), usage: USAGE_STORAGE }));

  device.pushErrorScope("validation");
  const pipelines = Promise.all(program.kernels.map(async (k) => {
    const module = device.createShaderModule({ label: k.name, code: (device.features.has("shader-f16") && k.f16) || k.code });
    try {
      return await device.createComputePipelineAsync({ label: k.name, layout: "auto", compute: { module, entryPoint: "main" } });
    } catch (e) {
      const info = await module.getCompilationInfo();
      const messages = info.messages.map((m) => `line ${m.lineNum}: ${m.message}`).join("; ");
      throw new Error(`kuma: kernel ${k.name} of model ${program.model} does not compile on this device: ${messages || e.message}`);
    }
  }));
  const chunks = fetchChunks(program, chunkUrls, options.fetch ?? globalThis.fetch.bind(globalThis), options.onProgress);
  const [compiled, data] = await Promise.all([pipelines, chunks]);
  for (const [chunk, chunkOffset, buffer, bufferOffset, size] of program.copies) {
    device.queue.writeBuffer(buffers[buffer], bufferOffset, data[chunk], chunkOffset, size);
  }
  const binds = program.dispatches.map(([kernel, bound, groups]) => ({
    pipeline: compiled[kernel],
    groups,
    bindGroup: device.createBindGroup({
      layout: compiled[kernel].getBindGroupLayout(0),
      entries: bound.map((b, i) => ({ binding: i, resource: { buffer: buffers[b] } })),
    }),
  }));
  const error = await device.popErrorScope();
  if (error) throw new Error(`kuma: model ${program.model} failed to load on this device: ${error.message}`);

  const readbacks = program.outputs.map((o) => device.createBuffer({ size: program.buffers[o.buffer].size, usage: USAGE_READBACK }));
  let queue = Promise.resolve();

  function encodePass(encoder) {
    const pass = encoder.beginComputePass();
    for (const { pipeline, bindGroup, groups } of binds) {
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(groups[0], groups[1], groups[2]);
    }
    pass.end();
  }

  // warm-up: drivers finish pipelines and allocations lazily at their first dispatch; pay that
  // here (on the zeroed inputs) rather than in the caller's first run()
  if (options.warmup !== false) {
    const encoder = device.createCommandEncoder();
    encodePass(encoder);
    device.queue.submit([encoder.finish()]);
    await device.queue.onSubmittedWorkDone();
  }

  async function execute(inputs) {
    for (const spec of program.inputs) {
      let array = inputs[spec.name];
      const Type = ARRAY_TYPES[spec.dtype];
      const count = spec.shape.reduce((a, b) => a * b, 1);
      if (array === undefined) throw new Error(`kuma: run() is missing input "${spec.name}"`);
      if (spec.dtype === "int32" && array instanceof BigInt64Array) array = Int32Array.from(array, Number);
      if (!(array instanceof Type)) throw new Error(`kuma: input "${spec.name}" must be a ${Type.name}`);
      if (array.length !== count) throw new Error(`kuma: input "${spec.name}" needs ${count} values (shape [${spec.shape}]), got ${array.length}`);
      device.queue.writeBuffer(buffers[spec.buffer], 0, array.buffer, array.byteOffset, array.byteLength);
    }
    const encoder = device.createCommandEncoder();
    encodePass(encoder);
    program.outputs.forEach((o, i) => encoder.copyBufferToBuffer(buffers[o.buffer], 0, readbacks[i], 0, readbacks[i].size));
    device.queue.submit([encoder.finish()]);
    await Promise.all(readbacks.map((r) => r.mapAsync(1)));
    const result = {};
    program.outputs.forEach((o, i) => {
      result[o.name] = new ARRAY_TYPES[o.dtype](readbacks[i].getMappedRange().slice(0));
      readbacks[i].unmap();
    });
    return result;
  }

  return {
    device,
    inputs: tensorInfo(program.inputs),
    outputs: tensorInfo(program.outputs),
    // runs are queued: the readback buffers are shared
    run(inputs) {
      const next = queue.then(() => execute(inputs));
      queue = next.catch(() => {});
      return next;
    },
    dispose() {
      for (const b of [...buffers, ...readbacks]) b.destroy();
      if (ownsDevice) device.destroy();
    },
  };
}
