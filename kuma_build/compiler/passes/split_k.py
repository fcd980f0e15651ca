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

from kuma_build.compiler.ir.graph import Buffer, Node, Value
from kuma_build.compiler.kernels import conv, gemm, matmul
from kuma_build.compiler.kernels.elementwise import operands
from kuma_build.compiler.passes.fuse_elementwise import remap


def product_shape(node) -> tuple[int, int, int, int] | None:
    """(batch, rows, cols, depth) of a node the GEMM kernels compute, else None."""
    if node.op == "matmul":
        return matmul.gemm_shape(node)
    if node.op == "conv2d" and conv.is_implicit_gemm(node):
        return conv.gemm_shape(node)
    return None


def split_k(graph) -> None:
    nodes = []
    for node in graph.nodes:
        nodes.append(node)
        shape = product_shape(node)
        splits = gemm.choose_split(*shape) if shape else 1
        if splits > 1:
            nodes.append(_split(node, splits))
    graph.nodes = nodes


def _bias(node) -> tuple[Value, float] | None:
    """The product's bias viewed in the output's shape, and its factor (addmm's beta)."""
    if operands(node) < 3:
        return None
    bias, out = node.inputs[2], node.output
    if node.op == "matmul":
        return bias, node.attrs["beta"]
    strides = tuple(bias.strides[0] if d == 1 else 0 for d in range(len(out.shape)))  # per output channel
    return Value(bias.buffer, out.shape, strides, bias.offset), 1.0


def _split(node, splits: int) -> Node:
    """Make node write `splits` partial sums; return the split_sum node that finishes them."""
    out, own = node.output, operands(node)
    partials = Buffer(out.numel * splits, "f32", "temp")
    inputs = [Value(partials, (splits, *out.shape), (out.numel, *out.strides))]
    total = ("acc", "f32")
    bias = _bias(node)
    if bias is not None:
        inputs.append(bias[0])
        scaled = ("in", "f32", 1) if bias[1] == 1.0 else ("mul", "f32", ("lit", "f32", bias[1]), ("in", "f32", 1))
        total = ("add", "f32", total, scaled)
    expr = total
    if "epilogue" in node.attrs:  # its other inputs follow ours, in order
        base = len(inputs)
        inputs += node.inputs[own:]
        expr = remap(node.attrs.pop("epilogue"), lambda leaf: total if leaf[0] == "acc" else ("in", leaf[1], base + leaf[2] - own))
    node.inputs = node.inputs[:2]
    node.attrs.pop("operands", None)
    node.attrs["splits"] = splits
    node.output = Value(partials, out.shape, out.strides)
    return Node("split_sum", inputs, out, {"splits": splits, "epilogue": expr, "operands": 1}, node.where)
