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
"""

from contextlib import contextmanager
from dataclasses import dataclass
from math import ceil
from typing import Callable

from kuma_build.compiler.kernels.rows import workgroup_reduce
from kuma_build.compiler.kernels.wgsl import indent

STEP, SIDE = 16, 16  # K per stage; threads per workgroup side (16 x 16 = 256)
# The device class kernels are tuned for; docs/performance.md ("Compiler changes") measures both.
# "cpu": software WebGPU (SwiftShader, lavapipe) runs a workgroup per core (2 on the machines
# measured), and convolutions gain nothing from staging through workgroup memory: they stay
# direct. "gpu": a discrete GPU keeps ~100+ workgroups in flight; convolutions are implicit GEMMs.
#   parallel  workgroups the device runs at once: the tile cost model's waves
#   tiles     tile sides to choose from: a CPU has too few registers for 8 x 8 outputs per thread
#   splits    slices K may be split into, to fill the device when the tiles are few
#   rows      softmax, norms, reductions, attention: a "workgroup" per row sharing it through
#             barriers, or a "thread" per row (SwiftShader switches every thread at each barrier)
DEVICE_CLASSES = {
    "cpu": {"name": "cpu", "parallel": 2, "conv": "direct", "tiles": (16, 32, 64), "splits": (1,), "rows": "thread"},
    "gpu": {"name": "gpu", "parallel": 128, "conv": "gemm", "tiles": (16, 32, 64, 128), "splits": (1, 2, 4, 8, 16, 32),
            "rows": "workgroup"},
}
DEVICE = DEVICE_CLASSES["cpu"]  # kuma.toml's `target` picks the class per model (tuned_for)
STEP_LATENCY = 256  # the fixed cost of a K step (barriers, memory latency), in a thread's FMAs
SPLIT_COST = 1024  # the dispatch that sums split-K partials, in the same units
MIN_SPLIT_STEPS = 4  # K steps each slice keeps at least
THIN = 8  # at most this many rows or columns: the thin kernel


@contextmanager
def tuned_for(target: str | None):
    """Generate kernels for the device class `target` inside the block (None keeps the current one)."""
    global DEVICE
    saved = DEVICE
    DEVICE = DEVICE_CLASSES[target] if target else DEVICE
    try:
        yield
    finally:
        DEVICE = saved


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
    splits: int = 1  # K in this many slices, each summed into its own partial output (passes/split_k.py)


def cost(batch: int, rows: int, cols: int, depth: int, tm: int, tn: int, splits: int) -> float:
    """Estimated time of the tiled kernel: waves of DEVICE["parallel"] workgroups, each running its
    K steps; a step costs its thread's FMAs and workgroup-memory reads, its share of the global
    loads and a fixed latency (barriers, memory). Splitting K adds a dispatch that sums the partials."""
    groups = batch * ceil(rows / tm) * ceil(cols / tn) * splits
    rows_side, cols_side = Side(tm), Side(tn)
    per_step = STEP * (rows_side.per * cols_side.per + rows_side.groups + cols_side.groups) + 4 * (tm + tn) * STEP / SIDE ** 2
    steps = ceil(depth / splits / STEP)
    return ceil(groups / DEVICE["parallel"]) * steps * (per_step + STEP_LATENCY) + (splits > 1) * SPLIT_COST


def choose_tile(g: Gemm) -> tuple[int, int]:
    """The tile of least estimated cost for g's shape and split (ties: the bigger tile)."""
    tiles = [(tm, tn) for tm in DEVICE["tiles"] for tn in DEVICE["tiles"]]
    return min(tiles, key=lambda t: (cost(g.batch, g.rows, g.cols, g.depth, *t, g.splits), -t[0] * t[1]))


def choose_split(batch: int, rows: int, cols: int, depth: int) -> int:
    """Into how many slices of K the tiled kernel should split a product (1: don't). Splitting
    only pays when the tiles are too few to fill the device and K is long."""
    if min(rows, cols) <= THIN:
        return 1  # the thin kernel splits K inside its workgroups
    options = [(tm, tn, s) for tm in DEVICE["tiles"] for tn in DEVICE["tiles"] for s in DEVICE["splits"]
               if s == 1 or depth >= s * STEP * MIN_SPLIT_STEPS]
    return min(options, key=lambda o: (cost(batch, rows, cols, depth, *o), o[2]))[2]


def stage(var: str, load: list[str], check: str = "") -> list[str]:
    """Lines setting `var` to the loaded element, or 0.0 when `check` fails (outside the matrix)."""
    if not check:
        return [f"var {var} = 0.0;", *load]
    return [f"var {var} = 0.0;", f"if ({check}) {{", *["  " + line for line in load], "}"]


def block(lines: list[str]) -> list[str]:
    """A braced block, so unrolled copies of the same lines can each declare their own names."""
    return ["{", *["  " + line for line in lines], "}"]


