"""Attention on subgroup matrices (tensor cores), for an f16 build's "-f16" program.

That program runs only where the adapter has shader-f16 and subgroup matrices (devices.F16_PROGRAM);
passes/matrix_attention.py marks the attention nodes whose shapes this kernel takes (fits), and
attention_decode.lower_attention sends them here. Queries, keys and values are f32 activations:
staged in workgroup memory as f16 (as gemm_matrix.py stages a product's activations), they are
multiplied on 16 x 16 matrices with f32 sums. The probabilities are rounded to f16 for the second
product; every sum, the maxima and the softmax stay f32.

A workgroup of `subgroups` subgroups takes 16 query rows of one head per subgroup (the last tile
shifted back to end at the last row, as gemm_matrix's "shift": its rows overlap the tile before
it, which writes them with the same sums), and walks the keys once, in tiles of KEYS, as flash
attention does. Per tile, between barriers:

1. the tile's keys and values, fetched into registers while the tile before computed, are staged
   as f16 in `kv`;
2. each subgroup multiplies S = Q K^T for its 16 rows (its query matrices loaded once, before the
   walk) and stores it, f32, to its part of `sc`;
3. each row's two threads score their half of its keys (scale, mask, -inf past the keys or the
   causal diagonal) and meet in `mx` for the tile's max;
4. they write P = exp(S - max) as f16 where the keys were staged (spent by then), and rescale
   their running sums;
5. each subgroup multiplies P V for its rows and stores it to its part of `sc`, and each thread
   adds its share of it (its row, every other 4 value columns) to the outputs it keeps in
   registers, rescaled by exp(old max - new max): a result matrix cannot be scaled row by row, so
   the outputs live in registers, not in matrices.

At the end the row's two sums meet in `mx` and each thread writes its outputs once. A key past
the keys (a partial tile) is read clamped and scores -inf, so its weight is 0; key tiles past a
causal tile's last row are not visited. A row whose every key is masked sums to 0 and writes
zeros, as attention.py's kernels do.

Its workgroup memory (45 KB at BERT's 64-wide heads and 4 subgroups; 2 subgroups where that is over
DeviceClass.matrix_workgroup_bytes or the query has fewer rows) is over WebGPU's default 16 KB: the program asks the device for
it (Kernel.workgroup_bytes, the program's workgroupBytes), and the runtime takes the plain "gpu"
program on an adapter that has less (templates/runtime.js, loadModel). Only keys of MIN_KEYS or
more come here: the walk must be long enough to pay for the few, large workgroups.

Written against gemm_matrix's Primitives: the real builtins (f16m, what browsers run) or the
emulation, which is also the kernel's `code` in the "-f16" program (`kuma verify`, wgpu-py: the
same grid as f16m, which the plan's one dispatch needs; it computes what f16m does).
"""

from math import prod

from kuma_build.compiler.kernels import gemm_matrix
from kuma_build.compiler.kernels.attention import LOWEST, is_static, score_lines, vec4_reads
from kuma_build.compiler.kernels.gemm_matrix import EMULATED, MATRIX, PAD, SUBGROUP, primitives
from kuma_build.compiler.kernels.wgsl import Bindings, block, f32, grid, indent, offset_expr, unravel

KEYS = 64  # keys per tile
SUBGROUPS = (4, 2)  # subgroups per workgroup (16 query rows each), most first: the first whose memory fits
MAX_VALUE_DIM = 64  # a thread keeps half a row's value columns in registers
SCORE_PAD = 4  # f32 past each line of `sc`
# keys at least (a query tile's walk): on the H200 (Dawn, 2026-12-02 13:54-14:10 UTC, docs/performance.md)
# BERT-base's attention at 512 tokens took 608-616 -> 430-434 us (12 dispatches alone), the model
# 2.366-2.389 -> 2.186-2.216 ms back to back; at ViT's 197 the model's time was the same (1.284
# against 1.288), at 128 (BERT, GPT-2) 2-3% more: 24 workgroups of 2 key tiles leave most of the device idle
MIN_KEYS = 256
ON_MATRICES = True  # the "-f16" program's attention takes this kernel (passes/matrix_attention.py); False: attention.py's


