"""Matrix-product kernels shared by matmul and convolution (implicit GEMM).

A Gemm computes out[b, r, c] = finish(sum_k A[b, r, k] * B[b, k, c]) into the
contiguous output at (b * rows + r) * cols + c. The caller says how to read
one element of A and of B (WGSL lines assigning a variable, so a convolution
can compute the input coordinate of (k, c) and pad with zeros) and how to
finish a sum (alpha, bias, fused epilogue). Two kernels:

- tiled: a TM x TN tile per 16x16-thread workgroup, K in steps of 16 through
  workgroup memory; each thread owns (TM/16) x (TN/16) outputs spaced 16
  apart, so stores coalesce and workgroup-memory reads don't conflict. The
  tile is chosen per shape (choose_tile) by a small cost model.
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
TILES = (16, 32, 64)
# The device class kernels are tuned for; docs/performance.md ("Compiler changes") measures both.
# "cpu": software WebGPU (SwiftShader, lavapipe) runs a workgroup per core (2 on the machines
# measured), and convolutions gain nothing from staging through workgroup memory: they stay
# direct. "gpu": a discrete GPU keeps ~100+ workgroups in flight; convolutions are implicit GEMMs.
#   parallel  workgroups the device runs at once: the tile cost model's waves
DEVICE_CLASSES = {"cpu": {"name": "cpu", "parallel": 2, "conv": "direct"}, "gpu": {"name": "gpu", "parallel": 128, "conv": "gemm"}}
DEVICE = DEVICE_CLASSES["cpu"]  # kuma.toml's `target` picks the class per model (tuned_for)
STEP_OVERHEAD = 4  # the fixed cost of a thread's K step (loop, bounds checks), in FMAs
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


def choose_tile(g: Gemm) -> tuple[int, int]:
    """The tile with the least estimated time: waves of DEVICE["parallel"] workgroups, each costing
    per K step its thread's FMAs, workgroup-memory reads and overhead, and its share of global loads."""
    def cost(tm, tn):
        groups = g.batch * ceil(g.rows / tm) * ceil(g.cols / tn)
        rm, rn = tm // SIDE, tn // SIDE
        return ceil(groups / DEVICE["parallel"]) * (rm * rn + rm + rn + STEP_OVERHEAD + 4 * (tm + tn) / SIDE ** 2)
    return min(((tm, tn) for tm in TILES for tn in TILES), key=lambda t: (cost(*t), -t[0] * t[1]))


def stage(var: str, load: list[str], check: str = "") -> list[str]:
    """Lines setting `var` to the loaded element, or 0.0 when `check` fails (outside the matrix)."""
    if not check:
        return [f"var {var} = 0.0;", *load]
    return [f"var {var} = 0.0;", f"if ({check}) {{", *["  " + line for line in load], "}"]


def block(lines: list[str]) -> list[str]:
    """A braced block, so unrolled copies of the same lines can each declare their own names."""
    return ["{", *["  " + line for line in lines], "}"]


def store(g: Gemm, b: str, r: str, c: str, total: str, check: str) -> list[str]:
    lines, value = g.finish(total, b, r, c)
    body = [f"let flat = ({b} * {g.rows}u + {r}) * {g.cols}u + {c};", *lines, f"out[flat] = {value};"]
    return [f"if ({check}) {{", *["  " + line for line in body], "}"]


# Per-thread values are scalars with names fixed in the generator (acc_0_1, not acc[i][j] in a
# WGSL loop): GPU drivers keep run-time-indexed private arrays in slow local memory, which made
# every K step of the first matmul kernel ~60 us on an H200 (docs/performance.md).

def tiled(g: Gemm) -> tuple[str, tuple[int, int, int]]:
    tm, tn = choose_tile(g)
    rm, rn = tm // SIDE, tn // SIDE
    pairs = [(i, j) for i in range(rm) for j in range(rn)]
    load_a = stage("va", g.load_a("va", "batch", "am", "ak"), f"am < {g.rows}u && ak < {g.depth}u")
    load_b = stage("vb", g.load_b("vb", "batch", "bk", "bn"), f"bk < {g.depth}u && bn < {g.cols}u")
    step = ([f"let a{i} = tile_a[kk * {tm}u + lid.y + {i * SIDE}u];" for i in range(rm)]
            + [f"let b{j} = tile_b[kk * {tn}u + lid.x + {j * SIDE}u];" for j in range(rn)]
            + [f"acc_{i}_{j} = fma(a{i}, b{j}, acc_{i}_{j});" for i, j in pairs])
    writes = []
    for i, j in pairs:
        writes += block([f"let r = row0 + lid.y + {i * SIDE}u;", f"let c = col0 + lid.x + {j * SIDE}u;",
                         *store(g, "batch", "r", "c", f"acc_{i}_{j}", f"r < {g.rows}u && c < {g.cols}u")])
    code = f"""
var<workgroup> tile_a: array<f32, {tm * STEP}>;
var<workgroup> tile_b: array<f32, {tn * STEP}>;

@compute @workgroup_size({SIDE}, {SIDE})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) li: u32) {{
  let batch = wg.z;
  let row0 = wg.y * {tm}u;
  let col0 = wg.x * {tn}u;
{indent([f"var acc_{i}_{j} = 0.0;" for i, j in pairs])}
  for (var k0 = 0u; k0 < {g.depth}u; k0 += {STEP}u) {{
    for (var e = li; e < {tm * STEP}u; e += {SIDE * SIDE}u) {{
      let am = row0 + e / {STEP}u;
      let ak = k0 + e % {STEP}u;
{indent(load_a, 3)}
      tile_a[(e % {STEP}u) * {tm}u + e / {STEP}u] = va;
    }}
    for (var e = li; e < {tn * STEP}u; e += {SIDE * SIDE}u) {{
      let bk = k0 + e / {tn}u;
      let bn = col0 + e % {tn}u;
{indent(load_b, 3)}
      tile_b[e] = vb;
    }}
    workgroupBarrier();
    for (var kk = 0u; kk < {STEP}u; kk++) {{
{indent(step, 3)}
    }}
    workgroupBarrier();
  }}
{indent(writes)}
}}
"""
    return code, (ceil(g.cols / tn), ceil(g.rows / tm), g.batch)


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
