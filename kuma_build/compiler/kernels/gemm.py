"""Matrix-product kernels shared by matmul and convolution (implicit GEMM).

A Gemm computes out[b, r, c] = finish(sum_k A[b, r, k] * B[b, k, c]) into the
contiguous output at (b * rows + r) * cols + c. The caller says how to read
one element of A and of B (WGSL lines assigning a variable, so a convolution
can compute the input coordinate of (k, c) and pad with zeros) and how to
finish a sum (alpha, bias, fused epilogue). Two kernels:

- tiled: a TM x TN tile per 16x16-thread workgroup (up to 128 x 128, each
  thread 8 x 8 outputs), K in steps of 16 through workgroup memory, read as
  vectors; the next step is fetched while this one computes. The tile is
  chosen per shape (choose_tile) by a small cost model. With few tiles and a
  long K (late convolutions at batch 1), K is split over several workgroups
  that write partial sums (passes/split_k.py adds the node that sums them).
- thin (at most THIN rows, as in batch-1 linear layers and decoding, or THIN
  columns, as in late convolutions on tiny images): a workgroup owns a block
  of the wide side; its threads split K and combine their partial sums with
  the row kernels' workgroup reduction.
The "cpu" device class uses neither: gemm_registers.py's kernel has no barriers.
products.py picks one.

Variants of the tiled kernel that bench/gpu/gemm_sweep.py times against it are module constants,
off by default (the kernels are then exactly the measured ones): VECTOR_LOADS (tiles fetched as
vec4s), DOUBLE_BUFFER (one barrier a K step), STEP = 32 and K_GROUPS (docs/performance.md, item 4).
K_GROUPS (sliced K) splits the 256 threads into groups that share each staged K step's k and add
their sums through workgroup memory at the end, for what the products of transformers' few rows
lack: with 4 groups a 64 x 64 tile keeps 256 threads but each owns 8 x 8 sums (a third of the
workgroup-memory reads per FMA of the 4 x 4 layout, as the 128 x 128 tile that reached 60% of an
H100), and a 32 x 32 tile gets a split of K by 4 with no partial sums in memory and no dispatch
to add them. One combination ships, where it was measured faster: f32 builds' linear layers of 48
to 4096 rows whose weight's columns take vec4s run 2 groups on 64 x 64 tiles (8 x 4 sums a
thread), 16 k a step, A and B fetched as vec4s (SLICED_*, matmul.py: sliced, decided in passes/split_k.py), and so do f16
builds' programs for devices without tensor cores, which are the f32 build's kernels
on widened weights (compiler/__init__.py: compile_for); the "-f16" program's products keep these
tiles, or where they run on subgroup matrices (gemm_matrix.py, which shares the tiled kernel's grid)
that kernel's own tile and split (gemm_matrix.TILE, marked on the node as Gemm.tile). Sliced K in
their other variants, B's 4 f16 columns a load, was measured slower and is gone: docs/performance.md.

Without shader-f16 an f16 weight is read as u32 words of two values, and the thin kernel loads each
word of its wide side once where the caller gives a pair loader (Gemm.load_a_pair / load_b_pair,
pairs). Only an f16 build's widened program reads weights so, those of memory-bound products
(passes/weight_storage.py: MEMORY_BOUND, at most THIN rows); the tiled kernel's products are not,
and its f16 weights are read natively (the "-f16" program's) or widened to f32.

With `half` (the shader-f16 variant of a kernel reading f16 weights,
docs/precision.md) both kernels multiply in f16: loads are rounded to f16,
tiles are staged as f16 (half the workgroup memory) and the products of each
K step of STEP values are summed in f16, then added to f32 accumulators, so
the rounding error does not grow with K. Finishing a sum stays f32.

Sizes that a dim sets (Syms, ir/sizes.py) are bounds in the code and counts the runtime
evaluates; tiles and kernels are chosen for their max values (Gemm.largest), and K is never
split nor the thin kernel's narrow side a Sym (it is unrolled).
"""

from dataclasses import dataclass, replace
from math import ceil
from typing import Callable

from kuma_build.devices import DeviceClass
from kuma_build.compiler import precision
from kuma_build.compiler.ir.sizes import Sym, ceil_div_count, max_value, wgsl as u32
from kuma_build.compiler.kernels.rows import workgroup_reduce, workgroup_scratch
from kuma_build.compiler.kernels.wgsl import block, indent