def fits(node, device) -> bool:
    """Whether this kernel takes the attention node: fixed sizes, at least a workgroup's query rows,
    head dims and value columns in whole matrices, value columns few enough for registers, and its
    workgroup memory within what it may take."""
    if not is_static(node) or node.attrs.get("key_splits"):
        return False
    *_, length, value_dim = node.output.shape
    keys, head_dim = node.inputs[1].shape[-2:]
    return (keys >= MIN_KEYS and shape(device, head_dim, value_dim, length) is not None and head_dim % MATRIX == 0
            and value_dim % MATRIX == 0 and value_dim <= MAX_VALUE_DIM)


def shape(device, head_dim: int, value_dim: int, length: int) -> int | None:
    """Subgroups per workgroup: the most whose workgroup memory fits and whose rows the query has."""
    return next((s for s in SUBGROUPS if memory(s, head_dim, value_dim) <= device.matrix_workgroup_bytes and MATRIX * s <= length), None)


def layout(subgroups: int, head_dim: int, value_dim: int) -> dict[str, int]:
    """Line lengths and where things lie: kv (f16) holds the queries, a tile's keys (then its
    weights P) and values; sc (f32) a subgroup's scores (then its P V) in each of its parts."""
    rows = MATRIX * subgroups
    sq, sk, sv, sp = head_dim + PAD, head_dim + PAD, value_dim + PAD, KEYS + PAD
    ss = max(KEYS, value_dim) + SCORE_PAD
    k0 = rows * sq
    v0 = k0 + max(KEYS * sk, rows * sp)
    return {"rows": rows, "sq": sq, "sk": sk, "sv": sv, "sp": sp, "ss": ss, "k0": k0, "v0": v0, "kv": v0 + KEYS * sv,
            "sc": subgroups * MATRIX * ss}


def memory(subgroups: int, head_dim: int, value_dim: int) -> int:
    at = layout(subgroups, head_dim, value_dim)
    return 2 * at["kv"] + 4 * at["sc"] + 4 * subgroups * SUBGROUP


