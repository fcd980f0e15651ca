"""Batched matmul: a 64x64 output tile per workgroup, 4x4 per thread, K in steps of 16.

Tiles of A and B are staged in workgroup memory; loads go through each
operand's strides, so transposed and broadcast operands need no copy.
"""

from math import ceil

from kuma_build.compiler.kernels.wgsl import Bindings, f32

TILE, STEP, PER_THREAD = 64, 16, 4


def lower(node):
    b = Bindings(node)
    batch, m, n = node.output.shape
    k = node.inputs[0].shape[2]
    has_bias = len(node.inputs) == 3
    alpha, beta = node.attrs["alpha"], node.attrs["beta"]
    result = "acc[i][j]" if alpha == 1.0 else f"{f32(alpha)} * acc[i][j]"
    if has_bias:
        bias = b.load(2, ["batch", "r", "c"])
        result += f" + {bias}" if beta == 1.0 else f" + {f32(beta)} * {bias}"
    code = f"""
var<workgroup> tile_a: array<f32, {TILE * STEP}>;
var<workgroup> tile_b: array<f32, {TILE * STEP}>;

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) li: u32) {{
  let batch = wg.z;
  let row0 = wg.y * {TILE}u;
  let col0 = wg.x * {TILE}u;
  var acc: array<array<f32, {PER_THREAD}>, {PER_THREAD}>;
  for (var k0 = 0u; k0 < {k}u; k0 += {STEP}u) {{
    for (var e = li; e < {TILE * STEP}u; e += 256u) {{
      let am = row0 + e / {STEP}u;
      let ak = k0 + e % {STEP}u;
      var va = 0.0;
      if (am < {m}u && ak < {k}u) {{ va = {b.load(0, ["batch", "am", "ak"])}; }}
      tile_a[(e % {STEP}u) * {TILE}u + e / {STEP}u] = va;
      let bk = k0 + e / {TILE}u;
      let bn = col0 + e % {TILE}u;
      var vb = 0.0;
      if (bk < {k}u && bn < {n}u) {{ vb = {b.load(1, ["batch", "bk", "bn"])}; }}
      tile_b[e] = vb;
    }}
    workgroupBarrier();
    for (var kk = 0u; kk < {STEP}u; kk++) {{
      var a: array<f32, {PER_THREAD}>;
      var bv: array<f32, {PER_THREAD}>;
      for (var i = 0u; i < {PER_THREAD}u; i++) {{
        a[i] = tile_a[kk * {TILE}u + lid.y * {PER_THREAD}u + i];
        bv[i] = tile_b[kk * {TILE}u + lid.x * {PER_THREAD}u + i];
      }}
      for (var i = 0u; i < {PER_THREAD}u; i++) {{
        for (var j = 0u; j < {PER_THREAD}u; j++) {{
          acc[i][j] = fma(a[i], bv[j], acc[i][j]);
        }}
      }}
    }}
    workgroupBarrier();
  }}
  for (var i = 0u; i < {PER_THREAD}u; i++) {{
    for (var j = 0u; j < {PER_THREAD}u; j++) {{
      let r = row0 + lid.y * {PER_THREAD}u + i;
      let c = col0 + lid.x * {PER_THREAD}u + j;
      if (r < {m}u && c < {n}u) {{
        out[(batch * {m}u + r) * {n}u + c] = {result};
      }}
    }}
  }}
}}
"""
    return b.kernel("matmul", code, (ceil(n / TILE), ceil(m / TILE), batch))
