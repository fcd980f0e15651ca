"""Fused attention: softmax(q k^T * scale + mask) v in one kernel.

On the "gpu" device class (flash_tiled): a workgroup takes a tile of query
rows of one head and goes through the keys in tiles of 64 as flash attention
does: the tile's scores S = Q K^T and then O += P V are register-tiled
products (each thread owns 4 rows x 4 keys of S and 4 rows x 4 columns of O),
their operands staged in workgroup memory a step of 16 head dims or keys at a
time, so every value a thread reads from it serves 4 FMAs of each of 4 rows or
keys: 16 FMAs for two vec4 reads. A step's operands come from storage as vec4s
where the views allow (4 head dims of a query or key, 4 value columns:
VEC4_READS). Between the two products, the online
softmax: the rows' maxima over the tile meet in workgroup memory, each thread
rescales its outputs and sums its own keys' weights; the sums merge once at
the end, and the output is written once. A thread's values are 8 vec4s (S and
O) and a step's fetches, so workgroups are small and several share a
multiprocessor; tiles have as many rows as still give each multiprocessor a
workgroup (tiled_rows). At 128-256 tokens that is too few workgroups for the
device, each walking its key tiles one after the other (a barrier a step), so
the keys split inside the workgroup (tiled_splits): two groups of threads each
take every other key tile with their own staging and online softmax, in step
(the barriers are the workgroup's), and merge once at the end through
workgroup memory; where they do not fit at tiled_rows' rows, fewer rows
that take them (tiled_shape: BERT-512 at 16 rows). Splitting over workgroups
instead would cost a second dispatch to merge (about 5 us on Dawn). The kernel it replaced (flash_split, TILED = False:
each thread a query row in registers and a share of each tile's keys, 4 FMAs a
workgroup-memory read) stays for bench/gpu/attention_sweep.py to time against.

Decoding (fewer than FLASH_MIN_ROWS query rows) goes to attention_decode.py
(the keys split over workgroups); query rows longer than FLASH_MAX_DIM
(flash_split's registers) go a row per workgroup: the keys go by in tiles of
one key per thread; each thread scores its key into workgroup memory, then every thread
folds the tile into the row's online softmax (running max, running sum) and
into the value columns it owns (column li, li + size, ...). Its query row is
read once into workgroup memory.

Masked keys score -inf and weigh exp(-inf) = 0; running maxima start at the
lowest finite f32 rather than -inf so a row masked so far never computes
inf - inf, and a row with every key masked ends with a zero sum and writes
zeros, as torch's CPU attention does. Per-thread values are scalars or vec4s
named by the generator (see gemm.py on private arrays).

The output is written through its view's strides, so the epilogue pass can
make the kernel write a permuted copy's layout directly (GPT's heads merged
back into the model dim), with no copy dispatch.

On the "cpu" device class (DeviceClass.thread_rows, as for the row kernels) a
thread takes a whole query row instead, key by key, with no barriers and
no workgroup memory; a causal row stops at its own position.
"""

from math import ceil, prod

from kuma_build.compiler.ir.sizes import any_sym, max_value, wgsl as u32
from kuma_build.compiler.kernels.rows import MIN_THREAD_ROWS, thread_row_size
from kuma_build.compiler.kernels.wgsl import Bindings, block, f32, grid, indent, offset_expr, threads, unravel, workgroup_rows

SIZE = 64  # threads per row: keys per tile, and value columns per pass
MAX_THREAD_COLUMNS = 256  # value columns a thread's unrolled accumulators may hold
LOWEST = -3.4028234663852886e38  # the running max starts here, not at -inf (see above)
# the "gpu" class's register-tiled kernel (flash_tiled)
TILED = True  # else flash_split, the kernel it replaced (bench/gpu/attention_sweep.py times both)
TILED_ROWS = (64, 32, 16)  # query rows per workgroup (4 per row of 16 threads), most first (tiled_rows)
TILED_KEYS = 64  # keys per tile and value columns per workgroup: 4 per thread of a row of 16
TILED_SPLITS = 2  # key splits per workgroup at most (tiled_splits); 1 is one group of threads walking every key tile
# the tiled kernel fetches 4 neighbouring head dims of a query or key row (and 4 value columns) as
# one vec4 load where the views allow it (vec4_reads), storing the query's and key's lanes one by
# one into their transposed places in workgroup memory, instead of 4 scalar loads a fetch. On Dawn
# (H200, 2026-12-01 18:55-18:58 UTC, docs/performance.md) a call alone BERT-512 659 -> 619 us (12
# calls), ViT 342 -> 319, GPT-2 246 -> 241, BERT-128 262 -> 249; GPU back to back 3.585 -> 3.554 ms,
# 2.048 -> 2.032, 1.285 -> 1.279, 1.259 -> 1.257
VEC4_READS = True
# head dims or keys per staged step, also the threads of a row (the staging assumes both are 16):
# ta and tb take 4.3 kB each, and a step's 16 terms are 256 FMAs a thread between two barriers
STEP = 16
# flash_split (and, for both kernels, FLASH_MAX_DIM and FLASH_MIN_ROWS)
FLASH_THREADS = 256  # threads per workgroup: query rows x key splits
FLASH_ROWS = (64, 32, 16)  # query rows per workgroup, most first (flash_rows)
FLASH_COLUMNS = 64  # value columns a workgroup accumulates (16 vec4 registers); wider values take more workgroups
FLASH_MAX_DIM = 128  # longest query/key row of either kernel (flash_split's 32 vec4 registers); longer ones go a row per workgroup
FLASH_MAX_KEYS = 64  # keys per tile at most
FLASH_MIN_ROWS = 8  # fewer query rows (decoding) go a row per workgroup: its threads split the keys of one row


