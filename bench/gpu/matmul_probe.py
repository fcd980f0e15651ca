"""Why is the WGSL matmul slow on NVIDIA? Time the built 4096^3 kernel against one variant.

The first H200 run (docs/performance.md) put every matmul dispatch at ~60 µs per 16-deep K step,
whatever its size. Hypothesis: the kernel's per-thread arrays (acc[4][4], a[4], bv[4]) are indexed
by loop counters; Naga bounds every loop, so the driver does not unroll them and the arrays live in
local memory. The variant has the same tiling and the same FMA order, written out with scalars
and constant indices only; its output must be bit-identical. Run by run_on_device.sh.
"""

import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from kuma_build.bench import random_inputs  # noqa: E402
from kuma_build.outfolder import read_program  # noqa: E402
from kuma_build.webgpu import GpuModel  # noqa: E402

TILE, STEP, PER_THREAD, THREADS = 64, 16, 4, 256


def unrolled_matmul(m: int, n: int, k: int) -> str:
    """The built kernel's algorithm for exact multiples of the tile, with no per-thread arrays."""
    assert m % TILE == 0 and n % TILE == 0 and k % STEP == 0
    pairs = [(i, j) for i in range(PER_THREAD) for j in range(PER_THREAD)]
    loads = []
    for t in range(TILE * STEP // THREADS):
        e = f"(li + {t * THREADS}u)"
        loads += [f"tile_a[({e} % {STEP}u) * {TILE}u + {e} / {STEP}u] = in0[(row0 + {e} / {STEP}u) * {k}u + k0 + {e} % {STEP}u];",
                  f"tile_b[{e}] = in1[(k0 + {e} / {TILE}u) * {n}u + col0 + {e} % {TILE}u];"]
    reads = [f"let a{i} = tile_a[kk * {TILE}u + lid.y * {PER_THREAD}u + {i}u];" for i in range(PER_THREAD)]
    reads += [f"let b{j} = tile_b[kk * {TILE}u + lid.x * {PER_THREAD}u + {j}u];" for j in range(PER_THREAD)]
    fmas = [f"acc{i}{j} = fma(a{i}, b{j}, acc{i}{j});" for i, j in pairs]
    stores = [f"out[(row0 + lid.y * {PER_THREAD}u + {i}u) * {n}u + col0 + lid.x * {PER_THREAD}u + {j}u] = acc{i}{j};" for i, j in pairs]
    block = lambda lines, depth: "\n".join("  " * depth + line for line in lines)
    return f"""@group(0) @binding(0) var<storage, read> in0: array<f32>;
@group(0) @binding(1) var<storage, read> in1: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

var<workgroup> tile_a: array<f32, {TILE * STEP}>;
var<workgroup> tile_b: array<f32, {TILE * STEP}>;

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) li: u32) {{
  let row0 = wg.y * {TILE}u;
  let col0 = wg.x * {TILE}u;
{block([f"var acc{i}{j} = 0.0;" for i, j in pairs], 1)}
  for (var k0 = 0u; k0 < {k}u; k0 += {STEP}u) {{
{block(loads, 2)}
    workgroupBarrier();
    for (var kk = 0u; kk < {STEP}u; kk++) {{
{block(reads + fmas, 3)}
    }}
    workgroupBarrier();
  }}
{block(stores, 1)}
}}
"""


def main() -> int:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("out") / "matmul4096"
    program = read_program(folder)
    (m, k), (_, n) = (s["shape"] for s in program["inputs"])
    inputs = random_inputs(program)
    variant = dict(program, kernels=[dict(program["kernels"][0], name="matmul_unrolled", code=unrolled_matmul(m, n, k))])
    print("| variant | GPU ms (median of 10) | GFLOP/s | max abs diff vs built |\n| --- | ---: | ---: | ---: |", flush=True)
    reference = None
    for name, prog in (("built", program), ("unrolled", variant)):
        gpu = GpuModel(prog, folder)
        try:
            out = gpu.run(inputs)["output"]
            times = []
            for _ in range(10):
                gpu.run(inputs, timestamps="pass")
                times.append((gpu.stamps[1] - gpu.stamps[0]) / 1e6)
        finally:
            gpu.release()
        reference = out if reference is None else reference
        ms = statistics.median(times)
        print(f"| {name} | {ms:.3f} | {2 * m * n * k / (ms * 1e6):.0f} | {float(np.abs(out - reference).max()):.3g} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
