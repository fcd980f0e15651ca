// One load of a kuma model with dims (one build for a range of sizes) in headless Chromium, run at
// several sizes in turn as a page would, then the error of each bad input set.
//
//   node dims.mjs --serve    one JSON request {root, model, runs, bad, gpu?} per stdin line, one JSON
//                            reply {ok, outputs, errors, info} per stdout line
//
// runs and bad: lists of input sets {name: {dtype, data: base64}}; gpu: names of inputs that runs
// give to run() as GPUBuffers of exactly their size (COPY_SRC) rather than typed arrays; outputs: for each
// run {name: {dtype, length, data: base64}} (an output's length is its numel at that run's dims);
// errors: "Name: message" of each bad set's rejection (null if it ran); info: the module's and
// the model's inputs and outputs specs.

import { inModelPage, serve } from "./run_model.mjs";

// runs inside the page
async function dimsInPage({ url, runs, bad, gpu }) {
  const { decode, encode, arrays } = window.kumaCodec;
  const gpuErrors = [];
  const { load, inputs, outputs } = await import(url);
  const model = await load();
  const made = [];
  const onGpu = (bytes) => {
    const buffer = model.device.createBuffer({ size: bytes.byteLength, usage: GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
    model.device.queue.writeBuffer(buffer, 0, bytes);
    made.push(buffer);
    return buffer;
  };
  const feed = (inputs, onGpuNames = []) => Object.fromEntries(Object.entries(inputs).map(([name, { dtype, data }]) =>
    [name, onGpuNames.includes(name) ? onGpu(decode(data)) : new arrays[dtype](decode(data).buffer)]));
  model.device.addEventListener("uncapturederror", (e) => gpuErrors.push(e.error.message));
  try {
    const results = [];
    for (const run of runs) {
      const result = await model.run(feed(run, gpu));
      results.push(Object.fromEntries(Object.entries(result).map(([name, array]) => [name,
        { dtype: array instanceof Float32Array ? "float32" : "int32", length: array.length, data: encode(new Uint8Array(array.buffer, array.byteOffset, array.byteLength)) }])));
    }
    const errors = [];
    for (const run of bad) {
      try {
        await model.run(feed(run));
        errors.push(null);
      } catch (error) {
        errors.push(`${error.name}: ${error.message}`);
      }
    }
    return { outputs: results, errors, gpuErrors, info: { inputs, outputs, modelInputs: model.inputs, modelOutputs: model.outputs } };
  } finally {
    for (const buffer of made) buffer.destroy();
    model.dispose();
  }
}

const runDims = (browser, server, { runs, bad = [], gpu = [], ...where }) => inModelPage(browser, server, where, dimsInPage, { runs, bad, gpu });

serve(runDims).catch((error) => {
  process.stderr.write(`dims: ${error.message}\n`);
  process.exit(1);
});