def lower(node, device):
    b = Bindings(node)
    out = node.output
    *batch, length, value_dim = out.shape
    rows = prod(batch) * length
    if uses_flash(node, device):
        return flash_tiled(node, device, b) if TILED else flash_split(node, device, b)
    row_lines, row_index = unravel("row", out.shape[:-1], "r")
    batch_index, i = row_index[:-1], row_index[-1]
    score = score_lines(node, b, batch_index, i, "j", "qk", "s")
    if device.thread_rows and max_value(rows) >= MIN_THREAD_ROWS and value_dim <= MAX_THREAD_COLUMNS:
        return thread_per_row(node, b, rows, row_lines, batch_index, i, score)
    if node.attrs["causal"]:
        score.append(f"s = select(s, {f32(float('-inf'))}, j > {i});")
    return workgroup_per_row(node, device, b, rows, row_lines, batch_index, i, score)


def is_static(node) -> bool:
    """No size of the node is set by a dim: the tiled and the split-key kernels are for those; with a
    dim, the row kernels here read the sizes from the uniform."""
    return not any_sym([*node.output.shape, *(size for v in node.inputs for size in v.shape)])


def uses_flash(node, device) -> bool:
    """Whether the "gpu" class's tiled kernel takes the node (else attention_decode.py, or a row per workgroup)."""
    return (not device.thread_rows and is_static(node) and node.output.shape[-2] >= FLASH_MIN_ROWS
            and node.inputs[0].shape[-1] <= FLASH_MAX_DIM)


def vec4_reads(node, b) -> bool:
    """Whether the tiled kernel reads queries, keys and values a vec4 at a time (VEC4_READS): each
    view's last dim has unit stride and whole steps (head dims in STEP, value columns in TILED_KEYS),
    every other stride and the offset are multiples of 4, and its buffer can be declared vec4s."""
    value_dim = node.output.shape[-1]
    def aligned(k: int) -> bool:
        v = node.inputs[k]
        others = [x for size, x in zip(v.shape[:-1], v.strides[:-1]) if size != 1] + [v.offset]
        return v.strides[-1] == 1 and all(isinstance(x, int) and x % 4 == 0 for x in others) and b.can_load4(k)
    return (VEC4_READS and node.inputs[0].shape[-1] % STEP == 0 and value_dim % TILED_KEYS == 0
            and all(aligned(k) for k in range(3)))


def score_lines(node, b, batch_index, i: str, j: str, qk: str, s: str) -> list[str]:
    """Lines turning `qk` (query row i . key j) into the score `s`: the scale, then the mask (a boolean
    mask scores -inf where false, a float mask is added). The causal mask is the kernel's own."""
    lines = [f"var {s} = {f32(node.attrs['scale'])} * {qk};"]
    if node.operands == 4:
        mask = b.load(3, batch_index + [i, j])
        lines.append(f"{s} = select({f32(float('-inf'))}, {s}, {mask} != 0i);" if node.inputs[3].dtype == "bool" else f"{s} += {mask};")
    return lines


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