def store(g: Gemm, b: str, r: str, c: str, total: str, check: str, slot: str = "") -> list[str]:
    """Finish and store output (b, r, c); `slot` (default b) is the output matrix it lands in."""
    lines, value = g.finish(total, b, r, c)
    body = [f"let flat = ({slot or b} * {g.rows}u + {r}) * {g.cols}u + {c};", *lines, f"out[flat] = {value};"]
    return [f"if ({check}) {{", *["  " + line for line in body], "}"]


# Per-thread values are scalars with names fixed in the generator (acc_0_1, not acc[i][j] in a
# WGSL loop): GPU drivers keep run-time-indexed private arrays in slow local memory, which made
# every K step of the first matmul kernel ~60 us on an H200 (docs/performance.md).

@dataclass
class Side:
    """How one side (rows or columns) of a tile spreads over a line of SIDE threads: each thread
    owns `per` positions in `groups` runs of `width` neighbours (width <= 4), runs SIDE * width
    apart. A run is one vecN read from workgroup memory, and neighbouring threads read
    neighbouring runs, so the reads neither conflict nor repeat."""
    tile: int

    @property
    def per(self) -> int:
        return self.tile // SIDE

    @property
    def width(self) -> int:
        return min(4, self.per)

    @property
    def groups(self) -> int:
        return self.per // self.width

    def type(self) -> str:
        return "f32" if self.width == 1 else f"vec{self.width}<f32>"

    def position(self, i: int, thread: str) -> str:
        """The tile position of the thread's i-th element."""
        group, lane = divmod(i, self.width)
        return f"{group * SIDE * self.width}u + {thread} * {self.width}u + {lane}u"

    def element(self, run: str, i: int) -> str:
        """Element i of the thread's runs, read into run0, run1, ..."""
        group, lane = divmod(i, self.width)
        return f"{run}{group}" + ("" if self.width == 1 else "." + "xyzw"[lane])

    def reads(self, run: str, tile: str, thread: str) -> list[str]:
        runs = self.tile // self.width
        return [f"let {run}{g} = {tile}[kk * {runs}u + {g * SIDE}u + {thread}];" for g in range(self.groups)]

    def write(self, tile: str, e: str, value: str) -> str:
        """Store element e of the k-major staged tile."""
        return f"{tile}[{e}] = {value};" if self.width == 1 else f"{tile}[({e}) / {self.width}u][({e}) % {self.width}u] = {value};"


def tiled(g: Gemm) -> tuple[str, tuple[int, int, int]]:
    """TM x TN outputs per workgroup of SIDE x SIDE threads. Each K step stages A's TM x STEP and
    B's STEP x TN block in workgroup memory (k-major, so the threads' reads are vectors); the next
    step's elements are fetched into registers while this step computes, hiding memory latency.
    With g.splits > 1, workgroup z = split * batch + b sums one slice of K into partial sums."""
    tm, tn = choose_tile(g)
    rows, cols = Side(tm), Side(tn)
    pairs = [(i, j) for i in range(rows.per) for j in range(cols.per)]
    fetch_a, fetch_b = tm * STEP // SIDE ** 2, tn * STEP // SIDE ** 2  # staged elements per thread
    span = ceil(g.depth / g.splits / STEP) * STEP  # K per split, whole steps

    def a_at(i: int) -> tuple[str, str]:
        """(m, k) in the tile of the thread's i-th staged A element. When A's k are neighbours in
        memory, runs of 4 threads read 4 neighbouring k of a row (4-way conflicts on the store,
        8 rows a warp instead of 32): 17% faster on an H100 (docs/performance.md)."""
        t = f"(li + {i * SIDE ** 2}u)"
        if g.a_k_contiguous:
            return f"(({t} / 4u) % {tm}u)", f"({t} % 4u + 4u * ({t} / {4 * tm}u))"
        return f"({t} % {tm}u)", f"({t} / {tm}u)"

    def fetch(k0: str) -> list[str]:
        lines = []
        for i in range(fetch_a):
            load = stage("va", g.load_a("va", "batch", "am", "ak"), f"am < {g.rows}u && ak < {g.depth}u")
            m, k = a_at(i)
            lines += block([f"let am = row0 + {m};", f"let ak = {k0} + {k};",
                            *load, f"fa{i} = va;"])
        for j in range(fetch_b):  # element e = k * tn + n
            load = stage("vb", g.load_b("vb", "batch", "bk", "bn"), f"bk < {g.depth}u && bn < {g.cols}u")
            lines += block([f"let e = li + {j * SIDE ** 2}u;", f"let bk = {k0} + e / {tn}u;", f"let bn = col0 + e % {tn}u;",
                            *load, f"fb{j} = vb;"])
        return lines

    stage_tiles = ([rows.write("tile_a", f"{a_at(i)[1]} * {tm}u + {a_at(i)[0]}", f"fa{i}") for i in range(fetch_a)]
                   + [cols.write("tile_b", f"li + {j * SIDE ** 2}u", f"fb{j}") for j in range(fetch_b)])
    step = (rows.reads("a", "tile_a", "lid.y") + cols.reads("b", "tile_b", "lid.x")
            + [f"acc_{i}_{j} = fma({rows.element('a', i)}, {cols.element('b', j)}, acc_{i}_{j});" for i, j in pairs])
    # the K step unrolled here: the driver did not unroll Naga's loop (10% on an H100)
    inner = [line for c in range(STEP) for line in block([f"let kk = {c}u;", *step])]
    writes = []
    for i, j in pairs:
        writes += block([f"let r = row0 + {rows.position(i, 'lid.y')};", f"let c = col0 + {cols.position(j, 'lid.x')};",
                         *store(g, "batch", "r", "c", f"acc_{i}_{j}", f"r < {g.rows}u && c < {g.cols}u", slot="wg.z")])
    code = f"""
var<workgroup> tile_a: array<{rows.type()}, {tm * STEP // rows.width}>;
var<workgroup> tile_b: array<{cols.type()}, {tn * STEP // cols.width}>;

@compute @workgroup_size({SIDE}, {SIDE})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) li: u32) {{
  let batch = wg.z % {g.batch}u;
  let k_begin = (wg.z / {g.batch}u) * {span}u;
  let k_end = min(k_begin + {span}u, {g.depth}u);
  let row0 = wg.y * {tm}u;
  let col0 = wg.x * {tn}u;
{indent([f"var acc_{i}_{j} = 0.0;" for i, j in pairs] + [f"var fa{i} = 0.0;" for i in range(fetch_a)] + [f"var fb{j} = 0.0;" for j in range(fetch_b)])}
{indent(fetch("k_begin"))}
  for (var k0 = k_begin; k0 < k_end; k0 += {STEP}u) {{
{indent(stage_tiles, 2)}
    workgroupBarrier();
    if (k0 + {STEP}u < k_end) {{
{indent(fetch(f"k0 + {STEP}u"), 3)}
    }}
{indent(inner, 2)}
    workgroupBarrier();
  }}
{indent(writes)}
}}
"""
    return code, (ceil(g.cols / tn), ceil(g.rows / tm), g.batch * g.splits)


