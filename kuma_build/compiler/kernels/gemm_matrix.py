"""The tiled product on subgroup matrices (tensor cores): a third variant of a product reading f16
weights, beside the f32 one and the shader-f16 one (`half`, gemm.py), for adapters that offer
shader-f16 and Chromium's experimental subgroup matrices with an f16 x f16 -> f32 config of
M = N = K = MATRIX and subgroups exactly SUBGROUP wide (the runtime checks, templates/runtime.js).

The same tile, workgroup grid and dispatch as gemm.py's tiled kernel (choose_tile), whose other
variants a program ships beside it; linear layers that run here take this kernel's own tile and
split (TILE, below: own_tile, decided in passes/split_k.py), which the other variants then share. 256 invocations are SUBGROUPS subgroups of SUBGROUP;
subgroup s is invocations s * SUBGROUP .. (s + 1) * SUBGROUP - 1 (how NVIDIA forms them, and what
ONNX Runtime's subgroup-matrix kernels assume too). Each subgroup multiplies a rectangle of the
tile's MATRIX x MATRIX blocks (block_grid: the rectangle that loads the fewest matrices), PR left
and PC right matrices per MATRIX of k, PR x PC multiply-accumulates into f32 result matrices.
Where the matrices come from (Operand):

- an f16 weight (a linear layer's [K, N] weight, a convolution's [Cout, K] one: Gemm.stored_a,
  stored_b) is loaded straight from its storage binding, no staging and no barrier, when its wide
  side and K are whole matrices (stored()): a matrix past the wide side (an edge tile) is clamped
  to the last one inside, whose results gemm_put's bounds drop. Each step's matrices are loaded
  after the previous step's multiplies, into the registers they free, their latency overlapping
  the wait for the staged fetches (WEIGHT_LOADS: or at the step's start, or a whole step ahead
  where registers allow: estimate, two workgroups a multiprocessor); WEIGHTS_FROM_STORAGE off
  stages them as the other operand. The "-f16" program stores such weights in 16 x 16 blocks
  (passes/matrix_blocks.py, Stored.blocked): a matrix is then one block, 512 contiguous bytes;
- the other operand (activations, f32) is staged in workgroup memory as f16 through gemm.functions'
  gemm_a and gemm_b (zero outside the matrices), a step of k between two barriers (choose_step:
  the fewest steps of a K slice that fit workgroup memory, up to 128 k), each line PAD values
  longer so a matrix's rows lie in different banks. Invocation i fetches elements i, i + 256, ...
  in the order memory has them, four neighbours at a time where the counts divide (one bounds
  check for the four), into registers a step ahead, as in the tiled kernel, each step's issued
  as soon as the step before's are staged (FETCH_BEFORE_BARRIER), and rounds them to f16 as it
  stages them where registers allow (CONVERT_AT_STAGE), so nothing waits on the loads before then.

A step's last matrices along k that lie past the slice or K (K not a multiple of the step) are
skipped. The results of a product that stores its sums as they are (a split product's partials,
stores_sum) go straight to the output, a whole result matrix at a time, also where the rows are
not whole matrices (ViT's 197 tokens): the last tile of rows is shifted back to end at the last
row, or, in a product of fewer rows than the tile, its last block; otherwise each subgroup
stores its result matrices one at a time into its own MATRIX x MATRIX slice of f32 workgroup
memory (tile_c; in rounds of some of the subgroups where that leaves the staged tiles longer
steps: FINISH_ROUNDS), and each of its invocations finishes 8 of the elements through gemm_put
(alpha, bias, fused epilogue, bounds), as the tiled kernel finishes its own. The products of f16
values are exact in f32 and the sums are f32, so this variant rounds only the operands. Only tiles of at least
SUBGROUPS blocks get it (block_grid); a product of smaller tiles keeps the two other variants, as
do the thin kernel and the "cpu" class's.

The builtins compile only where an adapter offers them, and no local WebGPU does (SwiftShader,
lavapipe). So the kernel is written against Primitives, with two backends: SUBGROUP_MATRIX, the
real builtins, which builds ship, and EMULATED, plain WGSL with the builtins' semantics (offset,
stride and column-major as subgroupMatrixLoad and subgroupMatrixStore read them; each invocation of
a subgroup keeps 8 elements of a result matrix), which tests run on lavapipe against PyTorch. The
two kernels differ only in the lines that call a primitive (tests/test_gemm_matrix.py checks both).
The emulation reads a loaded matrix's elements at the multiply, not at the load: the same values
here, since nothing writes the staged tiles between a step's loads and its multiplies, nor the
weights ever.
"""

from dataclasses import dataclass, field, replace
from math import ceil

from kuma_build.devices import DeviceClass
from kuma_build.compiler import precision
from kuma_build.compiler.ir.sizes import Sym, ceil_div_count, max_value, wgsl as u32
from kuma_build.compiler.kernels.gemm import SIDE, STEP, THIN, Gemm, Stored, choose_split, choose_tile, functions
from kuma_build.compiler.kernels.wgsl import block, indent

