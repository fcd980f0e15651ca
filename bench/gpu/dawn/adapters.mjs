// What Dawn's adapter offers under each set of toggles (issue 12): features, subgroup sizes and
// subgroup-matrix configurations, and for each f16 or f32 configuration one small product on the
// subgroup-matrix builtins checked against the same product on the CPU.
//
//   node adapters.mjs [result.json]      (KUMA_DAWN_MODULES: the folder holding `webgpu`)
//
// dawn.node offers shader-f16 on NVIDIA's Vulkan driver only with the toggle
// vulkan_enable_f16_on_nvidia (Dawn blocks it there pending conformance failures, crbug.com/42251215),
// and chromium-experimental-subgroup-matrix only with allow_unsafe_apis.

import fs from "node:fs";
import path from "node:path";
import { pathToFileURL, fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const MODULES = process.env.KUMA_DAWN_MODULES ?? path.join(HERE, "node_modules");
const { create, globals } = await import(pathToFileURL(path.join(MODULES, "webgpu", "index.js")));
Object.assign(globalThis, globals);

const TOGGLES = [[], ["allow_unsafe_apis"], ["allow_unsafe_apis", "vulkan_enable_f16_on_nvidia"]];

// one M x K by K x N product on the builtins, row-major storage, result stored row-major
function productShader(c) {
  const type = (t) => t; // "f16" / "f32" are the WGSL names
  return `enable chromium_experimental_subgroup_matrix;
${c.componentType === "f16" || c.resultComponentType === "f16" ? "enable f16;" : ""}
@group(0) @binding(0) var<storage, read> a: array<${type(c.componentType)}, ${c.M * c.K}>;
@group(0) @binding(1) var<storage, read> b: array<${type(c.componentType)}, ${c.K * c.N}>;
@group(0) @binding(2) var<storage, read_write> out: array<${type(c.resultComponentType)}, ${c.M * c.N}>;
@compute @workgroup_size(SIZE)
fn main() {
  let left = subgroupMatrixLoad<subgroup_matrix_left<${c.componentType}, ${c.K}, ${c.M}>>(&a, 0, false, ${c.K});
  let right = subgroupMatrixLoad<subgroup_matrix_right<${c.componentType}, ${c.N}, ${c.K}>>(&b, 0, false, ${c.N});
  let result = subgroupMatrixMultiplyAccumulate(left, right, subgroup_matrix_result<${c.resultComponentType}, ${c.N}, ${c.M}>());
  subgroupMatrixStore(&out, 0, result, false, ${c.N});
}`;
}

// f16 bits of values that f16 holds exactly (0 and quarter steps up to 1 here)
function halves(values) {
  return Uint16Array.from(values, (v) => {
    if (v === 0) return 0;
    const exponent = Math.floor(Math.log2(Math.abs(v)));
    return (v < 0 ? 0x8000 : 0) | ((exponent + 15) << 10) | Math.round((Math.abs(v) / 2 ** exponent - 1) * 1024);
  });
}
function fromHalf(h) {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  return e === 0 ? s * m * 2 ** -24 : s * (1 + m / 1024) * 2 ** (e - 15);
}

async function checkConfig(device, c, subgroupMaxSize) {
  // quarter steps in [-1, 1]: exact in f16, so the product is exact in f32
  const a = Array.from({ length: c.M * c.K }, (_, i) => ((i * 7) % 9 - 4) / 4);
  const b = Array.from({ length: c.K * c.N }, (_, i) => ((i * 5) % 9 - 4) / 4);
  const want = new Float64Array(c.M * c.N);
  for (let m = 0; m < c.M; m++) for (let n = 0; n < c.N; n++) for (let k = 0; k < c.K; k++) want[m * c.N + n] += a[m * c.K + k] * b[k * c.N + n];
  const data = (v) => (c.componentType === "f16" ? halves(v) : Float32Array.from(v));
  const storage = (array) => {
    const buffer = device.createBuffer({ size: array.byteLength, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
    device.queue.writeBuffer(buffer, 0, array); // 16 x 16 blocks: whole words
    return buffer;
  };
  const resultBytes = c.M * c.N * (c.resultComponentType === "f16" ? 2 : 4);
  const out = device.createBuffer({ size: resultBytes, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
  const read = device.createBuffer({ size: resultBytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  device.pushErrorScope("validation");
  const module = device.createShaderModule({ code: productShader(c).replace("SIZE", String(subgroupMaxSize)) });
  const pipeline = device.createComputePipeline({ layout: "auto", compute: { module, entryPoint: "main" } });
  const group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [storage(data(a)), storage(data(b)), out].map((buffer, binding) => ({ binding, resource: { buffer } })) });
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(pipeline); pass.setBindGroup(0, group); pass.dispatchWorkgroups(1); pass.end();
  encoder.copyBufferToBuffer(out, 0, read, 0, resultBytes);
  device.queue.submit([encoder.finish()]);
  const error = await device.popErrorScope();
  if (error) return { error: error.message.slice(0, 400) };
  await read.mapAsync(GPUMapMode.READ);
  const got = c.resultComponentType === "f16" ? Array.from(new Uint16Array(read.getMappedRange()), fromHalf) : Array.from(new Float32Array(read.getMappedRange()));
  const maxError = Math.max(...got.map((g, i) => Math.abs(g - want[i])));
  return { maxError };
}

const results = [];
for (const toggles of TOGGLES) {
  const gpu = create(toggles.length ? [`enable-dawn-features=${toggles.join(",")}`] : []);
  const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) { results.push({ toggles, error: "no adapter" }); continue; }
  const info = adapter.info;
  const configs = [...(info.subgroupMatrixConfigs ?? [])].map((c) => ({ componentType: c.componentType, resultComponentType: c.resultComponentType, M: Number(c.M), N: Number(c.N), K: Number(c.K) }));
  const entry = { toggles, description: info.description, vendor: info.vendor, architecture: info.architecture, subgroupMinSize: info.subgroupMinSize, subgroupMaxSize: info.subgroupMaxSize, features: [...adapter.features].sort(), configs };
  const floats = configs.filter((c) => ["f16", "f32"].includes(c.componentType));
  if (floats.length && adapter.features.has("chromium-experimental-subgroup-matrix")) {
    const requiredFeatures = ["chromium-experimental-subgroup-matrix", ...(adapter.features.has("shader-f16") ? ["shader-f16"] : [])];
    const device = await adapter.requestDevice({ requiredFeatures });
    entry.checks = [];
    for (const c of floats) entry.checks.push({ ...c, ...(await checkConfig(device, c, info.subgroupMaxSize)) });
    device.destroy();
  }
  results.push(entry);
  console.log(JSON.stringify(entry));
}
if (process.argv[2]) fs.writeFileSync(process.argv[2], JSON.stringify(results, null, 1));
process.exit(0);
