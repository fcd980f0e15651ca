"""Attention of few query rows (decoding) on the "gpu" device class: the keys split over workgroups.

A decode step has one query row per head: a workgroup per row would put a
dozen workgroups on a GPU of 132 multiprocessors, each streaming its whole
key/value cache alone (GPT-2 small at 1024 cached positions: 13 GB/s). Here
(flash-decoding) a workgroup takes one query row and one slice of `per`
keys; passes/split_keys.py gives the node `splits` slices, as many as fill the
device (DeviceClass.parallel workgroups at once) where that saves more than
the one more dispatch it takes (key_splits). Each writes its slice's max, sum and
unnormalised output row (a partial: value_dim + 2 floats) and an
attention_combine node (lower_combine) rescales the partials by exp(m_s - m)
and writes the output through its view's strides. With one slice the kernel
writes the output itself.

A workgroup goes through its keys in chunks of `chunk`, all of a chunk's
loads issued before any is used, so each thread has tens of loads in flight:
- scores: threads are (key, lane), LANES lanes per key, each lane reading
  every LANES-th element of the key row (neighbouring threads read
  neighbouring floats); the lanes' dot products meet in workgroup memory;
- values: threads are (key group, column), neighbouring threads reading
  neighbouring columns of a value row; each keeps its columns' sums over its
  keys and the groups meet in workgroup memory at the end.
Indices past the row or the keys are clamped rather than branched around, so
the loads stay unconditional; the clamped keys score -inf and weigh 0.

Scale, boolean and float masks, causal (key j > query row i masked, as the
other kernels) and grouped-query heads (stride-0 key/value views) are as in
attention.py, whose score_lines this shares; running maxima start at LOWEST
so a row masked so far never computes inf - inf, and a row with every key
masked writes zeros.
"""

from math import ceil, prod

from kuma_build.compiler.kernels import attention, attention_matrix
from kuma_build.compiler.kernels.attention import LOWEST, score_lines
from kuma_build.compiler.kernels.concat import computed_input
from kuma_build.compiler.kernels.gemm import STEP_LATENCY
from kuma_build.compiler.kernels.wgsl import Bindings, block, f32, grid, indent, offset_expr, threads, unravel

THREADS = 256
LANES = 16  # threads per key row in the scores (fewer for shorter rows)
MAX_DIM = 256  # longest query/key and value rows this kernel takes (longer: attention.py's workgroup per row)
LOADS = 64  # loads a thread issues per chunk at most (registers)
MAX_CHUNK = 128  # keys per chunk at most
MIN_SPLIT_KEYS = 32  # keys per slice at least, when the keys are split


def pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def layout(head_dim: int, value_dim: int) -> tuple[int, int, int]:
    """(lanes per key in the scores, value columns per pass, keys a chunk is a multiple of)."""
    lanes = min(LANES, pow2(head_dim))
    width = min(THREADS, pow2(value_dim))
    return lanes, width, max(THREADS // lanes, THREADS // width)


def applies(node, device) -> bool:
    """Whether this kernel takes the attention node: the "gpu" class, too few query rows for
    attention.py's tiled kernel (or rows too long for it), rows of at most MAX_DIM, no size a dim sets."""
    return (not device.thread_rows and attention.is_static(node) and not attention.uses_flash(node, device)
            and max(node.inputs[0].shape[-1], node.output.shape[-1]) <= MAX_DIM)


def lower_attention(node, device):
    """The attention op's lowering: attention_matrix.py's where the "-f16" program marked the node,
    this kernel where it applies, else attention.py's."""
    split = "key_splits" in node.attrs  # its output is now the slices' partials
    if node.attrs.get("matrices"):  # an f16 build's "-f16" program (passes/matrix_attention.py)
        return attention_matrix.lower(node, device)
    return lower(node, device) if split or applies(node, device) else attention.lower(node, device)


def chunk_keys(head_dim: int, value_dim: int, per: int) -> int:
    """Keys a workgroup loads at once: a multiple of layout's step, at most LOADS per thread."""
    step = layout(head_dim, value_dim)[2]
    cap = max(step, min(MAX_CHUNK, THREADS * LOADS // (head_dim + value_dim)) // step * step)
    return min(ceil(per / step) * step, cap)


def cost(device, rows: int, keys: int, head_dim: int, value_dim: int, per: int) -> float:
    """Estimated time of slices of `per` keys, in the tile cost model's units (kernels/gemm.py:
    cost): waves of device.parallel workgroups, each going through its chunks, a chunk costing a
    trip to memory (gemm's STEP_LATENCY) and its loads; slicing adds the combine's dispatch."""
    splits, chunk = ceil(keys / per), chunk_keys(head_dim, value_dim, per)
    loads = chunk * (head_dim + value_dim) / THREADS
    return (ceil(rows * splits / device.parallel) * ceil(per / chunk) * (STEP_LATENCY + loads)
            + (splits > 1) * device.dispatch_cost)


def key_splits(node, device) -> tuple[int, int]:
    """(slices of the keys, keys per slice) of least estimated cost (ties: fewer slices), slices
    of at least MIN_SPLIT_KEYS keys. GPT-2 small's decode step (12 heads, 1024 cached positions)
    splits 16 ways, 192 workgroups; a cache of 256 positions (the example site's model) does not."""
    keys, head_dim = node.inputs[1].shape[-2:]
    value_dim = node.output.shape[-1]
    rows = prod(node.output.shape[:-1])
    step = layout(head_dim, value_dim)[2]
    options = [keys] + list(range(ceil(MIN_SPLIT_KEYS / step) * step, keys, step))
    per = min(options, key=lambda per: (cost(device, rows, keys, head_dim, value_dim, per), ceil(keys / per)))
    return ceil(keys / per), per


def split_choice(node, device) -> tuple[int, int] | None:
    """key_splits when this kernel takes the node and splitting pays (the op record's key_splits)."""
    if "key_splits" in node.attrs or not applies(node, device):
        return None
    splits, per = key_splits(node, device)
    return (splits, per) if splits > 1 else None


def lower(node, device):
    """The partials of attrs["key_splits"] slices (passes/split_keys.py), or the output when unsplit."""
    b = Bindings(node)
    computed = computed_input(node, b)  # rotated queries (passes/fuse_elementwise.py)
    shape = node.attrs.get("rows_shape", node.output.shape)  # the attention's result, before the split
    *batch, length, value_dim = shape
    keys, head_dim = node.inputs[1].shape[-2:]
    rows = prod(batch) * length
    splits, per = node.attrs.get("key_splits", (1, keys))
    lanes, width, step = layout(head_dim, value_dim)
    chunk = chunk_keys(head_dim, value_dim, per)
    passes, group = chunk // (THREADS // lanes), THREADS // width  # score passes a chunk; key groups of the values
    elements, columns = ceil(head_dim / lanes), ceil(value_dim / width)  # per thread and key
    row_lines, row_index = unravel("row", shape[:-1], "r")
    batch_index, i = row_index[:-1], row_index[-1]

    def key(j: str) -> str:
        return f"min({j}, {keys - 1}u)"

    def element(u: int) -> str:
        return f"min(kl + {u * lanes}u, {head_dim - 1}u)" if (u + 1) * lanes > head_dim else f"kl + {u * lanes}u"

    def column(c: int) -> str:
        return f"min(vc + {c * width}u, {value_dim - 1}u)" if (c + 1) * width > value_dim else f"vc + {c * width}u"

    queries = []
    for u in range(elements):
        load = b.load(0, batch_index + [i, element(u)])
        queries.append(f"let q{u} = {load};" if (u + 1) * lanes <= head_dim else f"let q{u} = select(0.0, {load}, kl + {u * lanes}u < {head_dim}u);")
    loads = [f"let k{p}_{u} = {b.load(1, batch_index + [key(f'start + {p * (THREADS // lanes)}u + kj'), element(u)])};"
             for p in range(passes) for u in range(elements)]
    loads += [f"let v{t}_{c} = {b.load(2, batch_index + [key(f'start + {t * group}u + vk'), column(c)])};"
              for t in range(chunk // group) for c in range(columns)]
    dots = [f"dots[{p * THREADS}u + li] = " + " + ".join(f"q{u} * k{p}_{u}" for u in range(elements)) + ";" for p in range(passes)]
    score = [  # thread li < chunk scores key start + li from its lanes' dot products
        f"let p = li / {THREADS // lanes}u;",
        f"let at = p * {THREADS}u + (li % {THREADS // lanes}u) * {lanes}u;",
        "var qk = 0.0;",
        f"for (var l = 0u; l < {lanes}u; l++) {{ qk += dots[at + l]; }}",
        "let j = start + li;",
        *score_lines(node, b, batch_index, i, key("j"), "qk", "s"),
        f"scores[li] = select({f32(float('-inf'))}, s, j < end);",
    ]
    fold = [  # every thread: the chunk's max, then its own keys' weights into its sums
        "var top = running_max;",
        f"for (var t = 0u; t < {chunk}u; t++) {{ top = max(top, scores[t]); }}",
        "let rescale = exp(running_max - top);",
        "total *= rescale;",
        *[f"acc{c} *= rescale;" for c in range(columns)],
        *[line for t in range(chunk // group) for line in (
            f"let p{t} = exp(scores[{t * group}u + vk] - top);", f"total += p{t};",
            *[f"acc{c} = fma(p{t}, v{t}_{c}, acc{c});" for c in range(columns)])],
        "running_max = top;",
    ]
    chunk_lines = [*loads, *dots, "workgroupBarrier();", *block(f"if (li < {chunk}u)", score), "workgroupBarrier();", *fold, "workgroupBarrier();"]

    # the key groups meet: the total (the same for every thread of a group), then each column
    base = f"(row * {splits}u + split) * {value_dim + 2}u"
    finish = ["sums[li] = total;", "workgroupBarrier();", "var weight = 0.0;",
              f"for (var g = 0u; g < {group}u; g++) {{ weight += sums[g * {width}u]; }}", "workgroupBarrier();"]
    if splits > 1:
        finish.append(f"if (li == 0u) {{ out[{base}] = running_max; out[{base} + 1u] = weight; }}")
    for c in range(columns):
        col = f"vc + {c * width}u"
        value = "sum" if splits > 1 else "select(sum / weight, 0.0, weight == 0.0)"
        target = f"{base} + 2u + {col}" if splits > 1 else offset_expr(node.output, batch_index + [i, col])
        finish += [f"sums[li] = acc{c};", "workgroupBarrier();",
                   *block(f"if (vk == 0u && {col} < {value_dim}u)", [
                       "var sum = 0.0;", f"for (var g = 0u; g < {group}u; g++) {{ sum += sums[g * {width}u + vc]; }}",
                       f"out[{target}] = {value};"]),
                   "workgroupBarrier();"]

    causal = f"min(end_keys, {i} + 1u)" if node.attrs["causal"] else "end_keys"
    workgroups = grid(rows * splits)
    body = [
        f"let w = wg.y * {workgroups[0]}u + wg.x;",
        f"if (w >= {rows * splits}u) {{ return; }}",
        f"let row = w / {splits}u;",
        f"let split = w % {splits}u;",
        *row_lines,
        f"let kj = li / {lanes}u;",
        f"let kl = li % {lanes}u;",
        f"let vk = li / {width}u;",
        f"let vc = li % {width}u;",
        *queries,
        f"let begin = split * {per}u;",
        f"let end_keys = min(begin + {per}u, {keys}u);",
        f"let end = {causal};",
        f"var running_max = {f32(LOWEST)};",
        "var total = 0.0;",
        *[f"var acc{c} = 0.0;" for c in range(columns)],
        *block(f"for (var start = begin; start < end; start += {chunk}u)", chunk_lines),
        *finish,
    ]
    shared = (f"var<workgroup> dots: array<f32, {passes * THREADS}>;\n"
              f"var<workgroup> scores: array<f32, {chunk}>;\n"
              f"var<workgroup> sums: array<f32, {THREADS}>;\n")
    header = (f"@compute @workgroup_size({THREADS})\n"
              "fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {\n")
    return b.kernel("attention", computed + shared + "\n" + header + indent(body) + "\n}", workgroups)


def lower_combine(node, device):
    """out = the sum of the slices' outputs, each rescaled by exp(its max - the max), over their
    rescaled sums: a thread per output element."""
    b = Bindings(node)
    out, splits = node.output, node.attrs["splits"]
    value_dim = out.shape[-1]
    stride = value_dim + 2
    header, workgroups = threads(out.numel)
    row_lines, row_index = unravel("row", out.shape[:-1], "r")
    part = b.names[0]
    lines = [
        f"let row = gid / {value_dim}u;",
        f"let col = gid % {value_dim}u;",
        *row_lines,
        f"let base = row * {splits * stride}u;",
        f"var top = {f32(LOWEST)};",
        f"for (var s = 0u; s < {splits}u; s++) {{ top = max(top, {part}[base + s * {stride}u]); }}",
        "var total = 0.0;",
        "var sum = 0.0;",
        *block(f"for (var s = 0u; s < {splits}u; s++)", [
            f"let at = base + s * {stride}u;",
            f"let f = exp({part}[at] - top);",
            f"total += {part}[at + 1u] * f;",
            f"sum += {part}[at + 2u + col] * f;"]),
        f"out[{offset_expr(out, row_index + ['col'])}] = select(sum / total, 0.0, total == 0.0);",
    ]
    return b.kernel("attention_combine", header + indent(lines) + "\n}", workgroups)