MATRIX = 16  # M = N = K of every subgroup matrix (the config the runtime asks the adapter for)
SUBGROUP = 32  # invocations per subgroup
THREADS = SIDE * SIDE
SUBGROUPS = THREADS // SUBGROUP
assert MATRIX == precision.BLOCK  # a blocked weight's block is one matrix
PER_INVOCATION = MATRIX * MATRIX // SUBGROUP  # result elements an invocation finishes (and the emulation keeps)
assert STEP == MATRIX  # K slices (Gemm.span) start on a matrix


class Primitives:
    """How the kernel spells the subgroup-matrix builtins: their WGSL expressions and statements,
    the module's directives (before the bindings) and any helpers (after them)."""

    def directives(self) -> str:
        return ("enable f16;\nenable chromium_experimental_subgroup_matrix;\n"
                # the operands' offsets depend on the subgroup (invocation index / SUBGROUP), which
                # the analysis cannot prove uniform in a subgroup; they are
                "diagnostic(off, chromium.subgroup_matrix_uniformity);")

    def helpers(self) -> str:
        return ""

    def zero(self) -> str:
        return f"subgroup_matrix_result<f32, {MATRIX}, {MATRIX}>()"

    def load(self, side: str, array: str, offset: str, col_major: bool, stride: str) -> str:
        kind = f"subgroup_matrix_{side}<f16, {MATRIX}, {MATRIX}>"
        return f"subgroupMatrixLoad<{kind}>(&{array}, {offset}, {str(col_major).lower()}, {stride})"

    def multiply_add(self, left: str, right: str, acc: str) -> str:
        return f"subgroupMatrixMultiplyAccumulate({left}, {right}, {acc})"

    def store(self, array: str, offset: str, value: str, col_major: bool, stride: str) -> str:
        return f"subgroupMatrixStore(&{array}, {offset}, {value}, {str(col_major).lower()}, {stride});"


@dataclass
class Emulated(Primitives):
    """The builtins in plain WGSL, for tests on adapters without them. A left or right matrix is
    where it lies (EmulatedMatrix: the array its load names, offset, stride, column-major), read at
    the multiply; a result matrix is the 8 elements one invocation keeps (EmulatedResult), those at
    8 * lane .. 8 * lane + 7 of its row-major order, lane = invocation index % SUBGROUP."""
    arrays: dict = field(default_factory=dict)  # side -> the workgroup array its loads read

    def directives(self) -> str:
        return "enable f16;"

    def helpers(self) -> str:
        left, right, result = (self.arrays.get(side) for side in ("left", "right", "result"))
        half = PER_INVOCATION // 2
        lines = [
            "struct EmulatedMatrix { offset: u32, stride: u32, col_major: bool }",
            f"struct EmulatedResult {{ lo: vec{half}<f32>, hi: vec{half}<f32> }}",
            "",
            "// element [r, c]'s index in its array, as subgroupMatrixLoad and subgroupMatrixStore place it",
            "fn emulated_index(m: EmulatedMatrix, r: u32, c: u32) -> u32 { return m.offset + select(r * m.stride + c, c * m.stride + r, m.col_major); }",
            "",
            "// the invocation's row and first column in a result matrix",
            f"fn emulated_row(li: u32) -> u32 {{ return (li % {SUBGROUP}u) / {MATRIX // PER_INVOCATION}u; }}",
            f"fn emulated_column(li: u32) -> u32 {{ return (li % {MATRIX // PER_INVOCATION}u) * {PER_INVOCATION}u; }}",
        ]
        if left and right:
            right_row = lambda lanes: f"vec{half}<f32>(" + ", ".join(
                f"f32({right}[emulated_index(b, k, c + {j}u)])" for j in lanes) + ")"
            lines += ["", f"""fn emulated_multiply_add(a: EmulatedMatrix, b: EmulatedMatrix, acc: EmulatedResult, li: u32) -> EmulatedResult {{
  let r = emulated_row(li);
  let c = emulated_column(li);
  var sum = acc;
  for (var k = 0u; k < {MATRIX}u; k++) {{
    let x = f32({left}[emulated_index(a, r, k)]);
    sum.lo += x * {right_row(range(half))};
    sum.hi += x * {right_row(range(half, PER_INVOCATION))};
  }}
  return sum;
}}"""]
        if result:
            put = [f"{result}[emulated_index(at, r, c + {j}u)] = m.{'lo' if j < half else 'hi'}[{j % half}];" for j in range(PER_INVOCATION)]
            lines += ["", f"""fn emulated_store(offset: u32, m: EmulatedResult, col_major: bool, stride: u32, li: u32) {{
  let r = emulated_row(li);
  let c = emulated_column(li);
  let at = EmulatedMatrix(offset, stride, col_major);
{indent(put)}
}}"""]
        return "\n".join(lines)

    def _array(self, side: str, array: str) -> None:
        assert self.arrays.setdefault(side, array) == array, "the emulation reads each side's matrices from one array"

    def zero(self) -> str:
        return "EmulatedResult()"

    def load(self, side: str, array: str, offset: str, col_major: bool, stride: str) -> str:
        self._array(side, array)
        return f"EmulatedMatrix({offset}, {stride}, {str(col_major).lower()})"

    def multiply_add(self, left: str, right: str, acc: str) -> str:
        return f"emulated_multiply_add({left}, {right}, {acc}, li)"

    def store(self, array: str, offset: str, value: str, col_major: bool, stride: str) -> str:
        self._array("result", array)
        return f"emulated_store({offset}, {value}, {str(col_major).lower()}, {stride}, li);"