STEP, SIDE = 16, 16  # K per stage; threads per workgroup side (16 x 16 = 256)
STEP_LATENCY = 256  # the fixed cost of a K step (barriers, memory latency), in a thread's FMAs
# a partial sum's trip through memory (the product writes it, the sum reads it) in cost units: the
# H200 sweep of BERT's and ViT's linear layers (docs/performance.md, item 4) fits about 0.005;
# 0.003 keeps most picks among the tiles and splits it measured (with DeviceClass.small_tile_occupancy,
# 521 us summed over the eight shapes whose pick it measured, the best there 511; the model without
# either picked 1009 us over all twelve, the best 766)
SPLIT_TRAFFIC = 0.003
MIN_SPLIT_STEPS = 4  # K steps each slice keeps at least
THIN = 8  # at most this many rows or columns: the thin kernel
THIN_LANES = (4, 8, 16, 32)  # wide elements a thin workgroup may take when they are neighbours in memory (thin_lanes)
THIN_K_LANES = (2, 4, 8)  # the same when their k are (a linear layer's weight)
THIN_UNROLL = STEP  # k a thin kernel's thread loads before using any (with f16 weights: one f16 step)
# Variants the GEMM sweep measures (bench/gpu/gemm_sweep.py --knob), off until measured:
# the tiled kernel fetches A's and B's tiles as vec4s (4 neighbouring k of a row of A, 4 neighbouring
# columns of B) where the caller can read them so (Gemm.load_a4 / load_b4), one bounds check a vec4
VECTOR_LOADS = False
# two halves of workgroup memory, one K step staged in each in turn: one barrier a step instead of
# two, on the tiles whose two steps fit (double_buffered)
DOUBLE_BUFFER = False
# sliced K: K_GROUPS groups of 256 / K_GROUPS threads split each staged K step's k between them, each
# group computing the whole tile over its share (more outputs a thread: a 32 x 32 tile's 1024 over 4
# groups of 8 x 8 threads is 4 x 4 a thread), and at the end the groups' sums are added through
# workgroup memory: as many threads on a tile as a split of K into K_GROUPS slices gives, without
# the partial sums' trip through memory and the dispatch that adds them (1, 2, 4, 8 or 16; tiles
# whose staged step and one group's sums do not fit the workgroup memory keep 1: k_groups)
K_GROUPS = 1
# what ships: sliced K where the sweep measured it faster (H200, wgpu-py, 11:52 UTC, docs/performance.md
# item 4): an f32 linear layer of SLICED_MIN_ROWS to SLICED_ROWS rows (the models measured it at 49
# to 3136: ConvNeXt's last stage to its first; fewer rows keep the default, and their pages the
# smaller kernel) whose weight's columns take vec4s (matmul.py: sliced; on Dawn the groups alone,
# on weights whose k are neighbours, made the products slower) takes SLICED_GROUPS groups on a
# SLICED_TILE tile (8 x 4 sums a thread, in a 16 x 8 grid a group), A's and B's tiles fetched as
# vec4s where aligned. Convolutions, f16 weights (their subgroup-matrix variant shares the tiled
# kernel's grid) and longer products keep the tiles above (not measured with groups).
# 64 x 64 in 2 groups of 16 k steps, against the sweep's 32 x 64 in 4 groups of 32 (the same 32 sums
# and 3 workgroup-memory reads of 16 bytes a k a thread, 8 k a group a step), on Dawn (H200,
# 2026-12-01 13:20, docs/performance.md): GPU back to back BERT-512 4.276 -> 3.581 ms (its feed-
# forward up product 113 -> 83 us), ViT 2.261 -> 2.043, GPT-2 1.414 -> 1.266, BERT-128 1.395 ->
# 1.243: a workgroup's tile reads half the global memory per FMA and its K step takes 8 KB of
# workgroup memory, leaving room for the groups' sums beside it; 64 x 32 in 4 groups was 7-15% slower.
# Up to 4096 rows (512 before), 13:34: ConvNeXt-T 1.085 -> 1.056 ms, its first two stages' products
# (3136 and 784 rows) 2-5 us faster each than on the cost model's tiles
SLICED_GROUPS, SLICED_TILE, SLICED_MIN_ROWS, SLICED_ROWS = 2, (64, 64), 48, 4096
# a sliced product stages SLICED_STEP k at a time, its slices of a split at least MIN_SPLIT_STEPS of
# them. 32 (the 32 x 64 tile's; on Dawn 14:09-14:17 UTC, 2026-11-30, BERT-512 4.748 -> 4.537 ms
# against 16) leaves a 64 x 64 tile's step no room for the groups' sums; the other tiles keep STEP
# (32 on every tile slowed ViT's patch convolution 30 -> 38 us)
SLICED_STEP = 16


@dataclass
class Stored:
    """Where an operand that is an f16 weight lies in its binding, for gemm_matrix.py's loads
    straight from storage: element (b, i, k) (i: A's row or B's column) at
    base(b) + i * wide_stride + k * k_stride, one of the two strides 1."""
    array: str  # the binding variable
    base: Callable[[str], str]  # batch -> WGSL index of element (b, 0, 0)
    wide_stride: int
    k_stride: int
    blocked: int = 0  # B stored in blocks (Buffer.blocked, its row length; then wide_stride 1, k_stride that length)


@dataclass
class Gemm:
    batch: int
    rows: int
    cols: int
    depth: int
    load_a: Callable[[str, str, str, str], list[str]]  # (var, b, r, k) -> lines assigning var
    load_b: Callable[[str, str, str, str], list[str]]  # (var, b, k, c) -> lines assigning var
    finish: Callable[[str, str, str, str], tuple[list[str], str]]  # (sum, b, r, c) -> (lines, value); `flat` is defined
    a_k_contiguous: bool = True   # A's neighbouring k are neighbours in memory
    cols_contiguous: bool = True  # B's neighbouring columns are neighbours in memory
    load_a_pair: Callable[[str, str, str, str], list[str]] | None = None  # (var, b, r, k) -> lines assigning var a u32 holding A[r, k] and A[r, k + 1] (k even; precision.pair_word)
    load_b_pair: Callable[[str, str, str, str], list[str]] | None = None  # (var, b, k, c) -> lines assigning var a u32 holding B[k, c] and B[k, c + 1] (c even), or B[k + 1, c] (k even) when not cols_contiguous
    # lines assigning a vec4<f32> var the 4 elements of A at (b, r, k..k+3) (k a multiple of 4, all 4
    # inside A when k < depth), and of B at (b, k, c..c+3) likewise; None where the layout does not allow it
    load_a4: Callable[[str, str, str, str], list[str]] | None = None
    load_b4: Callable[[str, str, str, str], list[str]] | None = None
    splits: int = 1  # K in this many slices, each summed into its own partial output (passes/split_k.py)
    half: bool = False  # f16 products and per-step sums (needs `enable f16;`)
    rows_at_most: int = 0  # the most rows this kernel runs at (a dynamic product's variant for few rows); 0: max_value(rows)
    device: DeviceClass | None = None  # the class the kernel is tuned for
    stored_a: Stored | None = None  # A, B as an f16 weight's binding holds them (only gemm_matrix.py reads these)
    stored_b: Stored | None = None
    sliced: bool = False  # sliced K on SLICED_TILE (matmul.py: sliced)
    tile: tuple[int, int] | None = None  # a tile passes/split_k.py chose (the subgroup-matrix products': gemm_matrix.TILE)

    @property
    def element(self) -> str:
        """The WGSL type of loaded values, products and per-step sums."""
        return "f16" if self.half else "f32"

    def convert(self, value: str, width: int = 1) -> str:
        """An f32 expression (a vecN when width > 1) as the element type."""
        if not self.half:
            return value
        return f"f16({value})" if width == 1 else f"vec{width}<f16>({value})"

    @property
    def zero(self) -> str:
        return "0.0h" if self.half else "0.0"

    @property
    def largest(self) -> tuple[int, int, int, int]:
        """(batch, rows, cols, depth) at the dims' max (or rows_at_most): what the tuning choices look at."""
        rows = self.rows_at_most or max_value(self.rows)
        return tuple(max_value(x) for x in (self.batch, rows, self.cols, self.depth))

    @property
    def step(self) -> int:
        """k staged a step: k_step."""
        return k_step(self.sliced)

    def span(self) -> str:
        """K per split, in whole steps, as WGSL (all of K when it depends on a dim: never split)."""
        if isinstance(self.depth, Sym):
            assert self.splits == 1
            return u32(self.depth)
        return f"{ceil(self.depth / self.splits / self.step) * self.step}u"


