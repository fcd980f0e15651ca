"""The tiled product on subgroup matrices (tensor cores): a third variant of a product reading f16
weights, beside the f32 one and the shader-f16 one (`half`, gemm.py), for adapters that offer
shader-f16 and Chromium's experimental subgroup matrices with an f16 x f16 -> f32 config of
M = N = K = MATRIX and subgroups exactly SUBGROUP wide (the runtime checks, templates/runtime.js).

The same tile, workgroup grid and dispatch as gemm.py's tiled kernel (choose_tile), so the plan
does not change and only the code differs. 256 invocations are SUBGROUPS subgroups of SUBGROUP;
subgroup s is invocations s * SUBGROUP .. (s + 1) * SUBGROUP - 1 (how NVIDIA forms them, and what
ONNX Runtime's subgroup-matrix kernels assume too). Each K step of STEP (= MATRIX):

- the workgroup stages A's TM x STEP tile (the activations or a convolution's weight, rounded to
  f16) and B's STEP x TN tile in workgroup memory as f16, through gemm.functions' gemm_a and
  gemm_b (zero outside the matrices); invocation i stages elements i, i + 256, ... of each tile,
  laid out in the order memory has them (a row of k when A's k are neighbours, else k-major; the
  same for B's columns), so neighbouring invocations read and write neighbours; the next step's
  elements are fetched into registers while this one multiplies, as in the tiled kernel;
- each subgroup multiplies a rectangle of the tile's MATRIX x MATRIX blocks (block_grid: the
  rectangle that loads the fewest matrices): PR left and PC right matrices loaded from the staged
  tiles, PR x PC multiply-accumulates into f32 result matrices.

At the end each subgroup stores its result matrices one at a time into its own MATRIX x MATRIX
slice of f32 workgroup memory, and each of its invocations finishes 8 of the elements through
gemm_put (alpha, bias, fused epilogue, bounds), as the tiled kernel finishes its own. The products
of f16 values are exact in f32 and the sums are f32, so this variant rounds only the operands.
Only tiles of at least SUBGROUPS blocks get it (block_grid); a product of smaller tiles keeps the
two other variants, as do the thin kernel and the "cpu" class's.

The builtins compile only where an adapter offers them, and no local WebGPU does (SwiftShader,
lavapipe). So the kernel is written against Primitives, with two backends: SUBGROUP_MATRIX, the
real builtins, which builds ship, and EMULATED, plain WGSL with the builtins' semantics (offset,
stride and column-major as subgroupMatrixLoad and subgroupMatrixStore read them; each invocation of
a subgroup keeps 8 elements of a result matrix), which tests run on lavapipe against PyTorch. The
two kernels differ only in the lines that call a primitive (tests/test_gemm_matrix.py checks both).
The emulation reads a loaded matrix's elements at the multiply, not at the load: the same values
here, since nothing writes the staged tiles between a step's loads and its multiplies.
"""

from dataclasses import dataclass, field

from kuma_build.compiler.ir.sizes import ceil_div_count, wgsl as u32
from kuma_build.compiler.kernels.gemm import SIDE, STEP, Gemm, choose_tile, functions
from kuma_build.compiler.kernels.wgsl import block, indent

MATRIX = 16  # M = N = K of every subgroup matrix (the config the runtime asks the adapter for)
SUBGROUP = 32  # invocations per subgroup
THREADS = SIDE * SIDE
SUBGROUPS = THREADS // SUBGROUP
PER_INVOCATION = MATRIX * MATRIX // SUBGROUP  # result elements an invocation finishes (and the emulation keeps)
assert STEP == MATRIX  # one left and one right matrix of a block row or column per staged step


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