SUBGROUP_MATRIX = "subgroup-matrix"
EMULATED = "emulated"
BACKEND = SUBGROUP_MATRIX  # what builds ship; tests set EMULATED to run the kernel on lavapipe


def primitives(backend: str) -> Primitives:
    return Emulated() if backend == EMULATED else Primitives()


def block_grid(tm: int, tn: int) -> tuple[int, int] | None:
    """How the subgroups split a tm x tn tile's MATRIX x MATRIX blocks: (subgroups along the rows,
    along the columns), each taking an equal rectangle of blocks, the one whose left and right
    matrices are fewest; None when the tile has fewer blocks than subgroups."""
    rows, cols = tm // MATRIX, tn // MATRIX
    options = [(s, SUBGROUPS // s) for s in range(1, SUBGROUPS + 1)
               if SUBGROUPS % s == 0 and rows % s == 0 and cols % (SUBGROUPS // s) == 0]
    return min(options, key=lambda o: rows // o[0] + cols // o[1], default=None)


@dataclass
class Operand:
    """One side of the product as the kernel reaches its matrices: A gives left matrices (rows: its
    rows, columns: k), B right ones (rows: k, columns: its columns). Its `wide` index is A's row or
    B's column; element (wide i, k) lies at i * wide_stride + k * k_stride past the matrix's offset,
    in the storage binding (stored, straight from an f16 weight) or in the staged tile (else)."""
    side: str  # "left" or "right"
    name: str  # "a" or "b": the tile, fetch and matrix variables' letter
    tile: int  # the tile's extent along wide (tm or tn)
    stored: Stored | None  # loaded straight from storage, else staged
    k_inner: bool = True  # staged: a wide element's k are neighbours in the tile (as in memory)

    def strides(self, step: int) -> tuple[int, int]:
        """(wide_stride, k_stride) of the staged tile, each line PAD longer than its data."""
        if self.stored:
            return self.stored.wide_stride, self.stored.k_stride
        return (step + PAD, 1) if self.k_inner else (1, self.tile + PAD)

    def staged(self, step: int) -> int:
        """f16 values of the staged tile (0 when stored)."""
        return 0 if self.stored else (self.tile * (step + PAD) if self.k_inner else step * (self.tile + PAD))

    def load(self, p: Primitives, array: str, offset: str, step: int) -> str:
        """The matrix whose element (0, 0) is at offset: row-major where its columns are neighbours;
        of a blocked weight (Stored.blocked), the block that row-major offset falls in."""
        if self.stored and self.stored.blocked:  # offset = row * n + column, both multiples of MATRIX
            n = self.stored.blocked
            return p.load(self.side, array, f"({offset}) / {n}u * {n}u + ({offset}) % {n}u * {MATRIX}u", False, f"{MATRIX}u")
        wide, k = self.strides(step)
        rows, columns = (wide, k) if self.side == "left" else (k, wide)
        col_major = columns != 1
        return p.load(self.side, array, offset, col_major, f"{columns if col_major else rows}u")


VECTOR = 4  # neighbours along a staged tile's line that an invocation fetches at once
PAD = 8  # f16 (16 bytes) past each line of a staged tile: a matrix's rows then start in different banks
STEPS = (16, 32, 48, 64, 96, 128)  # k per staged step (between two barriers), the fewest steps that fit chosen
# registers an invocation may give its result, loaded and fetched matrices so that two workgroups
# fit a multiprocessor (NVIDIA: 64K 32-bit registers, 128 an invocation of 512), the rest left for
# indices (estimate()); what decides the step, whether fetches stay f32 until staged and whether the
# matrices from storage may be loaded a step ahead
REGISTERS = 104
# knobs (bench/gpu/dawn/bench.py --gemm-knob gemm_matrix.NAME=VALUE sets them for an A/B):
# - WEIGHTS_FROM_STORAGE: an f16 weight's matrices loaded straight from its binding (stored());
#   False stages it through workgroup memory as the activations are (vector fetches, then matrix
#   loads from workgroup memory; smaller steps, as both tiles share the 16 KB). Also slower given
#   48 KB (steps of 32 to 128 k, three tiles): BERT-512 f16 2.80 -> 3.97-5.65 ms (2026-12-02 07:23, docs/performance.md);
# - WEIGHT_LOADS: when those matrices of a step are loaded. "ahead": with the step before's fetches,
#   before its multiplies, where REGISTERS allow a second step of them (else as "end"); "end":
#   after the step before's multiplies, into the registers they free; "start": at the step's own
#   start, before its staged tiles are written. "end" was to be faster: a step waits on the global latency
#   of its staged fetches (issued a step before) in any case, so "ahead" gains little over it and
#   holds twice the matrices (BERT's 64 x 64 tiles: 48 registers against 24), which costs
#   occupancy: BERT's 288 to 384 workgroups a product fit the H200's 132 multiprocessors in one
#   wave at three workgroups each (80 registers an invocation), in two at two. "end" issues the
#   loads a barrier earlier than "start" and holds them as long but for that barrier
# - CONVERT_AT_STAGE: a staged side's fetches kept in registers as f32, as loaded, and rounded to
#   f16 when staged. Converting as they are fetched made the fetch wait for its loads there, one
#   fetch after the other, a step ahead of where the values are needed (the tiled kernel's f16
#   weight words: docs/performance.md, 07:45 UTC); f32 holds twice the registers (BERT's 64 x 64
#   tiles: 24 against 12), so only where REGISTERS allow them at the step chosen for f16 fetches
#   (not 128 x 128 tiles). False converts them in the fetch
# - FINISH_ROUNDS: results that go through workgroup memory (alpha, bias, epilogues) pass through
#   tile_c in up to this many rounds of SUBGROUPS // rounds subgroups, so that it leaves the
#   staged tiles room for longer steps (BERT-512's unsplit 64 x 64 products with their bias and
#   GELU: 8 KB of tile_c at once left steps of 48, 16 for a K of 768; in 4 rounds 2 KB, steps of
#   96), two barriers a round a result matrix; where more rounds would not shorten the steps,
#   fewer. 1: all subgroups at once
# - FETCH_BEFORE_BARRIER: the next step's fetches (and matrices loaded "ahead") issued as soon as
#   this step's are staged, before the barrier after which every subgroup multiplies, so an
#   invocation's loads are in flight while it waits there; False issues them after it
# Defaults as measured one knob at a time on the H200 (11:30-11:34 UTC, f16 with Dawn's f16 toggle, GPU ms
# back to back, BERT-128 / BERT-512 / GPT-2): the old kernel 1.307 / 4.158 / 1.303; WEIGHT_LOADS
# "end" 1.248 / 3.677 / 1.244 (taken); CONVERT_AT_STAGE 1.352 / 4.569 / 1.343; FINISH_ROUNDS 4
# 1.308 / 4.440 / 1.312; FETCH_BEFORE_BARRIER 1.289 / 4.154 / 1.289 (within 1%: left off)
WEIGHTS_FROM_STORAGE = True
WEIGHT_LOADS = "end"
CONVERT_AT_STAGE = False
FINISH_ROUNDS = 1
FETCH_BEFORE_BARRIER = False


def stored(s: Stored | None, wide, depth) -> Stored | None:
    """s when the kernel may load its matrices straight from storage: the wide side and K whole
    multiples of MATRIX (a matrix is then wholly inside them or, past the wide side, clamped to the
    last one, whose results gemm's bounds drop), one stride 1 and the other a matrix row at least,
    in 16-byte steps (as the staged tiles' lines: matrix loads want their rows aligned)."""
    if s is None or not all(isinstance(x, int) and x % MATRIX == 0 for x in (wide, depth)):
        return None
    line = max(s.wide_stride, s.k_stride)
    return s if min(s.wide_stride, s.k_stride) == 1 and line >= MATRIX and line % PAD == 0 else None


def stores_sum(g: Gemm, tm: int, k_inner: bool) -> str | None:
    """How results go to `out` as they are (no alpha, bias or epilogue: a split product's partials),
    a whole result matrix at a time, with no bounds but the columns' (a multiple of MATRIX), or
    None (then through workgroup memory and gemm_put, element by element). Rows, a fixed count of
    at least MATRIX, stay whole result matrices:

    - "whole": a multiple of MATRIX (blocks past the last row are not stored);
    - "shift" (more rows than the tile tm): the last tile of rows starts at rows - tm rather than
      past the last whole tile, so its blocks end at the last row. It computes rows that the tile
      before it computes too (where unshifted it computed zeros: the same work) and stores the
      blocks holding rows of its own, one of them overlapping the tile before by fewer than
      MATRIX rows, which both write with the same sums (the same operands in the same order);
    - "clamp" (fewer rows than the tile: one tile of rows): the last block starts at rows - MATRIX
      of the staged tile, overlapping the block before it; only where the staged rows are the
      tile's lines (k_inner: an odd row still starts a line 16 bytes aligned, as matrix loads want)."""
    lines, value = g.finish("total", "batch", "r", "c")
    plain = (lines, value) in (([], "total"), (["let value = total;"], "value"))
    if not plain or not isinstance(g.cols, int) or g.cols % MATRIX or not isinstance(g.rows, int) or g.rows < MATRIX:
        return None
    if g.rows % MATRIX == 0:
        return "whole"
    return "shift" if g.rows > tm else "clamp" if k_inner else None


def span(g: Gemm) -> int:
    """The k of a slice of K at its longest (Gemm.span, all of K when not split)."""
    return ceil(max_value(g.depth) / g.splits / STEP) * STEP


def whole_steps(g: Gemm, step: int) -> bool:
    """Whether every slice of K is whole steps (else a step's last matrices may lie past it)."""
    depth, length = g.depth, span(g)
    return isinstance(depth, int) and all(min(length, depth - s * length) % step == 0 for s in range(g.splits) if depth > s * length)


def estimate(step: int, blocks: int, per_subgroup: dict, staged: list, ahead: bool, f32_fetches: bool) -> int:
    """32-bit registers an invocation holds at once for matrices and fetches (a 16 x 16 matrix of
    f16: 4; of f32 results: 8): its results, a MATRIX of k's matrices of each staged side and its
    fetches of them (f16: two a register; f32_fetches: one), and a whole step's of each
    stored side, twice when loaded a step ahead. per_subgroup: a side's matrices per MATRIX of k;
    staged: (side, tile)."""
    loaded = sum(4 * count * step // MATRIX * (2 if ahead else 1) for name, count in per_subgroup.items() if name not in dict(staged))
    per_register = 1 if f32_fetches else 2
    return 8 * blocks + loaded + sum(4 * per_subgroup[name] + tile * step // THREADS // per_register for name, tile in staged)


def choose_step(g: Gemm, a: Operand, b: Operand, epilogue: int, registers) -> int | None:
    """The k per staged step that fits workgroup memory, and registers (registers(step): the
    estimate) where some step does, in the fewest steps of a K slice (ties: the shorter); None
    when none fits workgroup memory."""
    fits = [step for step in STEPS if 2 * (a.staged(step) + b.staged(step)) + epilogue <= g.device.workgroup_bytes]
    fits = [step for step in fits if registers(step) <= REGISTERS] or fits[:1]
    return min(fits, key=lambda step: (ceil(span(g) / step), step), default=None)


# where the matrix kernel beat the FMA kernels on the H200 (docs/performance.md, 08:07 UTC, each
# dispatch against the same build's f16 FMA kernel): linear layers, whose f16 weight is the right
# operand loaded straight from storage, with a K of at least 384 (BERT's, GPT-2's: 27 vs 37 us a
# product, split, their partial sums stored straight to the output; BERT-512's unsplit ones, which
# finish their bias and GELU through workgroup memory after a K of 768, were faster too). Slower:
# implicit-GEMM convolutions (their input staged through coordinate arithmetic; ResNet-50 1400 vs
# 1288 us), a K of 96 (1.3x), and split products whose partial sums went through workgroup memory
# (two barriers a result matrix after a slice of K of 96 to 384: ViT's 197 rows, ConvNeXt's 196
# and 49, up to 1.3x); those now go straight to the output too (stores_sum) and ship (not measured yet).
# Since the weights are blocked and these layers take TILE, a K of 192 is faster too: ConvNeXt-T's
# second stage (H200, Dawn, 2026-12-02 14:37-14:40 UTC, docs/performance.md) took the model from
# 0.846-0.847 to 0.828 ms back to back (its products 486 -> 458 us); 96 (its first stage too) 0.827,
# with 6 split sums more
MIN_DEPTH = 192
ONLY_WHERE_FASTER = True  # tests set False to run the kernel on every shape it can take


# The tile and split of the linear layers that run here, chosen for this kernel rather than by the
# tiled kernel's cost model (whose FMA-bound steps split K too little and pick 64-row tiles): a
# TILE of 32 rows by 128 columns (16 blocks, 2 a subgroup), K split into ceil(SPLIT_SCALE times) the
# slices the cost model gives that tile, for layers of at least MIN_ROWS rows, columns whole tiles and
# a K of at least MIN_DEPTH in whole matrices, which its weight's matrices are then loaded straight from
# (stored; passes/split_k.py marks the node's attrs["tile"]). Measured on the H200
# through Dawn with its f16 toggle (18:49-18:57 UTC, docs/performance.md; GPU back to back ms, BERT-128
# / BERT-512 / ViT-B/16), every such product forced to one tile at the cost model's split for it, and at
# 1.5 and 2 times that: the cost model's own tiles 1.164 / 3.361 / 2.012; 32 x 128 1.056 / 3.320 /
# 1.736, 1.5x 1.033 / 3.487 (its unsplit products stay unsplit: int(1.5)) / 1.591, 2x 1.052 / 2.839 /
# a wrong ViT result (not reproduced since, 20:27-20:52 UTC); 32 x 64 1.311 / 4.038 / 2.183; 64 x 128
# 1.324 / 3.549 / 2.236; 128 x 64 1.591 / 4.458 / 2.764 (each at 2x no better). ceil(1.5x) takes 1.5x where it was best and 2x for BERT-512's unsplit
# products (QKV 74.2 -> 48.5 us a dispatch alone, FF up 77.6 -> 53.7, the split sum after each about
# 11); fewer rows (ConvNeXt's last stage, 49) keep the cost model's tiles (not measured)
TILE = (32, 128)
MIN_ROWS = 128
SPLIT_SCALE = 1.5
OWN_TILE = True  # tests set False to keep the cost model's tiles their layers were sized for (conftest.py: tiles_as_written)


def own_tile(device: DeviceClass, rows, cols, depth) -> bool:
    """Whether a linear layer of an f16 weight in a "-f16" program takes TILE and split() (above)."""
    return (OWN_TILE and device.subgroup_matrices and all(isinstance(x, int) for x in (rows, cols, depth))
            and rows >= MIN_ROWS and cols > THIN and cols % TILE[1] == 0 and depth >= MIN_DEPTH and depth % MATRIX == 0)


def split(device: DeviceClass, batch: int, rows: int, cols: int, depth: int) -> int:
    """The slices of K of a product on TILE: SPLIT_SCALE times the cost model's split for that tile, rounded up."""
    return ceil(SPLIT_SCALE * choose_split(device, batch, rows, cols, depth, tile=TILE))


def worthwhile(g: Gemm) -> bool:
    """Whether a build ships g's product on subgroup matrices (see MIN_DEPTH's comment): a linear
    layer of a fixed row count and a K of at least MIN_DEPTH, unsplit or with its partial sums
    stored straight to the output."""
    if not ONLY_WHERE_FASTER:
        return True
    if g.stored_b is None or isinstance(g.rows, Sym) or max_value(g.depth) < MIN_DEPTH:
        return False
    return g.splits == 1 or stores_sum(g, choose_tile(g)[0], g.a_k_contiguous) is not None


def matrix_tiled(g: Gemm) -> tuple[str, str, tuple] | None:
    """(directives, WGSL after the bindings, workgroup counts) of g's product on subgroup matrices,
    or None when its tile has too few blocks. g is the product the tiled kernel computes (not `half`)."""
    g = replace(g, load_a_pair=None, load_b_pair=None)  # its bindings are native f16: no u32 words to pair
    tm, tn = choose_tile(g)
    grid = block_grid(tm, tn)
    if tm % MATRIX or tn % MATRIX or grid is None:
        return None
    weight = lambda s, wide: stored(s, wide, g.depth) if WEIGHTS_FROM_STORAGE else None
    a = Operand("left", "a", tm, weight(g.stored_a, g.rows), g.a_k_contiguous)
    b = Operand("right", "b", tn, weight(g.stored_b, g.cols), not g.cols_contiguous)
    direct_out = stores_sum(g, tm, a.k_inner)  # else None
    per_rows, per_cols = tm // MATRIX // grid[0], tn // MATRIX // grid[1]  # blocks per subgroup
    blocks = [(i, j) for i in range(per_rows) for j in range(per_cols)]
    staged = [o for o in (a, b) if not o.stored]
    per_subgroup = {"a": per_rows, "b": per_cols}
    registers = lambda step, ahead=False, f32_fetches=False: estimate(step, len(blocks), per_subgroup, [(o.name, o.tile) for o in staged], ahead, f32_fetches)
    # results through workgroup memory take tile_c, SUBGROUPS // rounds result matrices at a time:
    # the fewest rounds (up to FINISH_ROUNDS) that leave the staged tiles their fewest steps
    choices = [(rounds, choose_step(g, a, b, 0 if direct_out else 4 * SUBGROUPS // rounds * MATRIX * MATRIX, registers))
               for rounds in (1, 2, 4, 8) if rounds <= (1 if direct_out else FINISH_ROUNDS)]
    choices = [(rounds, step) for rounds, step in choices if step is not None]
    if not choices:
        return None
    rounds, step = min(choices, key=lambda c: (ceil(span(g) / c[1]), c[0]))
    slots = SUBGROUPS // rounds  # result matrices tile_c holds
    p = primitives(BACKEND)
    kks = range(step // MATRIX)  # the step's matrices along k
    whole = whole_steps(g, step)  # else a step's matrices past the slice are skipped

    # an invocation fetches VECTOR neighbours along the staged tile's lines at once, where the
    # fetches divide so: one bounds check and one conversion for the four
    width = {o.name: VECTOR if o.tile * step % (THREADS * VECTOR) == 0 else 1 for o in staged}

    # the first element of staged fetch t: (wide, k), neighbouring t neighbours in memory
    def at(o: Operand) -> tuple[str, str]:
        e = "t" if width[o.name] == 1 else f"{width[o.name]}u * t"
        return (f"({e}) / {step}u", f"({e}) % {step}u") if o.k_inner else (f"({e}) % {o.tile}u", f"({e}) / {o.tile}u")

    def index(o: Operand) -> str:
        wide, k = o.strides(step)
        return f"({at(o)[0]}) * {wide}u + ({at(o)[1]}) * {k}u"

    fetches = {o.name: o.tile * step // THREADS // width[o.name] for o in staged}  # fetches per invocation
    # fetches rounded to f16 as they are staged (CONVERT_AT_STAGE) where the registers allow f32
    # fetches at the step chosen for f16 ones, else as they are fetched
    at_stage = CONVERT_AT_STAGE and registers(step, False, True) <= REGISTERS
    element = "f32" if at_stage else "f16"  # of a fetch in registers
    fetched = {o.name: element if width[o.name] == 1 else f"vec{width[o.name]}<{element}>" for o in staged}
    staged_value = (lambda v: f"f16({v})") if at_stage else (lambda v: v)
    thread = lambda n: f"li + {n * THREADS}u"
    helpers = []
    for o in staged:
        # (wide, k) of lane `lane` of the fetch, its value and its lines without the bounds check
        at_lane = lambda lane: ("w", f"(k + {lane}u)") if o.k_inner else (f"(w + {lane}u)", "k")  # loads paste them into products
        if o.name == "a":
            head, start, size = "fn fetch_a(t: u32, batch: u32, row0: u32, k0: u32)", "row0", u32(g.rows)
            value, unchecked = (lambda w, k: f"gemm_a(batch, {w}, {k})"), (lambda var, w, k: g.load_a(var, "batch", w, k))
        else:
            head, start, size = "fn fetch_b(t: u32, batch: u32, k0: u32, col0: u32)", "col0", u32(g.cols)
            value, unchecked = (lambda w, k: f"gemm_b(batch, {k}, {w})"), (lambda var, w, k: g.load_b(var, "batch", k, w))
        if width[o.name] == 1:
            fetch_value = value(f"{start} + {at(o)[0]}", f"k0 + {at(o)[1]}")  # f32
            helpers.append(f"{head} -> {element} {{ return {fetch_value if at_stage else f'f16({fetch_value})'}; }}")
            continue
        last = at_lane(VECTOR - 1)
        inside = [line for lane in range(VECTOR) for line in block("", unchecked(f"v[{lane}]", *at_lane(lane)))]
        helpers += block(f"{head} -> {fetched[o.name]}", [
            f"let w = {start} + {at(o)[0]};", f"let k = k0 + {at(o)[1]};", f"var v = vec{VECTOR}<f32>();",
            *block(f"if ({last[0]} < {size} && {last[1]} < {u32(g.depth)})", inside),
            *block("else", [f"v = vec{VECTOR}<f32>({', '.join(value(*at_lane(lane)) for lane in range(VECTOR))});"]),
            f"return {'v' if at_stage else f'{fetched[o.name]}(v)'};"])
    for o in staged:
        lanes = ([f"tile_{o.name}[at + {lane}u] = {staged_value(f'v[{lane}]')};" for lane in range(width[o.name])] if width[o.name] > 1
                 else [f"tile_{o.name}[at] = {staged_value('v')};"])
        helpers += block(f"fn stage_{o.name}(t: u32, v: {fetched[o.name]})", [f"let at = {index(o)};", *lanes])
    first = {"a": "block_row", "b": "block_col"}  # the subgroup's first block along each side's wide
    origin = {"a": "row0", "b": "col0"}
    wide_size = {"a": g.rows, "b": g.cols}

    def fetch(k0: str) -> list[str]:
        lines = []
        for o in staged:
            args = f"batch, row0, {k0}" if o.name == "a" else f"batch, {k0}, col0"
            lines += [f"f{o.name}{n} = fetch_{o.name}({thread(n)}, {args});" for n in range(fetches[o.name])]
        return lines

    # where the stored sides' matrices of a step are loaded (WEIGHT_LOADS): "ahead" only where the
    # registers allow a second step of them (else "end"); "end" and "ahead" hold them in variables
    # d.., loaded first in the prologue
    assert WEIGHT_LOADS in ("start", "end", "ahead"), f"gemm_matrix.WEIGHT_LOADS is {WEIGHT_LOADS!r}: start, end or ahead"
    loads = "end" if WEIGHT_LOADS == "ahead" and registers(step, True, at_stage) > REGISTERS else WEIGHT_LOADS
    from_memory = [o for o in (a, b) if o.stored]
    held = [] if loads == "start" else from_memory

    def from_storage(o: Operand, i: int, k: str) -> str:
        return o.load(p, o.stored.array, f"w{o.name}{i} + ({k}) * {o.stored.k_stride}u", step)

    def direct(o: Operand, k0: str, declare: bool) -> list[str]:
        """The stored side's matrices of the step at k0, into its variables held across steps."""
        return [f"{'var ' if declare else ''}d{o.name}_{kk}_{i} = {from_storage(o, i, f'{k0} + {kk * MATRIX}u')};"
                for kk in kks for i in range(per_subgroup[o.name])]

    def matrix(o: Operand, kk: int, i: int) -> str:
        return (f"d{o.name}_{kk}_{i}" if loads == "end" else f"c{o.name}_{kk}_{i}") if o.stored else f"{o.name}{i}"

    prologue = [f"var f{o.name}{n} = {fetched[o.name]}();" for o in staged for n in range(fetches[o.name])] + fetch("k_begin")
    for o in (a, b):
        if o.stored:  # each matrix's wide offset, clamped to the last matrix inside
            wide_stride = o.stored.wide_stride
            prologue += [f"let w{o.name}{i} = {o.stored.base('batch')} + min({origin[o.name]} + ({first[o.name]} + {i}u) * {MATRIX}u, "
                         f"{wide_size[o.name] - MATRIX}u) * {wide_stride}u;" for i in range(per_subgroup[o.name])]
    prologue += [line for o in held for line in direct(o, "k_begin", True)]
    prologue += [f"var acc_{i}_{j} = {p.zero()};" for i, j in blocks]
    if direct_out == "clamp":  # each block's first row in the staged tile, the last one's ending at the last row
        prologue += [f"let ra{i} = min((block_row + {i}u) * {MATRIX}u, {g.rows - MATRIX}u);" for i in range(per_rows)]

    body = [f"let c{o.name}_{kk}_{i} = {from_storage(o, i, f'k0 + {kk * MATRIX}u')};" for o in from_memory if loads == "start" for kk in kks for i in range(per_subgroup[o.name])]
    body += [f"stage_{o.name}({thread(n)}, f{o.name}{n});" for o in staged for n in range(fetches[o.name])]
    next_loads = [line for o in held for line in direct(o, f"k0 + {step}u", False)]  # the next step's matrices from storage
    # the next step's fetches (and "ahead", its matrices, this step's kept as c..)
    next_step = [f"let c{o.name}_{kk}_{i} = d{o.name}_{kk}_{i};" for o in held if loads == "ahead" for kk in kks for i in range(per_subgroup[o.name])]
    next_step += block(f"if (k0 + {step}u < k_end)", fetch(f"k0 + {step}u") + (next_loads if loads == "ahead" else []))
    barrier = ["workgroupBarrier();"] if staged else []
    body += next_step + barrier if FETCH_BEFORE_BARRIER else barrier + next_step
    for kk in kks:
        def wide_offset(o: Operand, i: int) -> str:
            wide = f"ra{i} * {o.strides(step)[0]}u" if o.name == "a" and direct_out == "clamp" else f"({first[o.name]} + {i}u) * {MATRIX * o.strides(step)[0]}u"
            return f"{wide} + {kk * MATRIX * o.strides(step)[1]}u"
        lines = [f"let {o.name}{i} = {o.load(p, f'tile_{o.name}', wide_offset(o, i), step)};" for o in staged for i in range(per_subgroup[o.name])]
        lines += [f"acc_{i}_{j} = {p.multiply_add(matrix(a, kk, i), matrix(b, kk, j), f'acc_{i}_{j}')};" for i, j in blocks]
        body += block("" if kk == 0 or whole else f"if (k0 + {kk * MATRIX}u < k_end)", lines)
    if loads == "end" and held:  # into the registers the multiplies just freed
        body += block(f"if (k0 + {step}u < k_end)", next_loads)
    body += ["workgroupBarrier();"] if staged else []

    finish = []
    if direct_out:  # each result matrix holding rows of its own straight to the output (stores_sum)
        own = f"r + {MATRIX}u > wg.y * {tm}u" if direct_out == "shift" else f"r < {g.rows}u"  # past the tile before; not past the rows
        at = f"min(r, {g.rows - MATRIX}u)" if direct_out == "clamp" else "r"
        for i, j in blocks:
            finish += block("", [f"let r = row0 + (block_row + {i}u) * {MATRIX}u;", f"let c = col0 + (block_col + {j}u) * {MATRIX}u;",
                                 *block(f"if ({own} && c < {g.cols}u)",
                                        [p.store("out", f"(wg.z * {g.rows}u + {at}) * {g.cols}u + c", f"acc_{i}_{j}", False, f"{g.cols}u")])])
    else:  # each result matrix through the subgroup's slice of tile_c, then finished element by element, a round of subgroups at a time
        turn = (lambda lines: lines) if rounds == 1 else (lambda lines: block(f"if (sg / {slots}u == rnd)", lines))
        for i, j in blocks:
            lines = [*turn([p.store("tile_c", f"{'sg' if rounds == 1 else f'(sg % {slots}u)'} * {MATRIX * MATRIX}u", f"acc_{i}_{j}", False, f"{MATRIX}u")]),
                     "workgroupBarrier();",
                     *turn([f"gemm_finish(batch, wg.z, row0 + (block_row + {i}u) * {MATRIX}u, col0 + (block_col + {j}u) * {MATRIX}u, li);"]),
                     "workgroupBarrier();"]
            finish += lines if rounds == 1 else block(f"for (var rnd = 0u; rnd < {rounds}u; rnd++)", lines)
    lane_columns = MATRIX // PER_INVOCATION  # invocations sharing a row of a result matrix
    puts = [f"gemm_put(batch, slot, r, c + {e}u, tile_c[at + {e}u]);" for e in range(PER_INVOCATION)]
    gemm_finish = "" if direct_out else f"""
// invocation li finishes elements 8 * lane .. 8 * lane + 7 of its subgroup's result matrix at (r0, c0)
fn gemm_finish(batch: u32, slot: u32, r0: u32, c0: u32, li: u32) {{
  let lane = li % {SUBGROUP}u;
  let at = {f"(li / {SUBGROUP}u)" if rounds == 1 else f"((li / {SUBGROUP}u) % {slots}u)"} * {MATRIX * MATRIX}u + lane * {PER_INVOCATION}u;
  let r = r0 + lane / {lane_columns}u;
  let c = c0 + (lane % {lane_columns}u) * {PER_INVOCATION}u;
{indent(puts)}
}}
"""
    row0 = f"min(wg.y * {tm}u, {g.rows - tm}u);  // the last tile ends at the last row" if direct_out == "shift" else f"wg.y * {tm}u;"
    memory = [f"var<workgroup> tile_{o.name}: array<f16, {o.staged(step)}>;" for o in staged]
    memory += [] if direct_out else [f"var<workgroup> tile_c: array<f32, {slots * MATRIX * MATRIX}>;"]
    code = functions(g) + "\n" + "\n".join(helpers) + "\n" + p.helpers() + gemm_finish + "\n" + "\n".join(memory) + f"""

@compute @workgroup_size({THREADS})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {{
  let batch = wg.z % {u32(g.batch)};
  let k_begin = (wg.z / {u32(g.batch)}) * {g.span()};
  let k_end = min(k_begin + {g.span()}, {u32(g.depth)});
  let row0 = {row0}
  let col0 = wg.x * {tn}u;
  let sg = li / {SUBGROUP}u;
  let block_row = (sg / {grid[1]}u) * {per_rows}u;  // the subgroup's first block row and column in the tile
  let block_col = (sg % {grid[1]}u) * {per_cols}u;
{indent(prologue)}
  for (var k0 = k_begin; k0 < k_end; k0 += {step}u) {{
{indent(body, 2)}
  }}
{indent(finish)}
}}
"""
    # as the tiled kernel's: a workgroup per tile, batch and slice of K
    return p.directives(), code, (ceil_div_count(g.cols, tn), ceil_div_count(g.rows, tm), ceil_div_count(g.batch * g.splits, 1))