def thin(g: Gemm) -> tuple[str, tuple[int, int, int]]:
    """Threads own elements of the wide side (columns, or rows when there are fewer columns), split K
    and go through the narrow side; neighbouring threads read neighbouring memory where they can."""
    size = SIDE * SIDE
    if g.cols < g.rows:  # threads own rows w, go through the columns
        wide, narrow, fast = g.rows, g.cols, not g.a_k_contiguous
        load_wide = g.load_a("vw", "batch", "w", "k")
        load_narrow = lambda n: g.load_b("vn", "batch", "k", f"{n}u")
        at = lambda n: ("w", f"{n}u")
    else:
        wide, narrow, fast = g.cols, g.rows, g.cols_contiguous
        load_wide = g.load_b("vw", "batch", "k", "w")
        load_narrow = lambda n: g.load_a("vn", "batch", f"{n}u", "k")
        at = lambda n: (f"{n}u", "w")
    lanes = min(32, 1 << (wide - 1).bit_length()) if fast else 8  # wide elements per workgroup
    split = size // lanes
    slot = [f"let lane = li % {lanes}u;", f"let s = li / {lanes}u;"] if fast else [f"let lane = li / {split}u;", f"let s = li % {split}u;"]
    accumulate, finish = [], []
    for n in range(narrow):
        accumulate += block([*stage("vn", load_narrow(n)), f"acc{n} = fma(vn, vw, acc{n});"])
        finish += block([f"let total = gemm_sum(acc{n}, s * {lanes}u + lane);",
                         *store(g, "batch", *at(n), "total", f"s == 0u && w < {wide}u")])
    code = workgroup_reduce("gemm_sum", "sum", "f32", size, lanes) + f"""

@compute @workgroup_size({size})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {{
  let batch = wg.z;
{indent(slot)}
  let w = wg.x * {lanes}u + lane;
{indent([f"var acc{n} = 0.0;" for n in range(narrow)])}
  if (w < {wide}u) {{
    for (var k = s; k < {g.depth}u; k += {split}u) {{
{indent(stage("vw", load_wide), 3)}
{indent(accumulate, 3)}
    }}
  }}
{indent(finish)}
}}
"""
    return code, (ceil(wide / lanes), 1, g.batch)


def gemm_code(g: Gemm) -> tuple[str, tuple[int, int, int]]:
    """WGSL (after the bindings) and workgroup counts of the best kernel for g."""
    return thin(g) if min(g.rows, g.cols) <= THIN else tiled(g)
