"""The sum of split-K partial products (passes/split_k.py), then the product's bias and epilogue.

Input 0 holds `splits` partial results back to back; one thread per output
element adds its partials in slice order and applies the epilogue the
product would have applied (bias, activation, residual: an expression over
the ("acc", "f32") leaf, as a fused epilogue is).
"""

from kuma_build.compiler.kernels.elementwise import epilogue
from kuma_build.compiler.ir.sizes import wgsl as u32
from kuma_build.compiler.kernels.wgsl import Bindings, indent, threads


def lower(node, device):
    b = Bindings(node)
    out, splits = node.output, node.attrs["splits"]
    header, workgroups = threads(out.numel)
    writer, value = epilogue(node, b, "total", "gid")
    lines = ["var total = 0.0;",
             f"for (var s = 0u; s < {splits}u; s++) {{ total += {b.names[0]}[s * {u32(out.numel)} + gid]; }}",
             *writer.lines, f"out[gid] = {value};"]
    return b.kernel("split_sum", writer.functions() + header + indent(lines) + "\n}", workgroups)
