"""Which kernel computes a product (a Gemm): the "cpu" device class's register-blocked kernel for
every shape, else the thin kernel for at most THIN rows or columns and the tiled one for the rest.
matmul.py and conv.py (implicit GEMM) describe their product as a Gemm and call gemm_kernel."""

from dataclasses import replace

from kuma_build.compiler.ir.sizes import max_value
from kuma_build.compiler.kernels.gemm import THIN, Gemm, thin, tiled
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
    narrow = g.cols if max_value(g.cols) < max_value(g.rows) else g.rows
    return isinstance(narrow, int) and narrow <= THIN


def gemm_kernel(b: Bindings, name: str, g: Gemm, functions: str) -> Kernel:
    """The kernel of g after `functions` (its epilogue's); its shader-f16 variant, when it has one, multiplies in f16."""
    code, workgroups = gemm_code(g)
    reads_f16 = any(buf.storage == "f16" for buf in b.buffers)  # only then is there a shader-f16 variant
    half = functions + gemm_code(replace(g, half=True))[0] if reads_f16 else None
    return b.kernel(name, functions + code, workgroups, half)