def k_step(sliced: bool) -> int:
    """k the tiled kernel stages a step: SLICED_STEP for a sliced product, else STEP."""
    return SLICED_STEP if sliced else STEP


def cost(device: DeviceClass, batch: int, rows: int, cols: int, depth: int, tm: int, tn: int, splits: int, sliced: bool = False) -> float:
    """Estimated time of the tiled kernel: waves of the workgroups in flight (device.parallel, more
    for small tiles: small_tile_occupancy, sliced_occupancy for a sliced product's), each running its K steps; a step costs its thread's FMAs and workgroup-memory reads, its share of the global
    loads and a fixed latency (barriers, memory). Splitting K adds a dispatch that sums the partials
    and the partials' trip through memory (written, then read by the sum). With K groups (k_groups)
    a thread takes its group's share of a step's k, and each group after the first adds its sums
    through workgroup memory, each piece costing about a step's latency (the groups group_count
    asks of a product, sliced or not)."""
    groups = batch * ceil(rows / tm) * ceil(cols / tn) * splits
    step = k_step(sliced)
    k_group, pieces = k_groups(device, tm, tn, group_count(sliced), step)
    ty, tx = group_grid(k_group)
    rows_side, cols_side = Side(tm, ty), Side(tn, tx)
    per_step = step // k_group * (rows_side.per * cols_side.per + rows_side.groups + cols_side.groups) + 4 * (tm + tn) * step / SIDE ** 2
    steps = ceil(depth / splits / step)
    in_flight = device.parallel * (device.sliced_occupancy if sliced else device.small_tile_occupancy if tm * tn <= 64 * 64 else 1)
    return (ceil(groups / in_flight) * (steps * (per_step + STEP_LATENCY) + (k_group - 1) * pieces * STEP_LATENCY)
            + (splits > 1) * (device.dispatch_cost + SPLIT_TRAFFIC * splits * batch * rows * cols))


def fits(device: DeviceClass, tm: int, tn: int) -> bool:
    """Whether a tile's staged K step fits the device's workgroup memory (f32: the widest)."""
    return 4 * (tm + tn) * STEP <= device.workgroup_bytes


def choose_tile(g: Gemm) -> tuple[int, int]:
    """The tile of least estimated cost for g's shape and split (ties: the bigger tile); SLICED_TILE
    for a sliced product."""
    if g.sliced:
        return SLICED_TILE
    if g.tile:
        return g.tile
    tiles = [(tm, tn) for tm in g.device.tiles for tn in g.device.tiles if fits(g.device, tm, tn)]
    return min(tiles, key=lambda t: (cost(g.device, *g.largest, *t, g.splits), -t[0] * t[1]))


def choose_split(device: DeviceClass, batch: int, rows: int, cols: int, depth: int, sliced: bool = False,
                 tile: tuple[int, int] | None = None) -> int:
    """Into how many slices of K the tiled kernel should split a product (1: don't). Splitting
    only pays when the tiles are too few to fill the device and K is long. A sliced product (on
    SLICED_TILE, in SLICED_GROUPS groups), or one whose tile is given, gets the split its tile costs least with."""
    if any(isinstance(x, Sym) for x in (batch, rows, cols, depth)):
        return 1  # a dim's small values would leave most slices empty; the partials would need dynamic sizes
    if min(rows, cols) <= THIN:
        return 1  # the thin kernel splits K inside its workgroups
    tiles = [SLICED_TILE] if sliced else [tile] if tile else [(tm, tn) for tm in device.tiles for tn in device.tiles if fits(device, tm, tn)]
    options = [(tm, tn, s) for tm, tn in tiles for s in device.splits if s == 1 or depth >= s * k_step(sliced) * MIN_SPLIT_STEPS]
    return min(options, key=lambda o: (cost(device, batch, rows, cols, depth, *o, sliced), o[2]))[2]


def stage(var: str, load: list[str], check: str, zero: str = "0.0") -> list[str]:
    """Lines setting `var` to the loaded element, or `zero` when `check` fails (outside the matrix)."""
    return [f"var {var} = {zero};", *block(f"if ({check})", load)]


