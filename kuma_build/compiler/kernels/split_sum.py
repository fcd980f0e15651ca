"""The sum of split-K partial products (passes/split_k.py), then the product's bias and epilogue.

Input 0 holds `splits` partial results back to back; one thread per output
element adds its partials in slice order and applies the epilogue the
product would have applied (bias, activation, residual: an expression over
the ("acc", "f32") leaf, as a fused epilogue is).

The same sum can be folded into the kernels that read it (split_k.py: a norm,
softmax, an elementwise kernel, another split sum): such a node lists the inputs
that are partial sums in attrs["sums"], and elementwise.fold_sums gives each a
function its loads call instead.
"""

from kuma_build.compiler.ir.sizes import wgsl as u32
from kuma_build.compiler.kernels.elementwise import epilogue, fold_sums
from kuma_build.compiler.kernels.wgsl import Bindings, indent, threads

# the folds passes/split_k.py makes beyond a norm's, softmax's or split sum's reading a sum's slices in
# place, each switchable for an A/B on the device (bench/gpu/dawn/bench.py --gemm-knob split_sum.NAME=False)
FOLD_PER_ELEMENT = True  # an elementwise or concat kernel reads them (ConvNeXt's residual add through a permute, ViT's patches)
FOLD_TWO_LEVELS = True  # a sum holding folded sums folds into readers that are not split sums (where no norm could store the inner one)
NORM_STORES_SUM = True  # a norm reading them also stores the sum for the sum's other readers (GPT-2's residual stream)
STORE_BEFORE_NESTING = True  # that is tried first where another split sum reads the sum (passes/split_k.py: GPT-2 f16 123 -> 111 dispatches)


def lower(node, device):
    b = Bindings(node)
    folded = fold_sums(node, b)
    out, splits = node.output, node.attrs["splits"]
    header, workgroups = threads(out.numel)
    writer, value = epilogue(node, b, "total", "gid")
    lines = ["var total = 0.0;",
             f"for (var s = 0u; s < {splits}u; s++) {{ total += {b.names[0]}[s * {u32(out.numel)} + gid]; }}",
             *writer.lines, f"out[gid] = {value};"]
    return b.kernel("split_sum", folded + writer.functions() + header + indent(lines) + "\n}", workgroups)