def tiled_rows(device, heads: int, length: int) -> int:
    """Query rows per workgroup of flash_tiled: the most that still give each multiprocessor a
    workgroup (device.parallel // 2 of them), else the fewest. A thread's work per key tile is the
    same at every size (a 4 x 4 block of scores and of outputs), and a workgroup needs few registers
    and 13 kB of workgroup memory, so several share a multiprocessor: more rows only save key and
    value loads, and fewer rows spread the work over more multiprocessors. BERT-base at 512
    tokens: 32 rows (192 workgroups); at 128 tokens, ViT's 197 and GPT-2's 128: 16."""
    return next((rows for rows in TILED_ROWS if heads * ceil(length / rows) >= device.parallel // 2), TILED_ROWS[-1])


def tiled_shape(device, heads: int, length: int, keys: int) -> tuple[int, int]:
    """flash_tiled's query rows and key splits per workgroup: tiled_rows' rows with the splits that fit
    there (tiled_splits), else the most of fewer rows that take splits: a query tile's chain of key
    tiles costs more than the loads more rows save. BERT-base at 512 tokens (H200, wgpu-py, 11:42 UTC):
    16 rows in two splits 57.6 us a call, 32 rows in one 67.8, 16 in one 69.1."""
    first = tiled_rows(device, heads, length)
    for rows in [first] + [r for r in TILED_ROWS if r < first]:
        splits = tiled_splits(device, heads * ceil(length / rows), rows, keys)
        if splits > 1:
            return rows, splits
    return first, 1


def tiled_memory(rows: int, splits: int) -> dict[str, int]:
    """flash_tiled's workgroup arrays and their vec4s: ta and tb stage a step (a part each split), red
    meets the threads' maxima and sums, tops the splits' maxima."""
    g = rows // 4
    return {"ta": splits * STEP * (g + 1), "tb": splits * STEP * 17, "red": splits * 16 * g, **({"tops": splits * g} if splits > 1 else {})}


def tiled_splits(device, workgroups: int, rows: int, keys: int) -> int:
    """Key splits per workgroup of flash_tiled (groups of threads taking their own key tiles): the
    most, up to TILED_SPLITS, that the keys have tiles for and the device runs at once, every
    workgroup's threads resident together (device.parallel workgroups of device.workgroup_threads),
    their staging within workgroup memory, and each split's outputs within its part of tb for the
    merge. A query tile's time is its key tiles' chain of steps and barriers, so while the device has
    room, more threads a query tile shorten it. BERT-base at 128 tokens (96 workgroups), GPT-2's 128
    and ViT's 197 (156): 2 splits at 16 rows; at 512 tokens 32 rows leave no workgroup memory for
    two. More than two never fit: a split's tb alone is 4.3 kB of the 16 kB."""
    def fits(splits: int) -> bool:
        return (splits <= ceil(keys / TILED_KEYS) and splits_fit(device, rows, splits)
                and workgroups * splits * 4 * rows <= device.parallel * device.workgroup_threads)
    return next(splits for splits in range(TILED_SPLITS, 0, -1) if fits(splits))


def splits_fit(device, rows: int, splits: int) -> bool:
    """Whether flash_tiled's workgroup of `rows` query rows can take `splits` key splits: its threads,
    its workgroup memory, and each split's outputs (4 vec4s a thread) within its part of tb for the merge."""
    threads = 4 * rows
    return (splits * threads <= device.workgroup_threads and 16 * sum(tiled_memory(rows, splits).values()) <= device.workgroup_bytes
            and (splits == 1 or 4 * threads <= STEP * 17))


def flash_tiled(node, device, b):
    """A workgroup of 16 x G threads takes 4G query rows of one head and the value columns [col0,
    col0 + 64); thread (x, y) = (li % 16, li / 16) owns rows 4y .. 4y + 3 and, in each tile of 64 keys, keys 4x .. 4x + 3
    (the scores s0 .. s3, a vec4 of keys per row) and value columns 4x .. 4x + 3 (o0 .. o3). A tile
    is two register-tiled products through workgroup memory, STEP at a time: the scores, S = Q K^T
    over steps of STEP head dims, then O += P V over steps of STEP keys. Each step stages an A
    operand (4 rows a vec4) in `ta` and a B operand (4 keys or columns a vec4) in `tb`; each of its
    STEP terms costs a thread two vec4 reads for 16 FMAs. The next step's loads are fetched into
    registers while a step computes. Between the products, the online softmax: the rows' maxima
    over the tile meet in `red`; each thread rescales its outputs and keeps a partial sum of its
    keys' weights, merged in `red` at the end.

    With key splits (tiled_splits), the workgroup is that many such groups of threads (split p =
    li / threads), each staging in its own part of ta and tb and taking key tile p of each round of
    `splits` tiles. Every split runs every round's steps (a round's steps are as many as its first
    tile needs): a split's tile past the keys, or past a causal tile's last row, scores -inf and
    weighs nothing. At the end the splits' row maxima meet in `tops`, their sums in `red` and their
    outputs, rescaled to the common max, in tb; split p writes rows p, p + splits, .. of its rows."""
    out = node.output
    *batch, length, value_dim = out.shape
    keys, head_dim = node.inputs[1].shape[-2:]
    heads = prod(batch)
    groups = ceil(value_dim / TILED_KEYS)           # workgroups per query tile, by value columns
    rows, splits = tiled_shape(device, heads * groups, length, keys)
    g = rows // 4                                    # rows of threads
    threads = 16 * g                                 # threads of a split (a group of threads)
    fetches = 16 * 16 // threads                     # key or value vec4s a thread fetches per step
    tiles = ceil(length / rows)
    span = splits * TILED_KEYS                       # keys of a round: a tile per split
    stride_a = g + 1                                 # ta's vec4s per step term, padded against bank conflicts
    batch_lines, batch_index = unravel("head", batch, "h")
    # with splits, split p stages in its own part of ta and tb (from ta0, tb0) and its thread l = li % threads
    # and a round's first key `base` (its tile's is `start`)
    ta0, tb0, local, first = ("", "", "li", "start") if splits == 1 else ("ta0 + ", "tb0 + ", "l", "base")

    vector = vec4_reads(node, b)
    if vector:  # declared before any load is written (the mask's too)
        for k in range(3):
            b.vec4_input(k)

    def element(k: int, name: str, rows_end: int, whole_rows: bool, dims_end: int, whole_dims: bool, zero: bool = False) -> list[str]:
        """fn name(i, e) -> f32: input k at (i, e) of the head (a row or key i, a dim or column e);
        with vec4 reads, -> vec4 of (i, e) .. (i, e + 3). Past a partial tile's end the indices are clamped, not checked (SwiftShader under Dawn took
        minutes compiling a step's 16 checked reads): a key or value read there weighs nothing and a
        row or column there is not written. Past the head dim the query reads zero (`zero`), so the
        key's clamped dims add nothing."""
        i = "i" if whole_rows else f"min(i, {rows_end - 1}u)"
        if vector:  # (i, e .. e + 3): whole dims (vec4_reads)
            return block(f"fn {name}(i: u32, e: u32) -> vec4<f32>", [f"return {b.load4(k, batch_index + [i, 'e'])};"])
        e = "e" if whole_dims else f"min(e, {dims_end - 1}u)"
        load = b.load(k, batch_index + [i, e])
        return block(f"fn {name}(i: u32, e: u32) -> f32", [f"return {f'select(0.0, {load}, e < {dims_end}u)' if zero and not whole_dims else load};"])

    def fetch(name: str, lines: list[str], lanes: list[str]) -> list[str]:
        """fn name(t, a, b) -> vec4: staged vec4 t of a step (lanes written out: a vector indexed at run
        time may leave registers)."""
        return block(f"fn {name}(t: u32, a: u32, b: u32) -> vec4<f32>", [*lines, f"return vec4<f32>({', '.join(lanes)});"])

    def fetches4() -> list[str]:
        """fetch_q, fetch_k and fetch_v of the vec4 reads: head dims b + 4 (t % 4) .. + 3 of row or
        key a + t / 4; columns b + 4 (t % 16) .. of key a + t / 16."""
        return [line for name, reader, at in (("fetch_q", "query", "a + t / 4u, b + (t % 4u) * 4u"),
                                               ("fetch_k", "key", "a + t / 4u, b + (t % 4u) * 4u"),
                                               ("fetch_v", "value", "a + t / 16u, b + (t % 16u) * 4u"))
                for line in block(f"fn {name}(t: u32, a: u32, b: u32) -> vec4<f32>", [f"return {reader}({at});"])]

    def transposed(array: str, base: str, t: str, stride: int, value: str) -> list[str]:
        """Store the vec4 read's `value` of staged element t, 4 head dims of a row or key, in vec4
        t / 16 of dims 4 (t % 4) .. + 3, lane (t / 4) % 4, one dim at a time."""
        return [f"{array}[{base}(({t}) % 4u * 4u + {u}u) * {stride}u + ({t}) / 16u][({t}) / 4u % 4u] = {value}.{lane};"
                for u, lane in enumerate("xyzw")]

    # fetch_q: head dim b + t % 16 of rows a + 4 (t / 16) ..; fetch_k: the same of keys; fetch_v:
    # columns b + 4 (t % 16) .. of key a + t / 16 (ta and tb hold them transposed or as they come)
    functions = [
        *[f"var<private> {acc}{i}: vec4<f32>;" for acc in "so" for i in range(4)],
        *[f"var<private> {name}: u32;" for name in batch_index],  # set once, read by the functions
        "",
        *element(0, "query", length, length % rows == 0, head_dim, head_dim % STEP == 0, zero=True),
        *element(1, "key", keys, keys % span == 0, head_dim, head_dim % STEP == 0),
        *element(2, "value", keys, keys % span == 0, value_dim, value_dim % TILED_KEYS == 0),
        *(fetches4() if vector else [
            *fetch("fetch_q", ["let e = b + t % 16u;", "let r = a + (t / 16u) * 4u;"], [f"query(r + {u}u, e)" for u in range(4)]),
            *fetch("fetch_k", ["let e = b + t % 16u;", "let j = a + (t / 16u) * 4u;"], [f"key(j + {u}u, e)" for u in range(4)]),
            *fetch("fetch_v", ["let c = b + (t % 16u) * 4u;", "let j = a + t / 16u;"], [f"value(j, c + {u}u)" for u in range(4)])]),
        "",
        *block("fn score(qk: f32, row: u32, j: u32) -> f32", [  # -inf past the keys or the causal diagonal
            *([f"let i = min(row, {length - 1}u);", f"let k = min(j, {keys - 1}u);"] if node.operands == 4 else []),
            *score_lines(node, b, batch_index, "i", "k", "qk", "s"),
            f"return select({f32(float('-inf'))}, s, j < {keys}u{' && j <= row' if node.attrs['causal'] else ''});"]),
        *block("fn scores(qk: vec4<f32>, row: u32, j: u32) -> vec4<f32>", [  # keys j .. j + 3
            "return vec4<f32>(" + ", ".join(f"score(qk.{lane}, row, j + {u}u)" for u, lane in enumerate("xyzw")) + ");"]),
        *block("fn top(v: vec4<f32>) -> f32", ["return max(max(v.x, v.y), max(v.z, v.w));"]),
        "",
        *block("fn put(row: u32, c: u32, o: vec4<f32>, sum: f32)", [  # columns c .. c + 3 of a row
            "let v = select(o / sum, vec4<f32>(), sum == 0.0);",
            *block("for (var u = 0u; u < 4u; u++)", [
                "let col = c + u;",
                *block(f"if (row < {length}u && col < {value_dim}u)", [f"out[{offset_expr(out, batch_index + ['row', 'col'])}] = v[u];"])])]),
    ]
    def step(acc: str, prefetch: list[str]) -> list[str]:
        """After the operands are staged: fetch the next step's, compute this one, its STEP terms
        (4 x 4 FMAs each into s0 .. s3 or o0 .. o3) written out in main: their workgroup-memory
        indices are then constants and lets of li, which Tint's robustness (Dawn) proves in bounds
        and leaves unclamped, where a step function's parameter carried no range (without
        robustness BERT-128's attention took 27% less time back to back, docs/performance.md)."""
        terms = [line for kk in range(STEP) for line in block("", [
            f"let a = ta[{ta0}{kk * stride_a}u + y];", f"let b = tb[{tb0}{kk * 17}u + x];",
            *[f"{acc}{i} = fma(vec4<f32>(a.{'xyzw'[i]}), b, {acc}{i});" for i in range(4)]])]
        return ["workgroupBarrier();", *prefetch, *terms, "workgroupBarrier();"]

    # a step's fetches: into registers fq (Q), f0, f1, ... (K or V), then staged
    others = [f"{local} + {n * threads}u" for n in range(fetches)]  # the fetches' indices t
    fetch_qk = lambda start, d0: [f"fq = fetch_q({local}, tile0, {d0});", *[f"f{n} = fetch_k({t}, {start}, {d0});" for n, t in enumerate(others)]]
    fetch_v = lambda key0: [f"f{n} = fetch_v({t}, {key0}, col0);" for n, t in enumerate(others)]
    scores = [  # S = Q K^T, STEP head dims at a time
        *(transposed("ta", ta0, local, stride_a, "fq") if vector else [f"ta[{ta0}({local} % 16u) * {stride_a}u + {local} / 16u] = fq;"]),
        *[line for n, t in enumerate(others)
          for line in (transposed("tb", tb0, t, 17, f"f{n}") if vector else [f"tb[{tb0}({t}) % 16u * 17u + ({t}) / 16u] = f{n};"])],
        *step("s", [*block(f"if (d0 + {STEP}u < {head_dim}u)", fetch_qk("start", f"d0 + {STEP}u")),
                    *block("else", fetch_v("start"))]),
    ]
    softmax = [
        "let j = start + x * 4u;",
        *[f"s{i} = scores(s{i}, r + {i}u, j);" for i in range(4)],
        "red[li] = vec4<f32>(top(s0), top(s1), top(s2), top(s3));",
        "workgroupBarrier();",
        "var m = running_max;",
        f"for (var n = 0u; n < 16u; n++) {{ m = max(m, red[{'y' if splits == 1 else '(li / 16u)'} * 16u + n]); }}",  # li / 16: the split's row of threads
        "let f = exp(running_max - m);",
        "running_max = m;",
        *[f"o{i} *= f.{'xyzw'[i]};" for i in range(4)],
        *[f"s{i} = exp(s{i} - m.{'xyzw'[i]});" for i in range(4)],
        "total = total * f + vec4<f32>(" + ", ".join(f"dot(s{i}, vec4<f32>(1.0))" for i in range(4)) + ");",
    ]
    values = [  # O += P V, STEP keys at a time: the threads owning them stage their weights
        *block(f"if (x / 4u == k0 / {STEP}u)", [
            f"ta[{ta0}((x % 4u) * 4u + {u}u) * {stride_a}u + y] = vec4<f32>(s0.{lane}, s1.{lane}, s2.{lane}, s3.{lane});"
            for u, lane in enumerate("xyzw")]),
        *[f"tb[{tb0}({t}) / 16u * 17u + ({t}) % 16u] = f{n};" for n, t in enumerate(others)],
        *step("o", [*block(f"if (k0 + {STEP}u < count)", fetch_v(f"start + k0 + {STEP}u")),
                    *block(f"else if ({first} + {span}u < end)", fetch_qk(f"start + {span}u", "0u"))]),
    ]
    sums = [  # one split: its threads' shares
        "workgroupBarrier();",
        "var sum = vec4<f32>();",
        "for (var n = 0u; n < 16u; n++) { sum += red[y * 16u + n]; }",
        "let c = col0 + x * 4u;",
        *[f"put(r + {i}u, c, o{i}, sum.{'xyzw'[i]});" for i in range(4)],
    ]
    merge = [  # the splits' rows at their common max: sums through red, outputs through tb (staging is over)
        "if (x == 0u) { tops[li / 16u] = running_max; }",
        "workgroupBarrier();",
        "var m = tops[y];",
        f"for (var q = 1u; q < {splits}u; q++) {{ m = max(m, tops[q * {g}u + y]); }}",
        "var sum = vec4<f32>();",
        *block(f"for (var q = 0u; q < {splits}u; q++)", [
            "var part = vec4<f32>();",
            f"for (var n = 0u; n < 16u; n++) {{ part += red[q * {threads}u + y * 16u + n]; }}",
            f"sum += part * exp(tops[q * {g}u + y] - m);"]),
        "let f = exp(running_max - m);",
        *[f"tb[tb0 + {i * threads}u + l] = o{i} * f.{'xyzw'[i]};" for i in range(4)],
        "workgroupBarrier();",
        "let c = col0 + x * 4u;",
        # split p writes rows p, p + splits, ..: i counted from constants, which the range analysis bounds
        *block(f"for (var n = 0u; n < {-(-4 // splits)}u; n++)", [
            f"let i = p + n * {splits}u;",
            *block("if (i < 4u)", [
                "var o = vec4<f32>();",
                f"for (var q = 0u; q < {splits}u; q++) {{ o += tb[q * {STEP * 17}u + i * {threads}u + l]; }}",
                "put(r + i, c, o, sum[i]);"])]),
    ]
    causal = node.attrs["causal"]
    origin, workgroups = query_tile(heads, tiles, groups, rows, TILED_KEYS)
    body = [
        *origin,
        *[line.removeprefix("let ") for line in batch_lines],
        *(["let x = li % 16u;", "let y = li / 16u;"] if splits == 1 else [
            f"let p = li / {threads}u;",
            f"let l = li % {threads}u;",
            "let x = l % 16u;",
            "let y = l / 16u;",
            f"let ta0 = p * {STEP * stride_a}u;",
            f"let tb0 = p * {STEP * 17}u;"]),
        "let r = tile0 + y * 4u;",
        f"let end = {f'min({keys}u, tile0 + {rows}u)' if causal else f'{keys}u'};",  # keys past a causal tile's last row count for none
        f"var running_max = vec4<f32>({f32(LOWEST)});",
        "var total = vec4<f32>();",
        *[f"o{i} = vec4<f32>();" for i in range(4)],
        "var fq: vec4<f32>;",
        *[f"var f{n}: vec4<f32>;" for n in range(fetches)],
        *fetch_qk("0u" if splits == 1 else f"p * {TILED_KEYS}u", "0u"),
        *block(f"for (var {first} = 0u; {first} < end; {first} += {span}u)", [
            *([] if splits == 1 else [f"let start = base + p * {TILED_KEYS}u;"]),
            *[f"s{i} = vec4<f32>();" for i in range(4)],
            *block(f"for (var d0 = 0u; d0 < {head_dim}u; d0 += {STEP}u)", scores),
            *softmax,
            f"let count = min({TILED_KEYS}u, end - {first});",  # the same for every split: its barriers are the workgroup's
            *block(f"for (var k0 = 0u; k0 < count; k0 += {STEP}u)", values)]),
        # the rows' sums: each thread's share of its keys
        "red[li] = total;",
        *(sums if splits == 1 else merge),
    ]
    shared = "".join(f"var<workgroup> {name}: array<vec4<f32>, {size}>;\n" for name, size in tiled_memory(rows, splits).items())
    header = (f"@compute @workgroup_size({splits * threads})\n"
              "fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {\n")
    return b.kernel("attention", shared + "\n".join(functions) + "\n\n" + header + indent(body) + "\n}", workgroups)


def query_tile(heads: int, tiles: int, groups: int, rows: int, columns: int) -> tuple[list[str], tuple[int, int, int]]:
    """Lines naming the workgroup's share of the tiled kernels' work, w = its index in a 2-D grid
    (the grid's spare workgroups return): `head`, its query tile's first row `tile0` (tiles of `rows`)
    and its first value column `col0` (`groups` of `columns` a tile); and the grid."""
    workgroups = grid(heads * tiles * groups)
    return [f"let w = wg.y * {workgroups[0]}u + wg.x;",
            f"if (w >= {heads * tiles * groups}u) {{ return; }}",
            f"let col0 = (w % {groups}u) * {columns}u;",
            f"let tile0 = ((w / {groups}u) % {tiles}u) * {rows}u;",
            f"let head = w / {groups * tiles}u;"], workgroups


def flash_rows(device, heads: int, length: int) -> int:
    """Query rows per workgroup. A workgroup holds its threads' query and output rows in registers,
    so a multiprocessor runs about one (parallel / 2 at once); every workgroup takes about as long
    (rows x keys over its 256 threads), so the time goes as waves x rows: the least of that, ties
    to more rows (fewer key and value tiles read per query row). BERT-base at 512 tokens: 16 rows
    (384 workgroups, 3 waves) over 32 (2 waves of twice the work)."""
    def time(rows: int) -> tuple[int, int]:
        return ceil(heads * ceil(length / rows) / max(1, device.parallel // 2)) * rows, -rows
    return min(FLASH_ROWS, key=time)


def lanes(var: str, load, count: int, bound: int, base: str) -> list[str]:
    """var.xyzw = load(base + lane) for the lanes below bound (checked unless count lanes all are)."""
    lines = []
    for lane in range(4):
        set_lane = f"{var}.{'xyzw'[lane]} = {load(f'({base} + {lane}u)')};"
        lines += [set_lane] if count * 4 <= bound else block(f"if ({base} + {lane}u < {bound}u)", [set_lane])
    return lines


def flash_split(node, device, b):
    """The "gpu" class's kernel before flash_tiled (TILED = False). A workgroup takes `rows` query rows of one head (one batch index) and the value columns
    [col0, col0 + 4 * cols4); its threads are (row r, key split t), r fastest, so a warp's threads
    read the same key. Key tiles go through workgroup memory as vec4s (keys, then values), the next
    tile fetched into registers while this one computes; split t takes keys t * per .. t * per +
    per - 1 of each tile, keeping its own running max, sum and output row (vec4 registers); at the
    end the splits of a row merge through the same workgroup memory."""
    out = node.output
    *batch, length, value_dim = out.shape
    keys, head_dim = node.inputs[1].shape[-2:]
    heads = prod(batch)
    head4 = ceil(head_dim / 4)                           # query/key vec4s per row
    groups = ceil(value_dim / FLASH_COLUMNS)              # workgroups per query tile, by value columns
    cols4 = ceil(min(value_dim, FLASH_COLUMNS) / 4)      # value vec4s a workgroup accumulates
    rows = flash_rows(device, heads * groups, length)
    splits = FLASH_THREADS // rows
    capacity = device.workgroup_bytes // 16              # vec4s of workgroup memory
    tile = max(splits, min(FLASH_MAX_KEYS, 1 << (capacity // (head4 + cols4)).bit_length() - 1))  # keys per tile
    per = tile // splits                                 # keys per split per tile
    key_part, tile4 = tile * head4, tile * (head4 + cols4)
    shared4 = max(tile4, FLASH_THREADS)                  # the merge writes one vec4 per thread at least
    chunk4 = shared4 // FLASH_THREADS                    # value vec4s merged per round
    fetches = ceil(tile4 / FLASH_THREADS)
    tiles = ceil(length / rows)

    batch_lines, batch_index = unravel("head", batch, "h")
    params = "".join(f", {name}: u32" for name in batch_index)
    args = "".join(f", {name}" for name in batch_index)

    fetch = [  # element idx of the tile starting at key `start`: keys' vec4s, then values'
        "var v = vec4<f32>();",
        *block(f"if (idx < {key_part}u)", [
            f"let j = start + idx / {head4}u;",
            f"let e = (idx % {head4}u) * 4u;",
            *block(f"if (j < {keys}u)", lanes("v", lambda e: b.load(1, batch_index + ["j", e]), head4, head_dim, "e"))]),
        *block(f"else if (idx < {tile4}u)", [
            f"let j = start + (idx - {key_part}u) / {cols4}u;",
            f"let c = col0 + ((idx - {key_part}u) % {cols4}u) * 4u;",
            *block(f"if (j < {keys}u)", lanes("v", lambda c: b.load(2, batch_index + ["j", c]), groups * cols4, value_dim, "c"))]),
        "return v;",
    ]
    functions = [
        *[f"var<private> q{e}: vec4<f32>;" for e in range(head4)],
        *[f"var<private> acc{c}: vec4<f32>;" for c in range(cols4)],
        "",
        *block(f"fn query(qi: u32, e: u32{params}) -> vec4<f32>", [  # elements e .. e + 3 of query row qi
            "var v = vec4<f32>();", *lanes("v", lambda e: b.load(0, batch_index + ["qi", e]), head4, head_dim, "e"), "return v;"]),
        "",
        *block(f"fn fetch(idx: u32, start: u32, col0: u32{params}) -> vec4<f32>", fetch),
        "",
        *block("fn dot_key(slot: u32) -> f32", [  # the query row . key `slot` of the tile
            f"let k = slot * {head4}u;",
            "return " + " + ".join(f"dot(q{e}, kv[k + {e}u])" for e in range(head4)) + ";"]),
        "",
        *block("fn rescale(f: f32)", [f"acc{c} *= f;" for c in range(cols4)]),
        "",
        *block("fn attend(p: f32, slot: u32)", [  # add p times value `slot` of the tile
            f"let v = {key_part}u + slot * {cols4}u;",
            *[f"acc{c} = fma(vec4<f32>(p), kv[v + {c}u], acc{c});" for c in range(cols4)]]),
    ]

    causal = node.attrs["causal"]
    end = f"min({keys}u, tile0 + {rows}u)" if causal else f"{keys}u"  # keys past a causal tile's last row count for none
    scores = []
    for u in range(per):
        valid = f"j{u} < {keys}u" + (f" && j{u} <= row" if causal else "")
        scores += [f"let j{u} = start + t * {per}u + {u}u;", f"let qk{u} = dot_key(t * {per}u + {u}u);",
                   *score_lines(node, b, batch_index, "qi", f"min(j{u}, {keys - 1}u)", f"qk{u}", f"s{u}")]
        scores.append(f"s{u} = select({f32(float('-inf'))}, s{u}, {valid});")
    top = "running_max"
    for u in range(per):
        top = f"max({top}, s{u})"
    fold = [
        *scores,
        f"let top = {top};",
        *block("if (top > running_max)", ["let f = exp(running_max - top);", "total *= f;", "rescale(f);"]),  # rarely, after the first tiles
        *[line for u in range(per) for line in (f"let p{u} = exp(s{u} - top);", f"total += p{u};", f"attend(p{u}, t * {per}u + {u}u);")],
        "running_max = top;",
    ]
    stage = [f"kv[li + {n * FLASH_THREADS}u] = f{n};" if (n + 1) * FLASH_THREADS <= tile4
             else f"if (li + {n * FLASH_THREADS}u < {tile4}u) {{ kv[li + {n * FLASH_THREADS}u] = f{n}; }}" for n in range(fetches)]
    loop = [
        *stage,
        "workgroupBarrier();",
        *block(f"if (start + {tile}u < end)", [f"f{n} = fetch(li + {n * FLASH_THREADS}u, start + {tile}u, col0{args});" for n in range(fetches)]),
        *fold,
        "workgroupBarrier();",
    ]

    # the merge: each split writes its share of chunk4 value vec4s; split t then sums the splits'
    # shares of vec4s t, t + splits, ... of them and writes those output columns
    merge = [
        *block(f"for (var c = t; c < count; c += {splits}u)", [
            "var sum = vec4<f32>();",
            f"for (var s = 0u; s < {splits}u; s++) {{ sum += kv[c * {FLASH_THREADS}u + s * {rows}u + r]; }}",
            "let value = select(sum / total, vec4<f32>(), total == 0.0);",
            "let col = col0 + (first + c) * 4u;",
            *[line for lane in range(4) for line in block(
                f"if (row < {length}u && col + {lane}u < {value_dim}u)",
                [f"out[{offset_expr(out, batch_index + ['row', f'(col + {lane}u)'])}] = value.{'xyzw'[lane]};"])]]),
    ]
    functions += ["", *block(f"fn merge(first: u32, count: u32, t: u32, r: u32, row: u32, col0: u32, total: f32{params})", merge)]

    def merge_round(first: int) -> list[str]:
        count = min(chunk4, cols4 - first)
        return [*[f"kv[{c * FLASH_THREADS}u + li] = acc{first + c} * own;" for c in range(count)], "workgroupBarrier();",
                f"merge({first}u, {count}u, t, r, row, col0, total{args});", "workgroupBarrier();"]

    origin, workgroups = query_tile(heads, tiles, groups, rows, FLASH_COLUMNS)
    body = [
        *origin,
        *batch_lines,
        f"let r = li % {rows}u;",
        f"let t = li / {rows}u;",
        "let row = tile0 + r;",
        f"let qi = min(row, {length - 1}u);",
        *[f"q{e} = query(qi, {4 * e}u{args});" for e in range(head4)],
        *[f"acc{c} = vec4<f32>();" for c in range(cols4)],
        f"var running_max = {f32(LOWEST)};",
        "var total = 0.0;",
        f"let end = {end};",
        *[f"var f{n} = fetch(li + {n * FLASH_THREADS}u, 0u, col0{args});" for n in range(fetches)],
        *block(f"for (var start = 0u; start < end; start += {tile}u)", loop),
        # merge the splits of each row: the common max, the total, then the output columns
        "kv[li] = vec4<f32>(running_max, total, 0.0, 0.0);",
        "workgroupBarrier();",
        f"var top = {f32(LOWEST)};",
        f"for (var s = 0u; s < {splits}u; s++) {{ top = max(top, kv[s * {rows}u + r].x); }}",
        "total = 0.0;",
        f"for (var s = 0u; s < {splits}u; s++) {{ let m = kv[s * {rows}u + r]; total += m.y * exp(m.x - top); }}",
        "let own = exp(running_max - top);",
        "workgroupBarrier();",
        *[line for first in range(0, cols4, chunk4) for line in merge_round(first)],
    ]
    header = (f"@compute @workgroup_size({FLASH_THREADS})\n"
              "fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {\n")
    code = f"var<workgroup> kv: array<vec4<f32>, {shared4}>;\n" + "\n".join(functions) + "\n\n" + header + indent(body) + "\n}"
    return b.kernel("attention", code, workgroups)