def matrix_tiled(g: Gemm) -> tuple[str, str, tuple] | None:
    """(directives, WGSL after the bindings, workgroup counts) of g's product on subgroup matrices,
    or None when its tile has too few blocks. g is the product the tiled kernel computes (not `half`)."""
    tm, tn = choose_tile(g)
    grid = block_grid(tm, tn)
    staged = 2 * (tm + tn) * STEP + 4 * SUBGROUPS * MATRIX * MATRIX  # bytes of tile_a, tile_b and tile_c (16 KB at 128 x 128)
    if tm % MATRIX or tn % MATRIX or grid is None or staged > g.device.workgroup_bytes:
        return None
    p = primitives(BACKEND)
    per_rows, per_cols = tm // MATRIX // grid[0], tn // MATRIX // grid[1]  # blocks per subgroup
    fetch_a, fetch_b = tm * STEP // THREADS, tn * STEP // THREADS  # staged elements per invocation

    # staged element t of each tile and where its blocks lie: (row, k) and (k, column) of t, and
    # a block's (offset of block i, column-major, stride) in the staged array
    if g.a_k_contiguous:  # a row of A's k is a row of the tile
        a_at, left = (f"t / {STEP}u", f"t % {STEP}u"), (lambda i: f"({i}) * {MATRIX * STEP}u", False, f"{STEP}u")
    else:  # A's rows are neighbours in memory: k-major
        a_at, left = (f"t % {tm}u", f"t / {tm}u"), (lambda i: f"({i}) * {MATRIX}u", True, f"{tm}u")
    if g.cols_contiguous:
        b_at, right = (f"t / {tn}u", f"t % {tn}u"), (lambda j: f"({j}) * {MATRIX}u", False, f"{tn}u")
    else:  # B's k are neighbours in memory (W @ x^T: x's rows): column-major
        b_at, right = (f"t % {STEP}u", f"t / {STEP}u"), (lambda j: f"({j}) * {MATRIX * STEP}u", True, f"{STEP}u")

    staging = f"""
fn fetch_a(t: u32, batch: u32, row0: u32, k0: u32) -> f16 {{ return f16(gemm_a(batch, row0 + {a_at[0]}, k0 + {a_at[1]})); }}
fn fetch_b(t: u32, batch: u32, k0: u32, col0: u32) -> f16 {{ return f16(gemm_b(batch, k0 + {b_at[0]}, col0 + {b_at[1]})); }}
"""
    thread = lambda i: f"li + {i * THREADS}u"

    def fetch(k0: str) -> list[str]:
        return ([f"fa{i} = fetch_a({thread(i)}, batch, row0, {k0});" for i in range(fetch_a)]
                + [f"fb{j} = fetch_b({thread(j)}, batch, {k0}, col0);" for j in range(fetch_b)])

    blocks = [(i, j) for i in range(per_rows) for j in range(per_cols)]
    step = ([f"tile_a[{thread(i)}] = fa{i};" for i in range(fetch_a)] + [f"tile_b[{thread(j)}] = fb{j};" for j in range(fetch_b)]
            + ["workgroupBarrier();", *block(f"if (k0 + {STEP}u < k_end)", fetch(f"k0 + {STEP}u"))]
            + [f"let a{i} = {p.load('left', 'tile_a', left[0](f'block_row + {i}u'), left[1], left[2])};" for i in range(per_rows)]
            + [f"let b{j} = {p.load('right', 'tile_b', right[0](f'block_col + {j}u'), right[1], right[2])};" for j in range(per_cols)]
            + [f"acc_{i}_{j} = {p.multiply_add(f'a{i}', f'b{j}', f'acc_{i}_{j}')};" for i, j in blocks]
            + ["workgroupBarrier();"])
    # each result matrix through the subgroup's slice of tile_c, then finished element by element
    finish = []
    for i, j in blocks:
        finish += [p.store("tile_c", f"sg * {MATRIX * MATRIX}u", f"acc_{i}_{j}", False, f"{MATRIX}u"), "workgroupBarrier();",
                   f"gemm_finish(batch, wg.z, row0 + (block_row + {i}u) * {MATRIX}u, col0 + (block_col + {j}u) * {MATRIX}u, li);",
                   "workgroupBarrier();"]
    lane_columns = MATRIX // PER_INVOCATION  # invocations sharing a row of a result matrix
    puts = [f"gemm_put(batch, slot, r, c + {e}u, tile_c[at + {e}u]);" for e in range(PER_INVOCATION)]
    code = functions(g) + staging + p.helpers() + f"""
// invocation li finishes elements 8 * lane .. 8 * lane + 7 of its subgroup's result matrix at (r0, c0)
fn gemm_finish(batch: u32, slot: u32, r0: u32, c0: u32, li: u32) {{
  let lane = li % {SUBGROUP}u;
  let at = (li / {SUBGROUP}u) * {MATRIX * MATRIX}u + lane * {PER_INVOCATION}u;
  let r = r0 + lane / {lane_columns}u;
  let c = c0 + (lane % {lane_columns}u) * {PER_INVOCATION}u;
{indent(puts)}
}}

var<workgroup> tile_a: array<f16, {tm * STEP}>;
var<workgroup> tile_b: array<f16, {STEP * tn}>;
var<workgroup> tile_c: array<f32, {SUBGROUPS * MATRIX * MATRIX}>;

@compute @workgroup_size({THREADS})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {{
  let batch = wg.z % {u32(g.batch)};
  let k_begin = (wg.z / {u32(g.batch)}) * {g.span()};
  let k_end = min(k_begin + {g.span()}, {u32(g.depth)});
  let row0 = wg.y * {tm}u;
  let col0 = wg.x * {tn}u;
  let sg = li / {SUBGROUP}u;
  let block_row = (sg / {grid[1]}u) * {per_rows}u;  // the subgroup's first block row and column in the tile
  let block_col = (sg % {grid[1]}u) * {per_cols}u;
{indent([f"var fa{i} = 0.0h;" for i in range(fetch_a)] + [f"var fb{j} = 0.0h;" for j in range(fetch_b)])}
{indent(fetch("k_begin"))}
{indent([f"var acc_{i}_{j} = {p.zero()};" for i, j in blocks])}
  for (var k0 = k_begin; k0 < k_end; k0 += {STEP}u) {{
{indent(step, 2)}
  }}
{indent(finish)}
}}
"""
    # as the tiled kernel's: a workgroup per tile, batch and slice of K
    return p.directives(), code, (ceil_div_count(g.cols, tn), ceil_div_count(g.rows, tm), ceil_div_count(g.batch * g.splits, 1))