def functions(g: Gemm) -> str:
    """WGSL functions reading one element of A and of B (zero outside the matrices) and finishing
    and storing one output into output matrix `slot`: each unrolled copy in a kernel is one call,
    which keeps the shipped source small (drivers inline them)."""
    finish, value = g.finish("total", "batch", "r", "c")
    put = [f"let flat = (slot * {u32(g.rows)} + r) * {u32(g.cols)} + c;", *finish, f"out[flat] = {value};"]
    pair = ""
    for side, load, (x, y), check in (("a", g.load_a_pair, ("am", "ak"), f"am < {u32(g.rows)} && ak < {u32(g.depth)}"),
                                      ("b", g.load_b_pair, ("bk", "bn"), f"bk < {u32(g.depth)} && bn < {u32(g.cols)}")):
        if pairs(g, side):
            pair += f"""
fn gemm_{side}_pair(batch: u32, {x}: u32, {y}: u32) -> u32 {{
  var v{side} = 0u;
{indent(block(f"if ({check})", load(f"v{side}", "batch", x, y)))}
  return v{side};
}}
"""
    return f"""
fn gemm_a(batch: u32, am: u32, ak: u32) -> f32 {{
{indent(stage("va", g.load_a("va", "batch", "am", "ak"), f"am < {u32(g.rows)} && ak < {u32(g.depth)}"))}
  return va;
}}

fn gemm_b(batch: u32, bk: u32, bn: u32) -> f32 {{
{indent(stage("vb", g.load_b("vb", "batch", "bk", "bn"), f"bk < {u32(g.depth)} && bn < {u32(g.cols)}"))}
  return vb;
}}

fn gemm_put(batch: u32, slot: u32, r: u32, c: u32, total: f32) {{
  if (r < {u32(g.rows)} && c < {u32(g.cols)}) {{
{indent(put, 2)}
  }}
}}
{pair}"""


def pairs(g: Gemm, side: str) -> bool:
    """Whether the thin kernel reads operand `side` ("a" or "b") by words of two neighbours (f16
    weights read as words: A's neighbouring k; B's neighbouring columns, or k when its columns are
    not neighbours in memory, as a merged linear weight's), each word loaded once."""
    load = g.load_a_pair if side == "a" else g.load_b_pair
    contiguous = g.a_k_contiguous if side == "a" else True
    return load is not None and contiguous and not g.half and not g.device.register_gemm


def fetch_and_stage(g: Gemm, side: str, fetches: int, origins: tuple[str, str], at, write) -> tuple[str, Callable[[str], str], str, int]:
    """The tiled kernel's fetch_<side> function for one operand's elements, the store of a fetched
    value (its register's name given) of staged element t in the tile (o: the double buffer's half), the zero of a thread's
    fetch registers and how many fetches a thread makes. Staged element e of the operand is at
    (origins[0] + at(e)[0], origins[1] + at(e)[1]) and write(e, value) stores it in the tile."""
    head = f"fn fetch_{side}(t: u32, batch: u32, {origins[0]}: u32, {origins[1]}: u32)"
    x, y = at("t")
    fetch = f"{head} -> {g.element} {{ return {g.convert(f'gemm_{side}(batch, {origins[0]} + {x}, {origins[1]} + {y})')}; }}"
    return fetch, (lambda v: write("t", v)), g.zero, fetches


# Per-thread values are scalars with names fixed in the generator (acc_0_1, not acc[i][j] in a
# WGSL loop): GPU drivers keep run-time-indexed private arrays in slow local memory, which made
# every K step of the first matmul kernel ~60 us on an H200 (docs/performance.md).

@dataclass
class Side:
    """How one side (rows or columns) of a tile spreads over a line of `threads` threads (SIDE, or
    fewer in a K group's grid: group_grid): each thread owns `per` positions in `groups` runs of
    `width` neighbours (width <= 4), runs threads * width apart. A run is one vecN read from
    workgroup memory, and neighbouring threads read neighbouring runs, so the reads neither
    conflict nor repeat."""
    tile: int
    threads: int = 0  # 0: SIDE

    @property
    def line(self) -> int:
        return self.threads or SIDE

    @property
    def per(self) -> int:
        return self.tile // self.line

    @property
    def width(self) -> int:
        return min(4, self.per)

    @property
    def groups(self) -> int:
        return self.per // self.width

    def type(self, element: str = "f32") -> str:
        return element if self.width == 1 else f"vec{self.width}<{element}>"

    def offset(self, i: int) -> int:
        """The tile position of the thread's i-th element, past thread * width."""
        group, lane = divmod(i, self.width)
        return group * self.line * self.width + lane

    def element(self, run: str, i: int) -> str:
        """Element i of the thread's runs, read into run0, run1, ..."""
        group, lane = divmod(i, self.width)
        return f"{run}{group}" + ("" if self.width == 1 else "." + "xyzw"[lane])

    def reads(self, run: str, tile: str, thread: str) -> list[str]:
        runs = self.tile // self.width
        return [f"let {run}{g} = {tile}[kk * {runs}u + {g * self.line}u + {thread}];" for g in range(self.groups)]

    def write(self, tile: str, e: str, value: str) -> str:
        """Store element e of the k-major staged tile."""
        return f"{tile}[{e}] = {value};" if self.width == 1 else f"{tile}[({e}) / {self.width}u][({e}) % {self.width}u] = {value};"


def group(e: str) -> str:
    """WGSL expression e, parenthesised unless it is a name."""
    return e if e.isidentifier() else f"({e})"


def k_runs(tile: int):
    """(position in the tile, k) of staged element e of A when its k are neighbours in memory: runs
    of 4 threads read 4 neighbouring k of one row."""
    return (lambda e: f"({group(e)} / 4u) % {tile}u"), (lambda e: f"{group(e)} % 4u + 4u * ({group(e)} / {4 * tile}u)")


