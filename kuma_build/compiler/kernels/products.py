"""Which kernel computes a product (a Gemm): the "cpu" device class's register-blocked kernel for
every shape, else the thin kernel for at most THIN rows or columns and the tiled one for the rest.
matmul.py and conv.py (implicit GEMM) describe their product as a Gemm and call gemm_kernel.

A product whose row count a dim sets (a linear layer over `seq` tokens) gets all three: the tiled
kernel for the values with more than THIN rows, the thin one (unrolled to THIN rows, each checked)
for the values with fewer, and the thin one unrolled to the rows of the dim's least value (a decode
step's seq = 1); each dispatch says for which values of the dim it runs (Kernel.when), so a run at
seq = 1 costs what a build for 1 would.
"""

from dataclasses import replace

from kuma_build.compiler.ir.sizes import Sym
from kuma_build.compiler.kernels.gemm import THIN, Gemm, thin, tiled
from kuma_build.compiler.kernels.gemm_matrix import matrix_tiled, worthwhile
from kuma_build.compiler.kernels.gemm_registers import registers
from kuma_build.compiler.kernels.wgsl import Bindings, Kernel


def gemm_code(g: Gemm) -> tuple[str, tuple[int, int, int]]:
    """WGSL (after the bindings) and workgroup counts of the best kernel for g."""
    if g.device.register_gemm:
        return registers(g)
    return thin(g) if is_thin(g) else tiled(g)


def is_thin(g: Gemm) -> bool:
    """The thin kernel's narrow side (the fewer of rows and columns, at their max) is at most THIN,
    and no dim sets it (the kernel unrolls it)."""
    _, rows, cols, _ = g.largest
    if cols < rows:
        return isinstance(g.cols, int) and cols <= THIN
    return (isinstance(g.rows, int) or g.rows_at_most > 0) and rows <= THIN


def few_rows(g: Gemm) -> tuple[str, int, int, int] | None:
    """(dim, its least value, the last value with at most THIN rows, its max) when the row count is
    a polynomial in one dim that grows with it and the thin kernel would serve its small values."""
    if g.device.register_gemm or not isinstance(g.rows, Sym) or isinstance(g.cols, Sym) or len(g.rows.dims) != 1 \
            or any(c < 0 for _, c in g.rows.terms) or is_thin(g):
        return None
    (dim,) = g.rows.dims
    last = max((v for v in range(dim.min, min(dim.max, dim.min + THIN) + 1) if g.rows.evaluate({dim.name: v}) <= THIN), default=None)
    return None if last is None or last >= dim.max else (dim.name, dim.min, last, dim.max)


def gemm_kernel(b: Bindings, name: str, g: Gemm, functions: str) -> Kernel:
    """The kernel of g after `functions` (its epilogue's); its shader-f16 variant, when it has one,
    multiplies in f16, and a tiled one also gets a variant on subgroup matrices (gemm_matrix.py). With few_rows, the tiled kernel for many rows, then (Kernel.then) the thin one."""
    small = few_rows(g)
    if small is None:
        return one_kernel(b, name, g, functions)
    dim, low, last, high = small
    many = one_kernel(b, name, g, functions)
    many.when = {dim: [last + 1, high]}
    # the least value (a decode step's 1) unrolls only its own rows: software adapters pay for every row
    fewest = one_kernel(b, name, replace(g, rows_at_most=g.rows.evaluate({dim: low})), functions)
    fewest.when = {dim: [low, low]}
    if last > low:
        many.then = one_kernel(b, name, replace(g, rows_at_most=THIN), functions)
        many.then.when = {dim: [low + 1, last]}
        many.then.then = fewest
    else:
        many.then = fewest
    return many


def one_kernel(b: Bindings, name: str, g: Gemm, functions: str) -> Kernel:
    code, workgroups = gemm_code(g)
    # a product reading an f16 weight multiplies in f16 in its shader-f16 variant where a class has
    # an f16 build's "-f16" program to ship it in (devices.F16_PROGRAM: adapters with subgroup matrices)
    f16_program = g.device.subgroup_matrices and any(buf.storage == "f16" for buf in b.buffers)
    half = functions + gemm_code(replace(g, half=True))[0] if f16_program else None
    matrix = None  # and, for the tiled kernel's products, one on subgroup matrices
    if f16_program and not g.device.register_gemm and not is_thin(g) and worthwhile(g):
        on_matrices = matrix_tiled(g)
        if on_matrices:
            directives, body, counts = on_matrices
            assert counts == workgroups  # the plan's dispatch serves every variant
            matrix = directives, functions + body
    return b.kernel(name, functions + code, workgroups, half, matrix)
