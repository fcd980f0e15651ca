"""Fused attention: softmax(q k^T * scale + mask) v in one kernel, one workgroup per query row.

The keys go by in tiles of one key per thread: each thread scores its key
into workgroup memory, then every thread folds the tile into the row's
online softmax (running max, running sum) and into the value columns it owns
(column li, li + size, ...). Masked keys score -inf and weigh exp(-inf) = 0;
the running max starts at the lowest finite f32 rather than -inf so a row
masked so far never computes inf - inf, and a row with every key masked ends
with a zero sum and writes zeros, as torch's CPU attention does.

The query row is read once into workgroup memory (every thread reads all of
it for every key), and each thread's value columns are unrolled here into
scalar accumulators (see gemm.py on private arrays).

The output is written through its view's strides, so the epilogue pass can
make the kernel write a permuted copy's layout directly (GPT's heads merged
back into the model dim), with no copy dispatch.

On the "cpu" device class (DeviceClass.thread_rows, as for the row kernels) a
thread takes a whole query row instead, key by key, with no barriers and
no workgroup memory; a causal row stops at its own position.
"""

from math import ceil, prod

from kuma_build.compiler.ir.sizes import max_value, wgsl as u32
from kuma_build.compiler.kernels.rows import MIN_THREAD_ROWS, thread_row_size
from kuma_build.compiler.kernels.wgsl import Bindings, block, f32, indent, offset_expr, threads, unravel, workgroup_rows

SIZE = 64  # threads per row: keys per tile, and value columns per pass
MAX_THREAD_COLUMNS = 256  # value columns a thread's unrolled accumulators may hold
LOWEST = -3.4028234663852886e38  # the running max starts here, not at -inf (see above)


def lower(node, device):
    b = Bindings(node)
    out = node.output
    *batch, length, value_dim = out.shape
    rows = prod(batch) * length
    row_lines, row_index = unravel("row", out.shape[:-1], "r")
    batch_index, i = row_index[:-1], row_index[-1]

    score = [f"var s = {f32(node.attrs['scale'])} * qk;"]
    if len(node.inputs) == 4:
        mask = b.load(3, batch_index + [i, "j"])
        score.append(f"s = select({f32(float('-inf'))}, s, {mask} != 0i);" if node.inputs[3].dtype == "bool" else f"s += {mask};")
    if device.thread_rows and max_value(rows) >= MIN_THREAD_ROWS and value_dim <= MAX_THREAD_COLUMNS:
        return thread_per_row(node, b, rows, row_lines, batch_index, i, score)
    if node.attrs["causal"]:
        score.append(f"s = select(s, {f32(float('-inf'))}, j > {i});")
    return workgroup_per_row(node, device, b, rows, row_lines, batch_index, i, score)


def thread_per_row(node, b, rows, row_lines, batch_index, i, score):
    """Online softmax one key at a time; a masked key scores -inf and changes nothing."""
    keys, head_dim = node.inputs[1].shape[-2:]
    value_dim = node.output.shape[-1]
    header, workgroups = threads(rows, thread_row_size(rows))
    end = f"min({u32(keys)}, {i} + 1u)" if node.attrs["causal"] else u32(keys)
    key = [
        "var qk = 0.0;",
        *block(f"for (var e = 0u; e < {head_dim}u; e++)", [f"qk += {b.load(0, batch_index + [i, 'e'])} * {b.load(1, batch_index + ['j', 'e'])};"]),
        *score,
        "let top = max(running_max, s);",
        "let rescale = exp(running_max - top);",
        "let p = exp(s - top);",
        "total = total * rescale + p;",
        *[f"acc{c} = acc{c} * rescale + p * {b.load(2, batch_index + ['j', f'{c}u'])};" for c in range(value_dim)],
        "running_max = top;",
    ]
    lines = row_lines + [
        f"var running_max = {f32(LOWEST)};",
        "var total = 0.0;",
        *[f"var acc{c} = 0.0;" for c in range(value_dim)],
        *block(f"for (var j = 0u; j < {end}; j++)", key),
        "let empty = total == 0.0;",
        *[f"out[{offset_expr(node.output, batch_index + [i, f'{c}u'])}] = select(acc{c} / total, 0.0, empty);" for c in range(value_dim)],
    ]
    return b.kernel("attention", header + indent(["let row = gid;", *lines]) + "\n}", workgroups)


def workgroup_per_row(node, device, b, rows, row_lines, batch_index, i, score):
    keys, head_dim = node.inputs[1].shape[-2:]
    value_dim = node.output.shape[-1]
    columns = ceil(value_dim / SIZE)
    header, workgroups = workgroup_rows(rows, SIZE)

    def each_column(body) -> list[str]:
        """body(acc) for each value column this thread owns (column `col`, accumulator acc)."""
        return [line for c in range(columns)
                for line in block("", [f"let col = li + {c * SIZE}u;", *block(f"if (col < {value_dim}u)", body(f"acc{c}"))])]

    shared_query = 4 * head_dim <= device.workgroup_bytes // 2  # longer query rows are read from memory
    query = "query[e]" if shared_query else b.load(0, batch_index + [i, "e"])
    score_key = [  # thread li scores key start + li into workgroup memory
        "var qk = 0.0;",
        *block(f"for (var e = 0u; e < {head_dim}u; e++)", [f"qk += {query} * {b.load(1, batch_index + ['j', 'e'])};"]),
        *score,
        "scores[li] = s;",
    ]
    fold_key = [  # every thread folds key start + t into the row's softmax and its value columns
        "let p = exp(scores[t] - tile_max);",
        "total += p;",
        "let key = start + t;",
        *each_column(lambda acc: [f"{acc} += p * {b.load(2, batch_index + ['key', 'col'])};"]),
    ]
    tile = [
        "let j = start + li;",
        *block(f"if (j < {u32(keys)})", score_key),
        "workgroupBarrier();",
        f"let tile = min({SIZE}u, {u32(keys)} - start);",
        "var tile_max = running_max;",
        "for (var t = 0u; t < tile; t++) { tile_max = max(tile_max, scores[t]); }",
        "let rescale = exp(running_max - tile_max);",
        "total *= rescale;",
        *[f"acc{c} *= rescale;" for c in range(columns)],
        *block("for (var t = 0u; t < tile; t++)", fold_key),
        "running_max = tile_max;",
        "workgroupBarrier();",
    ]
    lines = row_lines + [
        *([f"for (var e = li; e < {head_dim}u; e += {SIZE}u) {{ query[e] = {b.load(0, batch_index + [i, 'e'])}; }}",
           "workgroupBarrier();"] if shared_query else []),
        f"var running_max = {f32(LOWEST)};",
        "var total = 0.0;",
        *[f"var acc{c} = 0.0;" for c in range(columns)],
        *block(f"for (var start = 0u; start < {u32(keys)}; start += {SIZE}u)", tile),
        *each_column(lambda acc: [f"out[{offset_expr(node.output, batch_index + [i, 'col'])}] = select({acc} / total, 0.0, total == 0.0);"]),
    ]
    shared = f"var<workgroup> scores: array<f32, {SIZE}>;\n" + (f"var<workgroup> query: array<f32, {head_dim}>;\n" if shared_query else "")
    return b.kernel("attention", shared + "\n" + header + indent(lines) + "\n}", workgroups)
