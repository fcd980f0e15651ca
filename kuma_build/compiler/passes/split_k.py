"""Split the K loop of products too small to fill the device (split-K).

A late convolution at batch 1 (ResNet's 512 x 7 x 7 outputs over a K of
4608) makes only a handful of output tiles: most of a GPU would idle while
each tile walks all of K. When the tile cost model says so
(kernels/gemm.py: choose_split), the product's node instead writes S
partial sums, one per slice of K, into a temporary S times its size, and a
new split_sum node (kernels/split_sum.py) adds them up and applies what the
product would have applied after the sum: the bias and the fused epilogue
(activation, residual). That node writes the original output buffer, so the rest of the
graph does not change.
"""

from kuma_build.compiler.ir.expr import Acc, In, Lit, Op, remap
from kuma_build.compiler.ir.graph import Buffer, Node, Value
from kuma_build.compiler.kernels import gemm
from kuma_build.compiler.ops import record


def split_k(graph) -> None:
    nodes = []
    for node in graph.nodes:
        nodes.append(node)
        shape = record(node).product(node, graph.device)
        splits = gemm.choose_split(graph.device, *shape) if shape else 1  # by attribute: bench/gpu/gemm_sweep.py forces it
        if splits > 1:
            nodes.append(_split(node, splits))
    graph.nodes = nodes


def _split(node, splits: int) -> Node:
    """Make node write `splits` partial sums; return the split_sum node that finishes them."""
    out, own = node.output, node.operands
    partials = Buffer(out.numel * splits, "f32", "temp")
    inputs = [Value(partials, (splits, *out.shape), (out.numel, *out.strides))]
    total = Acc()
    bias = record(node).bias(node)
    if bias is not None:
        inputs.append(bias[0])
        scaled = In("f32", 1) if bias[1] == 1.0 else Op("mul", "f32", (Lit("f32", bias[1]), In("f32", 1)))
        total = Op("add", "f32", (total, scaled))
    expr = total
    if "epilogue" in node.attrs:  # its other inputs follow ours, in order
        base = len(inputs)
        inputs += node.inputs[own:]
        expr = remap(node.attrs.pop("epilogue"), lambda leaf: total if isinstance(leaf, Acc) else In(leaf.dtype, base + leaf.index - own))
    node.inputs = node.inputs[:2]
    node.attrs.pop("operands", None)
    node.attrs["splits"] = splits
    node.output = Value(partials, out.shape, out.strides)
    return Node("split_sum", inputs, out, {"splits": splits, "epilogue": expr, "operands": 1}, node.where)
