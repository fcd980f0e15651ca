"""The sum of split-K partial products (passes/split_k.py), then the product's bias and epilogue.

Input 0 holds `splits` partial results back to back; one thread per output
element adds its partials in slice order and applies the epilogue the
product would have applied (bias, activation, residual: an expression over
the ("acc", "f32") leaf, as a fused epilogue is).

The same sum can be folded into the kernels that read it (split_k.py: a norm,
another split sum): such a node lists the inputs that are partial sums in
attrs["sums"], and fold_sums gives each a function its loads call instead.
"""

from math import prod

from kuma_build.compiler.kernels.elementwise import epilogue, expression_at
from kuma_build.compiler.kernels.wgsl import Bindings, block, indent, threads


def lower(node, device):
    b = Bindings(node)
    folded = fold_sums(node, b)
    out, splits = node.output, node.attrs["splits"]
    header, workgroups = threads(out.numel)
    writer, value = epilogue(node, b, "total", "gid")
    lines = ["var total = 0.0;",
             f"for (var s = 0u; s < {splits}u; s++) {{ total += {b.names[0]}[s * {out.numel}u + gid]; }}",
             *writer.lines, f"out[gid] = {value};"]
    return b.kernel("split_sum", folded + writer.functions() + header + indent(lines) + "\n}", workgroups)


def fold_sums(node, b) -> str:
    """WGSL functions reading the node's inputs that are a split-K product's partial sums (attrs["sums"]:
    (input, splits, the sum's epilogue, the product's shape)): each adds the slices at a flat index
    of the product's result and applies the epilogue; from now on b.load of such an input calls it.
    The pass folds only epilogues that need no helper functions, so none are repeated here."""
    functions = []
    for k, splits, expr, shape in node.attrs.get("sums", ()):
        writer, value = expression_at(expr, shape, b, "total", "flat", ("s_i", "s_in", "sv"))
        lines = ["var total = 0.0;",
                 f"for (var s = 0u; s < {splits}u; s++) {{ total += {b.names[k]}[s * {prod(shape)}u + flat]; }}",
                 *writer.lines, f"return {value};"]
        functions.append("\n".join(block(f"fn sum_in{k}(flat: u32) -> f32", lines)) + "\n\n")
    for k, *_ in node.attrs.get("sums", ()):
        b.sums[k] = f"sum_in{k}"
    return "".join(functions)