def tiled(g: Gemm) -> tuple[str, tuple[int, int, int]]:
    """TM x TN outputs per workgroup of SIDE x SIDE threads. Each K step stages A's TM x g.step and
    B's g.step x TN block in workgroup memory (k-major, so the threads' reads are vectors); the next
    step's elements are fetched into registers while this step computes, hiding memory latency.
    With g.splits > 1, workgroup z = split * batch + b sums one slice of K into partial sums.
    With g.half, each step sums into f16 `part_` values that gemm_fold adds to the f32 `acc_` ones.
    With K groups (k_groups; the workgroup's z is the group, x and y a group's grid: group_grid),
    group lid.z takes k lid.z * share .. + share - 1 of each step, and at the end groups 1, 2, ...
    in turn store their sums in workgroup memory for group 0 to add, which then finishes the tile."""
    # no f16 weight reaches it read as words: those are memory-bound products' (module docstring)
    g = replace(g, load_a_pair=None, load_b_pair=None)
    tm, tn = choose_tile(g)
    ks = g.step
    k_group, pieces = k_groups(g.device, tm, tn, group_count(g.sliced), ks)
    (ty, tx), element = group_grid(k_group), g.element
    rows, cols = Side(tm, ty), Side(tn, tx)
    double = double_buffered(g.device, tm, tn, ks)
    staging, (store_a, store_b), (fetch_a, fetch_b), (zero_a, zero_b) = staged_loads(g, rows, cols, double)
    threads = [f"li + {i * SIDE ** 2}u" for i in range(max(fetch_a, fetch_b))]

    def fetch(k0: str) -> list[str]:
        return ([f"fa{i} = fetch_a({threads[i]}, batch, row0, {k0});" for i in range(fetch_a)]
                + [f"fb{j} = fetch_b({threads[j]}, batch, {k0}, col0);" for j in range(fetch_b)])

    def stage_tiles(phase: str = "") -> list[str]:
        """Store the fetched values (into half `phase` of the tiles, an expression 0u or 1u, when
        double), written out in main as the steps are (below: no clamps on the stores either)."""
        half_a, half_b = ([f"let o = {phase} * {tm * ks}u;"], [f"let o = {phase} * {tn * ks}u;"]) if double else ([], [])
        return ([line for i in range(fetch_a) for line in block("", [f"let t = {threads[i]};", *half_a, store_a(f"fa{i}")])]
                + [line for j in range(fetch_b) for line in block("", [f"let t = {threads[j]};", *half_b, store_b(f"fb{j}")])])
    # a thread's accumulators: one per row and run of columns (vectors: fewer lines to ship)
    accs = [(i, run) for i in range(rows.per) for run in range(cols.groups)]
    splat = (lambda x: x) if cols.width == 1 else (lambda x: f"{cols.type(element)}({x})")
    sums = "part" if g.half else "acc"  # what the step adds to
    step = (rows.reads("a", "tile_a", "lid.y") + cols.reads("b", "tile_b", "lid.x")
            + [f"{sums}_{i}_{run} = fma({splat(rows.element('a', i))}, b{run}, {sums}_{i}_{run});" for i, run in accs])
    # the K step's kk unrolled in main, on private accumulators: the unrolled step was 10% faster
    # than Naga's loop on an H100 (the driver did not unroll it). Written out in main, every
    # workgroup-memory index is made of constants, lid's components and lets of them, so Tint's
    # robustness (Dawn) proves it in bounds and adds no clamp (a function's parameters, as the step
    # was, carry no range); Dawn without robustness ran BERT-128's products 5% faster (H200,
    # docs/performance.md, 2026-12-01 10:59)
    private = "\n".join(f"var<private> acc_{i}_{run}: {cols.type()};" for i, run in accs)
    share = ks // k_group  # k of each staged step a thread's group takes
    first = (f"phase * {ks}u + " if double else "") + ("kq + " if k_group > 1 else "")
    inner = [line for c in range(share) for line in block("", [f"let kk = {first}{c}u;", *step])]
    fold = ""
    if g.half:
        private += "".join(f"\nvar<private> part_{i}_{run}: {cols.type(element)};" for i, run in accs)
        fold = "\nfn gemm_fold() {\n" + indent(
            [line for i, run in accs for line in (f"acc_{i}_{run} += {cols.type()}(part_{i}_{run});",
                                                  f"part_{i}_{run} = {cols.type(element)}();")]) + "\n}\n"
        inner.append("gemm_fold();")
    step_fn = f"""
{private}
{fold}"""
    writes = [f"let r = row0 + lid.y * {rows.width}u;", f"let c = col0 + lid.x * {cols.width}u;"]
    writes += [f"gemm_put(batch, wg.z, r + {rows.offset(i)}u, c + {cols.offset(j)}u, {cols.element(f'acc_{i}_', j)});"
               for i in range(rows.per) for j in range(cols.per)]
    groups_code, group_lines = "", []
    if k_group > 1:
        # the groups' sums into group 0's through `partial`, one group and piece of the thread's
        # rows at a time (row i of piece p: i - p * rows_in), then group 0 stores
        rows_in, runs = rows.per // pieces, tn // cols.width
        at = {(i, run): f"partial[({i % rows_in * ty}u + lid.y) * {runs}u + {run * tx}u + lid.x]" for i, run in accs}
        groups_code = f"\nvar<workgroup> partial: array<{cols.type()}, {tm * tn // cols.width // pieces}>;\n"
        rounds = []
        for p in range(pieces):
            mine = [a for a in accs if a[0] // rows_in == p]
            rounds += [*block("if (lid.z == q)", [f"{at[a]} = acc_{a[0]}_{a[1]};" for a in mine]), "workgroupBarrier();",
                       *block("if (lid.z == 0u)", [f"acc_{a[0]}_{a[1]} += {at[a]};" for a in mine]), "workgroupBarrier();"]
        group_lines = [f"let kq = lid.z * {share}u;"]
        writes = [*block(f"for (var q = 1u; q < {k_group}u; q++)", rounds), *block("if (lid.z == 0u)", writes)]
    if double:  # stage step 0, then each step: fetch the next, compute this one, stage the next in the other half
        loop = f"""
{indent(stage_tiles("0u"))}
  workgroupBarrier();
  var phase = 0u;
  for (var k0 = k_begin; k0 < k_end; k0 += {ks}u) {{
    let more = k0 + {ks}u < k_end;
    if (more) {{
{indent(fetch(f"k0 + {ks}u"), 3)}
    }}
{indent(inner, 2)}
    if (more) {{
{indent(stage_tiles("(1u - phase)"), 3)}
    }}
    workgroupBarrier();
    phase = 1u - phase;
  }}"""
    else:
        # with K groups (sliced products) the next step's fetch is unconditional: past K its loads
        # read zeros, past a slice's end the next slice's values, never staged. On Dawn (H200) the
        # transformers' products went 1-3% faster a dispatch so; convolutions on the other tiles
        # 1-9% slower, so they keep the check (docs/performance.md, 2026-12-01 05:03-05:37)
        fetch_next = fetch(f"k0 + {ks}u") if k_group > 1 else block(f"if (k0 + {ks}u < k_end)", fetch(f"k0 + {ks}u"))
        loop = f"""
  for (var k0 = k_begin; k0 < k_end; k0 += {ks}u) {{
{indent(stage_tiles(), 2)}
    workgroupBarrier();
{indent(fetch_next + inner, 2)}
    workgroupBarrier();
  }}"""
    halves = 2 if double else 1
    size = f"{SIDE}, {SIDE}" if k_group == 1 else f"{tx}, {ty}, {k_group}"
    code = functions(g) + staging + step_fn + groups_code + f"""
var<workgroup> tile_a: array<{rows.type(element)}, {halves * tm * ks // rows.width}>;
var<workgroup> tile_b: array<{cols.type(element)}, {halves * tn * ks // cols.width}>;

@compute @workgroup_size({size})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) li: u32) {{
  let batch = wg.z % {u32(g.batch)};
  let k_begin = (wg.z / {u32(g.batch)}) * {g.span()};
  let k_end = min(k_begin + {g.span()}, {u32(g.depth)});
  let row0 = wg.y * {tm}u;
  let col0 = wg.x * {tn}u;
{indent(group_lines + [f"var fa{i} = {zero_a};" for i in range(fetch_a)] + [f"var fb{j} = {zero_b};" for j in range(fetch_b)])}
{indent(fetch("k_begin"))}{loop}
{indent(writes)}
}}
"""
    return code, (ceil_div_count(g.cols, tn), ceil_div_count(g.rows, tm), ceil_div_count(g.batch * g.splits, 1))


def double_buffered(device: DeviceClass, tm: int, tn: int, step: int = STEP) -> bool:
    """Whether the tiled kernel stages K steps alternately in two halves (DOUBLE_BUFFER): when two fit."""
    return DOUBLE_BUFFER and 2 * 4 * (tm + tn) * step <= device.workgroup_bytes


def group_grid(k_group: int) -> tuple[int, int]:
    """(threads along the rows, along the columns) of each of k_group groups of SIDE * SIDE / k_group threads."""
    assert k_group & (k_group - 1) == 0, "K_GROUPS is a power of 2"
    log = k_group.bit_length() - 1
    return SIDE >> (log + 1) // 2, SIDE >> log // 2


def sliced_shape(device: DeviceClass, rows, cols) -> bool:
    """The shape part of matmul.py's sliced: static rows from SLICED_MIN_ROWS to SLICED_ROWS, columns past THIN, the "gpu" classes."""
    return (not device.register_gemm and isinstance(rows, int) and isinstance(cols, int)
            and SLICED_MIN_ROWS <= rows <= SLICED_ROWS and THIN < cols)


def group_count(sliced: bool) -> int:
    """The K groups asked of a product: K_GROUPS where the sweep sets it, else SLICED_GROUPS for a
    sliced product, 1 for the rest."""
    return K_GROUPS if K_GROUPS > 1 else SLICED_GROUPS if sliced else 1


def k_groups(device: DeviceClass, tm: int, tn: int, wanted: int, step: int = STEP) -> tuple[int, int]:
    """(groups, pieces): into how many groups of threads the tiled kernel splits each staged K
    step's k (`wanted`, as group_count gives it), and in how many pieces of rows a group's sums go through workgroup memory
    to be added (the fewest that fit beside the staged step, or two with double_buffered). (1, 1)
    where the group's grid does not fit the tile, a thread would own more than 64 sums, or even a
    piece of one row a thread does not fit."""
    if wanted == 1:
        return 1, 1
    halves = 2 if double_buffered(device, tm, tn, step) else 1
    ty, tx = group_grid(wanted)
    if step % wanted or tm % ty or tn % tx or tm // ty * (tn // tx) > 64:
        return 1, 1
    pieces = [p for p in range(1, tm // ty + 1) if tm // ty % p == 0
              and 4 * (halves * (tm + tn) * step + tm * tn // p) <= device.workgroup_bytes]
    return (wanted, pieces[0]) if pieces else (1, 1)


def vector_side(tile: int, step: int = STEP) -> bool:
    """Whether a tile side's K step of `step` k can be fetched as vec4s (VECTOR_LOADS, or a sliced
    product: matmul.py's vec4_operands asks): a whole number of them per thread."""
    return tile * step % (4 * SIDE ** 2) == 0


def vectors(load, tile: int, step: int) -> bool:
    """Whether a tile side's K step is fetched as vec4s: a vec4 reader (the caller's choice), and vector_side."""
    return load is not None and vector_side(tile, step)


def staged_loads(g: Gemm, rows: Side, cols: Side, double: bool = False) -> tuple[str, tuple[Callable, Callable], tuple[int, int], tuple[str, str]]:
    """WGSL functions fetching staged value t of A's and B's K step (fetch_a, fetch_b); the stores
    of a fetched value (given its register's name) of staged value t in the k-major tiles (when
    double, at element offset o: the half it goes to), for tiled to write out in main; how many
    values each thread fetches; their zeros.
    A value is an element, or a vec4 where
    `vectors` says so: 4 neighbouring k of a row of A, whose threads go along the row (a row's
    step of k are step * 4 neighbouring bytes), or 4 neighbouring columns of B, which is one vec4 of
    the staged tile."""
    tm, tn, element = rows.tile, cols.tile, g.element
    ks = g.step
    vec_a, vec_b = vectors(g.load_a4, tm, ks), vectors(g.load_b4, tn, ks)
    at = "o + " if double else ""  # the half's offset, when double
    per = SIDE ** 2
    readers = ""  # the vec4 readers, as gemm_a and gemm_b (functions) read one element
    if vec_a:
        a_m, a_k = f"t / {ks // 4}u", f"4u * (t % {ks // 4}u)"
        readers += vector_reader(g, "a", g.load_a4, f"am < {u32(g.rows)} && ak < {u32(g.depth)}")
        fetch_a = f"fn fetch_a(t: u32, batch: u32, row0: u32, k0: u32) -> vec4<{element}> {{ return {g.convert(f'gemm_a4(batch, row0 + {a_m}, k0 + {a_k})', 4)}; }}"
        stage_a = lambda v: lanes(rows, "tile_a", lambda j: f"{at}({a_k} + {j}u) * {tm}u + {a_m}", v)
        zero_a, count_a = f"vec4<{element}>()", tm * ks // per // 4
    else:
        # staged element e of A is (a_m, a_k); when A's k are neighbours in memory, runs of 4
        # threads read 4 neighbouring k of a row (4-way conflicts on the store, 8 rows a warp instead
        # of 32): 17% faster on an H100 (docs/performance.md)
        a_m, a_k = k_runs(tm) if g.a_k_contiguous else ((lambda e: f"{group(e)} % {tm}u"), (lambda e: f"{group(e)} / {tm}u"))
        fetch_a, stage_a, zero_a, count_a = fetch_and_stage(
            g, "a", tm * ks // per, ("row0", "k0"), lambda e: (a_m(e), a_k(e)),
            lambda e, v: rows.write("tile_a", f"{at}({a_k(e)}) * {tm}u + {a_m(e)}", v))
    if vec_b:  # value t is columns 4 * (t % (tn / 4)) .. + 3 of k t / (tn / 4): vec4 t of the tile
        b_k, b_c = f"t / {tn // 4}u", f"4u * (t % {tn // 4}u)"
        readers += vector_reader(g, "b", g.load_b4, f"bk < {u32(g.depth)} && bn < {u32(g.cols)}")
        fetch_b = f"fn fetch_b(t: u32, batch: u32, k0: u32, col0: u32) -> vec4<{element}> {{ return {g.convert(f'gemm_b4(batch, k0 + {b_k}, col0 + {b_c})', 4)}; }}"
        stage_b = ((lambda v: f"tile_b[{at.replace('o', 'o / 4u')}t] = {v};") if cols.width == 4
                   else (lambda v: lanes(cols, "tile_b", lambda j: f"{at}4u * t + {j}u", v)))
        zero_b, count_b = f"vec4<{element}>()", tn * ks // per // 4
    else:
        if g.cols_contiguous:  # B's element e is (e / tn, e % tn), staged at e
            b_k, b_c = (lambda e: f"{e} / {tn}u"), (lambda e: f"{e} % {tn}u")
            spot = lambda e: f"{at}{e}"
        else:  # B's k are its neighbours in memory (a convolution of a channels-last input: conv.py):
            # runs of 4 threads read 4 neighbouring k of a column, as A's
            b_c, b_k = k_runs(tn)
            spot = lambda e: f"{at}({b_k(e)}) * {tn}u + {b_c(e)}"
        fetch_b, stage_b, zero_b, count_b = fetch_and_stage(
            g, "b", tn * ks // per, ("k0", "col0"), lambda e: (b_k(e), b_c(e)), lambda e, v: cols.write("tile_b", spot(e), v))
    code = "\n".join([readers, fetch_a, fetch_b]) + "\n"
    return code, (stage_a, stage_b), (count_a, count_b), (zero_a, zero_b)


def vector_reader(g: Gemm, side: str, load, check: str) -> str:
    """gemm_a4 or gemm_b4: the vec4 at (batch, row or k, first k or column), zeros outside the matrix."""
    first, second = ("am", "ak") if side == "a" else ("bk", "bn")
    return f"""
fn gemm_{side}4(batch: u32, {first}: u32, {second}: u32) -> vec4<f32> {{
{indent(stage(f"v{side}", load(f"v{side}", "batch", first, second), check, "vec4<f32>()"))}
  return v{side};
}}
"""


def lanes(side: Side, tile: str, at, v: str) -> str:
    """Store the lanes of vec4 v at the tile positions at(0) .. at(3)."""
    return " ".join(side.write(tile, at(j), f"{v}.{'xyzw'[j]}") for j in range(4))


def thin_lanes(device: DeviceClass, wide: int, fast: bool) -> int:
    """Wide elements per workgroup of the thin kernel: the most of the options that still make
    device.parallel workgroups, else the fewest; never past the wide side. When the wide elements
    are neighbours in memory (fast) at least 4 (16 bytes of a row of B per k: the two workgroups
    sharing a 32-byte sector read it from L2, which keeps the whole weight of a decode step's
    product), else (a linear layer's [N, K] weight: each wide element's k are neighbours) as few
    as 2, the rest of the 256 threads splitting K."""
    options = THIN_LANES if fast else THIN_K_LANES
    fits = [lanes for lanes in options if ceil(wide / lanes) >= device.parallel]
    return min(max(fits, default=options[0]), 1 << (wide - 1).bit_length())


def thin(g: Gemm) -> tuple[str, tuple[int, int, int]]:
    """Threads own elements of the wide side (columns, or rows when there are fewer columns), split K
    and go through the narrow side; neighbouring threads read neighbouring memory where they can.
    A single-row product (decoding) is a stream of B through memory: each workgroup takes few
    columns (thin_lanes), so there are many workgroups, and each thread loads THIN_UNROLL of its k
    before using any, so many loads are in flight. A wide operand fetched by f16 words (pairs) is
    loaded a word at a time: a thread owns two neighbouring wide elements when they share words
    (vec2 sums), else takes two neighbouring k a word."""
    size = SIDE * SIDE
    _, rows, cols, _ = g.largest
    side = "a" if cols < rows else "b"  # the wide operand
    if side == "a":  # threads own rows w, go through the columns
        wide, narrow, fast = g.rows, g.cols, not g.a_k_contiguous
        load_wide, load_narrow = lambda k, fn="gemm_a": f"{fn}(batch, w, {k})", lambda n, k: f"gemm_b(batch, {k}, {n}u)"
        at = lambda n, w: f"{w}, {n}u"
    else:  # a dynamic row count is unrolled to its bound; gemm_a and gemm_put check each row
        wide, narrow, fast = g.cols, rows, g.cols_contiguous
        load_wide, load_narrow = lambda k, fn="gemm_b": f"{fn}(batch, {k}, w)", lambda n, k: f"gemm_a(batch, {n}u, {k})"
        at = lambda n, w: f"{n}u, {w}"
    lanes = thin_lanes(g.device, max_value(wide), fast)  # wide elements per workgroup
    words = pairs(g, side) and (lanes > 1 or not fast)  # its words hold two wide elements when fast, else two k (matmul.py, conv.py)
    per = 2 if words and fast else 1  # wide elements a thread owns
    across = lanes // per  # threads along the wide side
    split = size // across
    slot = [f"let lane = li % {across}u;", f"let s = li / {across}u;"] if fast else [f"let lane = li / {split}u;", f"let s = li % {split}u;"]
    sums = "part" if g.half else "acc"  # what a k adds to
    if not words:
        k_at = [f"k + {u * split}u" for u in range(THIN_UNROLL)]  # the thread's k this iteration (past K: zeros)
        accumulate = [f"let vw{u} = {g.convert(load_wide(k))};" for u, k in enumerate(k_at)]
        accumulate += [f"{sums}{n} = fma({g.convert(load_narrow(n, k))}, vw{u}, {sums}{n});" for u, k in enumerate(k_at) for n in range(narrow)]
        first = "s"
    elif per == 2:  # word u: wide elements w, w + 1 at k_at[u]
        k_at = [f"k + {u * split}u" for u in range(THIN_UNROLL)]
        accumulate = [f"let vw{u} = {precision.pair_values(load_wide(k, f'gemm_{side}_pair'))};" for u, k in enumerate(k_at)]
        accumulate += [f"acc{n} = fma(vec2<f32>({load_narrow(n, k)}), vw{u}, acc{n});" for u, k in enumerate(k_at) for n in range(narrow)]
        first = "s"
    else:  # word u: k_at[u] and the k after it
        k_at = [f"k + {2 * u * split}u" for u in range(THIN_UNROLL // 2)]
        accumulate = [f"let vw{u} = {precision.pair_values(load_wide(k, f'gemm_{side}_pair'))};" for u, k in enumerate(k_at)]
        accumulate += [line for u, k in enumerate(k_at) for n in range(narrow) for line in (
            f"acc{n} = fma({load_narrow(n, k)}, vw{u}.x, acc{n});", f"acc{n} = fma({load_narrow(n, f'{k} + 1u')}, vw{u}.y, acc{n});")]
        first = "2u * s"
    total, zero = ("vec2<f32>", "vec2<f32>()") if per == 2 else ("f32", "0.0")
    finish = []
    for n in range(narrow):
        puts = [f"gemm_put(batch, batch, {at(n, 'w')}, total);"] if per == 1 else [
            f"gemm_put(batch, batch, {at(n, 'w')}, total.x);", f"gemm_put(batch, batch, {at(n, 'w + 1u')}, total.y);"]
        finish += block("", [*workgroup_reduce("gemm_sum", "sum", total, size, across, "total", f"acc{n}", "slot"), f"if (s == 0u) {{ {' '.join(puts)} }}"])
    if g.half:  # each iteration's STEP products summed in f16, then added to the f32 sums
        accumulate = [*[f"var part{n} = 0.0h;" for n in range(narrow)], *accumulate, *[f"acc{n} += f32(part{n});" for n in range(narrow)]]
    ks = loop("k", first, u32(g.depth), THIN_UNROLL * split, accumulate)
    # the narrow operand is read by elements (the wide one too without words)
    read = replace(g, **{f"load_{x}_pair": None for x in "ab" if x != side or not words})
    code = functions(read) + workgroup_scratch("gemm_sum", total, size, across) + f"""

@compute @workgroup_size({size})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {{
  let batch = wg.z;
{indent(slot)}
  let slot = s * {across}u + lane;
  let w = wg.x * {lanes}u + {'2u * ' if per == 2 else ''}lane;
{indent([f"var acc{n} = {zero};" for n in range(narrow)])}
  if (w < {u32(wide)}) {{
{indent(ks, 2)}
  }}
{indent(finish)}
}}
"""
    return code, (ceil_div_count(wide, lanes), 1, ceil_div_count(g.batch, 1))


def loop(var: str, begin: str, end: str, stride: int, lines: list[str]) -> list[str]:
    return block(f"for (var {var} = {begin}; {var} < {end}; {var} += {stride}u)", lines)
