// Per-dispatch profiler for Kuma's emitted modules in headless Chromium (WebGPU
// on SwiftShader without a GPU); bench/browser_profile.py drives it.
//
//   node profile.mjs <job.json>
//
// job: {runs, repeat, cases: [{model, root, inputs}]}, root holding <model>/index.js,
//   inputs as in run.mjs. stdout: one JSON line per case, in order:
//   {model, ok, error?, adapter, timestampQuery, floorMs, readbackMs, runMs, wholeMs, dispatches: [{aloneMs, inPassMs}]}.
//
// The model loads on a device wrapped so that the compute passes of its first
// run are recorded (pipeline, bind group, workgroups of each dispatch, in plan
// order). Each dispatch is then replayed with the model's real buffers:
//   aloneMs   one dispatch in its own submit, up to onSubmittedWorkDone, minus floorMs
//   inPassMs  the cost of one more copy of it in the same pass: (repeat copies - one) / (repeat - 1)
// floorMs is an empty pass submitted and awaited; readbackMs a 4-byte copy read back
// with mapAsync; runMs model.run() (inputs up, every dispatch, outputs back);
// wholeMs every dispatch in one pass, awaited. All are the minimum of `runs` tries.

import fs from "node:fs";
import { modelPage, start, withTimeout } from "../../tests/browser/run_model.mjs";

// runs inside the page
async function profileInPage({ url, inputs, runs, repeat }) {
  const arrays = { float32: Float32Array, int32: Int32Array };
  const feed = {};
  for (const [name, { dtype, data }] of Object.entries(inputs)) {
    feed[name] = new arrays[dtype](Uint8Array.from(atob(data), (c) => c.charCodeAt(0)).buffer);
  }
  const adapter = await navigator.gpu.requestAdapter();
  const requiredLimits = {};
  for (const name of ["maxStorageBufferBindingSize", "maxBufferSize", "maxStorageBuffersPerShaderStage"]) requiredLimits[name] = adapter.limits[name];
  const device = await adapter.requestDevice({ requiredLimits });

  // a proxy of a WebGPU object: `overrides` first, everything else bound to the real object
  const wrap = (target, overrides) => new Proxy(target, {
    get(object, key) {
      if (key in overrides) return overrides[key];
      const value = Reflect.get(object, key);
      return typeof value === "function" ? value.bind(object) : value;
    },
  });
  const recorded = [];
  let recording = false;
  const recordingDevice = wrap(device, {
    createCommandEncoder(descriptor) {
      const encoder = device.createCommandEncoder(descriptor);
      return wrap(encoder, {
        beginComputePass(passDescriptor) {
          const pass = encoder.beginComputePass(passDescriptor);
          let pipeline, bindGroup;
          return wrap(pass, {
            setPipeline(p) { pipeline = p; pass.setPipeline(p); },
            setBindGroup(index, group) { bindGroup = group; pass.setBindGroup(index, group); },
            dispatchWorkgroups(x, y = 1, z = 1) {
              if (recording) recorded.push({ pipeline, bindGroup, groups: [x, y, z] });
              pass.dispatchWorkgroups(x, y, z);
            },
          });
        },
      });
    },
  });

  const { load } = await import(url);
  const model = await load({ device: recordingDevice });
  recording = true;
  await model.run(feed);
  recording = false;

  const best = async (once) => {
    let least = Infinity;
    for (let r = 0; r < runs; r++) {
      const started = performance.now();
      await once();
      least = Math.min(least, performance.now() - started);
    }
    return least;
  };
  const submit = (list) => async () => {
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    for (const { pipeline, bindGroup, groups } of list) {
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(...groups);
    }
    pass.end();
    device.queue.submit([encoder.finish()]);
    await device.queue.onSubmittedWorkDone();
  };
  const source = device.createBuffer({ size: 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
  const target = device.createBuffer({ size: 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const readbackMs = await best(async () => {
    const encoder = device.createCommandEncoder();
    encoder.copyBufferToBuffer(source, 0, target, 0, 4);
    device.queue.submit([encoder.finish()]);
    await target.mapAsync(GPUMapMode.READ);
    target.unmap();
  });
  const floorMs = await best(submit([]));
  const dispatches = [];
  for (const d of recorded) {
    const one = await best(submit([d]));
    const many = await best(submit(Array(repeat).fill(d)));
    dispatches.push({ aloneMs: Math.max(0, one - floorMs), inPassMs: Math.max(0, (many - one) / (repeat - 1)) });
  }
  const wholeMs = await best(submit(recorded));
  const runMs = await best(() => model.run(feed));
  model.dispose();
  device.destroy();
  const info = adapter.info;
  return { adapter: { vendor: info.vendor, architecture: info.architecture }, timestampQuery: adapter.features.has("timestamp-query"),
    floorMs, readbackMs, runMs, wholeMs, dispatches };
}

async function main([jobFile]) {
  if (!jobFile) throw new Error("usage: node profile.mjs <job.json>");
  const job = JSON.parse(fs.readFileSync(jobFile, "utf8"));
  const { server, browser } = await start();
  try {
    for (const { model, root, inputs } of job.cases) {
      process.stderr.write(`profile: ${model}\n`);
      const { context, page, problems, url } = await modelPage(browser, server, root, model);
      try {
        const result = await page.evaluate(profileInPage, { url, inputs, runs: job.runs, repeat: job.repeat });
        process.stdout.write(JSON.stringify({ model, ok: true, ...result, problems }) + "\n");
      } catch (error) {
        process.stdout.write(JSON.stringify({ model, ok: false, error: [error.message, ...problems].join("\n") }) + "\n");
      } finally {
        await context.close();
      }
    }
  } finally {
    await browser.close();
    server.server.close();
  }
}

withTimeout(main(process.argv.slice(2)), "profiling").catch((error) => {
  process.stderr.write(`profile: ${error.message}\n`);
  process.exit(1);
});
