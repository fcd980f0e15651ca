"""Fused attention: softmax(q k^T * scale + mask) v in one kernel, one workgroup per query row.

The keys go by in tiles of one key per thread: each thread scores its key
into workgroup memory, then every thread folds the tile into the row's
online softmax (running max, running sum) and into the value columns it owns
(column li, li + size, ...). Masked keys score -inf and weigh exp(-inf) = 0;
the running max starts at the lowest finite f32 rather than -inf so a row
masked so far never computes inf - inf, and a row with every key masked ends
with a zero sum and writes zeros, as torch's CPU attention does.
"""

from math import ceil, prod

from kuma_build.compiler.kernels.wgsl import Bindings, f32, grid, indent, unravel

SIZE = 64  # threads per row: keys per tile, and value columns per pass


def lower(node):
    b = Bindings(node)
    out = node.output
    *batch, length, value_dim = out.shape
    keys, head_dim = node.inputs[1].shape[-2:]
    columns = ceil(value_dim / SIZE)
    workgroups = grid(prod(batch) * length)
    row_lines, row_index = unravel("row", out.shape[:-1], "r")
    batch_index, i = row_index[:-1], row_index[-1]

    score = [f"var s = {f32(node.attrs['scale'])} * qk;"]
    if len(node.inputs) == 4:
        mask = b.load(3, batch_index + [i, "j"])
        score.append(f"s = select({f32(float('-inf'))}, s, {mask} != 0i);" if node.inputs[3].dtype == "bool" else f"s += {mask};")
    if node.attrs["causal"]:
        score.append(f"s = select(s, {f32(float('-inf'))}, j > {i});")

    def nest(lines: list[str], depth: int) -> list[str]:
        return ["  " * depth + line for line in lines]

    def each_column(body: list[str]) -> list[str]:
        """body for each value column this thread owns, with c its slot in acc and col the column."""
        return [f"for (var c = 0u; c < {columns}u; c++) {{", f"  let col = li + c * {SIZE}u;",
                f"  if (col < {value_dim}u) {{", *nest(body, 2), "  }", "}"]

    lines = row_lines + [
        f"var running_max = {f32(-3.4028234663852886e38)};",
        "var total = 0.0;",
        f"var acc: array<f32, {columns}>;",
        f"for (var start = 0u; start < {keys}u; start += {SIZE}u) {{",
        "  let j = start + li;",
        f"  if (j < {keys}u) {{",
        "    var qk = 0.0;",
        f"    for (var e = 0u; e < {head_dim}u; e++) {{",
        f"      qk += {b.load(0, batch_index + [i, 'e'])} * {b.load(1, batch_index + ['j', 'e'])};",
        "    }",
        *nest(score, 2),
        "    scores[li] = s;",
        "  }",
        "  workgroupBarrier();",
        f"  let tile = min({SIZE}u, {keys}u - start);",
        "  var tile_max = running_max;",
        "  for (var t = 0u; t < tile; t++) { tile_max = max(tile_max, scores[t]); }",
        "  let rescale = exp(running_max - tile_max);",
        "  total *= rescale;",
        f"  for (var c = 0u; c < {columns}u; c++) {{ acc[c] *= rescale; }}",
        "  for (var t = 0u; t < tile; t++) {",
        "    let p = exp(scores[t] - tile_max);",
        "    total += p;",
        "    let key = start + t;",
        *nest(each_column([f"acc[c] += p * {b.load(2, batch_index + ['key', 'col'])};"]), 2),
        "  }",
        "  running_max = tile_max;",
        "  workgroupBarrier();",
        "}",
        *each_column([f"out[row * {value_dim}u + col] = select(acc[c] / total, 0.0, total == 0.0);"]),
    ]
    header = (
        f"var<workgroup> scores: array<f32, {SIZE}>;\n\n"
        f"@compute @workgroup_size({SIZE})\n"
        "fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {\n"
        f"  let row = wg.y * {workgroups[0]}u + wg.x;\n"
        f"  if (row >= {prod(batch) * length}u) {{ return; }}\n"
    )
    return b.kernel("attention", header + indent(lines) + "\n}", workgroups)