def lower(node, device):
    b = Bindings(node)
    *batch, length, value_dim = node.output.shape
    head_dim = node.inputs[0].shape[-1]
    subgroups = shape(device, head_dim, value_dim, length)
    emulated = kernel_body(node, b, EMULATED, subgroups)
    directives, real = kernel_body(node, b, gemm_matrix.BACKEND, subgroups)
    taken = memory(subgroups, head_dim, value_dim)
    return b.kernel("attention", emulated[1], grid(prod(batch) * -(-length // (MATRIX * subgroups))), directives=emulated[0],
                    matrix=(directives, real), workgroup_bytes=taken if taken > device.workgroup_bytes else 0)


def kernel_body(node, b: Bindings, backend: str, subgroups: int) -> tuple[str, str]:
    """(directives, WGSL after the bindings) of the kernel on the given primitives."""
    p = primitives(backend)
    out = node.output
    *batch, length, value_dim = out.shape
    keys, head_dim = node.inputs[1].shape[-2:]
    at = layout(subgroups, head_dim, value_dim)
    rows, threads = at["rows"], subgroups * SUBGROUP
    heads, tiles = prod(batch), -(-length // rows)
    causal = node.attrs["causal"]
    sq, sk, sv, sp, ss, k0, v0 = (at[k] for k in ("sq", "sk", "sv", "sp", "ss", "k0", "v0"))
    half = KEYS // 2  # keys of a tile a thread scores
    quads = value_dim // 8  # vec4s of outputs a thread keeps: its row's columns 4 (2 q + part) ..
    batch_lines, batch_index = unravel("head", batch, "h")

    vector = vec4_reads(node, b)
    if vector:
        for k in range(3):
            b.vec4_input(k)

    def element4(k: int, name: str) -> list[str]:
        """fn name(i, e) -> vec4: input k's row or key i, dims or columns e .. e + 3 of the head."""
        value = b.load4(k, batch_index + ["i", "e"]) if vector else \
            "vec4<f32>(" + ", ".join(b.load(k, batch_index + ["i", f"e + {u}u"]) for u in range(4)) + ")"
        return block(f"fn {name}(i: u32, e: u32) -> vec4<f32>", [f"return {value};"])

    def staging(name: str, reader: str, width: int, line: int, base: int, clamp: int | None) -> list[str]:
        """fetch_<name>(t, first) -> vec4: vec4 t of the rows or keys from `first` (clamped to
        clamp - 1), and stage_<name>(t, v): it as f16 into kv, `line` apart, from `base`."""
        i = f"first + t / {width // 4}u"
        return [*block(f"fn fetch_{name}(t: u32, first: u32) -> vec4<f32>", [
                    f"return {reader}({i if clamp is None else f'min({i}, {clamp - 1}u)'}, (t % {width // 4}u) * 4u);"]),
                *block(f"fn stage_{name}(t: u32, v: vec4<f32>)", [
                    f"let at = {base}u + (t / {width // 4}u) * {line}u + (t % {width // 4}u) * 4u;",
                    *[f"kv[at + {u}u] = f16(v.{lane});" for u, lane in enumerate("xyzw")]])]

    fetches = {"q": rows * head_dim // 4 // threads, "k": KEYS * head_dim // 4 // threads, "v": KEYS * value_dim // 4 // threads}
    for name, count in fetches.items():  # every thread fetches as many vec4s (fits: whole matrices)
        assert count * threads * 4 == {"q": rows * head_dim, "k": KEYS * head_dim, "v": KEYS * value_dim}[name]
    functions = [
        *[f"var<private> {name}: u32;" for name in batch_index],  # set once, read by the functions
        *element4(0, "query"), *element4(1, "key"), *element4(2, "value"),
        *staging("q", "query", head_dim, sq, 0, None),  # the last tile is shifted, never past the rows
        *staging("k", "key", head_dim, sk, k0, keys),
        *staging("v", "value", value_dim, sv, v0, keys),
        *block("fn score(qk: f32, row: u32, j: u32) -> f32", [  # -inf past the keys or the causal diagonal
            *([f"let i = row;", f"let k = min(j, {keys - 1}u);"] if node.operands == 4 else []),
            *score_lines(node, b, batch_index, "i", "k", "qk", "s"),
            f"return select({f32(float('-inf'))}, s, j < {keys}u{' && j <= row' if causal else ''});"]),
    ]

    def fetch(name: str, first: str) -> list[str]:
        return [f"f{name}{n} = fetch_{name}(li + {n * threads}u, {first});" for n in range(fetches[name])]

    def stage(name: str) -> list[str]:
        return [f"stage_{name}(li + {n * threads}u, f{name}{n});" for n in range(fetches[name])]

    mine = f"sg * {MATRIX * ss}u + (lane / 2u) * {ss}u"  # the thread's row of its subgroup's part of sc
    queries = [f"let q{d} = {p.load('left', 'kv', f'sg * {MATRIX * sq}u + {d * MATRIX}u', False, f'{sq}u')};"
               for d in range(head_dim // MATRIX)]
    scores = [  # S = Q K^T: the subgroup's rows, the tile's keys in matrices of 16
        line for kb in range(KEYS // MATRIX) for line in block("", [
            f"var s = {p.zero()};",
            *[f"s = {p.multiply_add(f'q{d}', p.load('right', 'kv', f'{k0 + kb * MATRIX * sk + d * MATRIX}u', True, f'{sk}u'), 's')};"
              for d in range(head_dim // MATRIX)],
            p.store("sc", f"sg * {MATRIX * ss}u + {kb * MATRIX}u", "s", False, f"{ss}u")])]
    top = "max(" * (half - 1) + "s0" + "".join(f", s{u})" for u in range(1, half))
    weights = [  # the thread's half of its row: scores, the tile's max, P, the running sum
        f"let own = {mine} + part * {half}u;",
        f"let j = j0 + part * {half}u;",
        *[f"let s{u} = score(sc[own + {u}u], row, j + {u}u);" for u in range(half)],
        f"let tile_max = {top};",
        "mx[li] = tile_max;",
        "workgroupBarrier();",
        "let m = max(running_max, max(tile_max, mx[li ^ 1u]));",
        "rescale = exp(running_max - m);",
        "running_max = m;",
        *[f"let p{u} = exp(s{u} - m);" for u in range(half)],
        "total = total * rescale + " + " + ".join(f"p{u}" for u in range(half)) + ";",
        f"let at = {k0}u + r * {sp}u + part * {half}u;",
        *[f"kv[at + {u}u] = f16(p{u});" for u in range(half)],
    ]
    values = [  # P V: the subgroup's rows, its value columns in matrices of 16
        line for vb in range(value_dim // MATRIX) for line in block("", [
            f"var o = {p.zero()};",
            *[f"o = {p.multiply_add(p.load('left', 'kv', f'{k0}u + sg * {MATRIX * sp}u + {kb * MATRIX}u', False, f'{sp}u'), p.load('right', 'kv', f'{v0 + kb * MATRIX * sv + vb * MATRIX}u', False, f'{sv}u'), 'o')};"
              for kb in range(KEYS // MATRIX)],
            p.store("sc", f"sg * {MATRIX * ss}u + {vb * MATRIX}u", "o", False, f"{ss}u")])]
    accumulate = [f"o{n} = o{n} * rescale + vec4<f32>(" + ", ".join(f"sc[sc0 + {8 * n + u}u]" for u in range(4)) + ");"
                  for n in range(quads)]
    end = f"min({keys}u, row0 + {rows}u)" if causal else f"{keys}u"  # key tiles past a causal tile's last row: none of its keys count
    walk = [
        *stage("k"), *stage("v"),
        "workgroupBarrier();",
        *block(f"if (j0 + {KEYS}u < end)", fetch("k", f"j0 + {KEYS}u") + fetch("v", f"j0 + {KEYS}u")),
        *scores,
        "workgroupBarrier();",
        *block("", weights),
        "workgroupBarrier();",
        *values,
        "workgroupBarrier();",
        f"let sc0 = {mine} + part * 4u;",
        *accumulate,
    ]
    column = lambda n, u: f"part * 4u + {8 * n + u}u"
    store = [f"out[{offset_expr(out, batch_index + ['row', column(n, u)])}] = o{n}.{lane} * scale;"
             for n in range(quads) for u, lane in enumerate("xyzw")]
    groups = grid(heads * tiles)
    body = [
        f"let w = wg.y * {groups[0]}u + wg.x;",
        f"if (w >= {heads * tiles}u) {{ return; }}",
        f"let head = w / {tiles}u;",
        f"let row0 = min((w % {tiles}u) * {rows}u, {length - rows}u);  // the last tile ends at the last row",
        *[line.removeprefix("let ") for line in batch_lines],
        f"let sg = li / {SUBGROUP}u;",
        f"let lane = li % {SUBGROUP}u;",
        f"let r = sg * {MATRIX}u + lane / 2u;  // the thread's row of the tile, and its half of the keys",
        "let part = lane % 2u;",
        "let row = row0 + r;",
        f"let end = {end};",
        *[f"var f{name}{n}: vec4<f32>;" for name in fetches for n in range(fetches[name])],
        *fetch("q", "row0"), *stage("q"),
        *fetch("k", "0u"), *fetch("v", "0u"),
        "workgroupBarrier();",
        *queries,
        f"var running_max = {f32(LOWEST)};",
        "var total = 0.0;",
        "var rescale = 1.0;",
        *[f"var o{n} = vec4<f32>();" for n in range(quads)],
        *block(f"for (var j0 = 0u; j0 < end; j0 += {KEYS}u)", walk),
        "mx[li] = total;",  # the row's two sums
        "workgroupBarrier();",
        "let sum = total + mx[li ^ 1u];",
        "let scale = select(1.0 / sum, 0.0, sum == 0.0);",  # a row with every key masked writes zeros
        *store,
    ]
    shared = (f"var<workgroup> kv: array<f16, {at['kv']}>;\nvar<workgroup> sc: array<f32, {at['sc']}>;\n"
              f"var<workgroup> mx: array<f32, {threads}>;\n")
    header = (f"@compute @workgroup_size({threads})\n"
              "fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {\n")
    code = "\n".join(functions) + "\n" + p.helpers() + "\n\n" + shared + "\n" + header + indent(body) + "\n}"
    return p.directives(), code
