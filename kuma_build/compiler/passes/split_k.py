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

Each such sum is one more dispatch (on Dawn about 5 us of host time,
docs/performance.md). When every kernel reading its result can read the
partial sums in place instead (a norm, softmax, another split sum: their
records' fold_sums say how many times they read each element), the sum has
at most device.fold_splits_once slices where each reads an element once
(device.fold_splits where one reads it more often) and its epilogue needs
no helper functions, the split_sum node goes: its readers read the partials
and its epilogue's inputs (kernels/split_sum.py: fold_sums). BERT's
attention output and FFN output, their biases and residuals read so by the
layer norms after them (rows of 768 in registers, read once). A split sum
whose own inputs were folded so stays, so a reader never folds more than
one level.
"""

from kuma_build.compiler.ir.expr import Acc, In, Lit, Op, remap
from kuma_build.compiler.ir.graph import Buffer, Node, Value
from kuma_build.compiler.kernels import gemm
from kuma_build.compiler.kernels.elementwise import helpers_of
from kuma_build.compiler.ops import record
from kuma_build.compiler.passes.fuse_elementwise import input_buffers, readers_of


def split_k(graph) -> None:
    nodes, sums = [], []
    for node in graph.nodes:
        nodes.append(node)
        shape = record(node).product(node, graph.device)
        # sliced K (kernels/gemm.py) in f32 builds, and in f16 builds with gemm.SLICED_F16 (int8
        # builds keep their tiles); the kernel reads the choice from the attribute
        sliced = bool(shape) and _sliced_build(graph) and record(node).sliced(node, graph.device)
        if sliced:
            node.attrs["sliced"] = True
        splits = gemm.choose_split(graph.device, *shape, sliced=sliced and not _matrix_split(graph, node)) if shape else 1  # by attribute: bench/gpu/gemm_sweep.py forces it
        if splits > 1:
            sums.append(_split(node, splits))
            nodes.append(sums[-1])
    graph.nodes = nodes
    folded = [node for node in sums if _fold(graph, node, readers_of(graph))]
    graph.nodes = [node for node in graph.nodes if node not in folded]


def _sliced_build(graph) -> bool:
    return graph.precision == "f32" or (graph.precision == "f16" and gemm.SLICED_F16)


def _matrix_split(graph, node) -> bool:
    """Whether a sliced product's split is the one its subgroup-matrix variant's own tile gets
    (gemm.SLICED_F16_SPLIT): in an f16 build, B a constant (a weight that may be stored f16 and so
    carry that variant, which shares the split: the partial sums' buffer and their sum node)."""
    assert gemm.SLICED_F16_SPLIT in ("matrix", "sliced"), f"gemm.SLICED_F16_SPLIT is {gemm.SLICED_F16_SPLIT!r}: matrix or sliced"
    return graph.precision == "f16" and gemm.SLICED_F16_SPLIT == "matrix" and node.inputs[1].is_const


def _fold(graph, node, readers) -> bool:
    """Make the readers of split_sum node's result read its partial sums in place, when they all can."""
    out, partials = node.output, node.inputs[0]
    users = readers.get(out.buffer, set())
    if (not users or "sums" in node.attrs or out.buffer.kind != "temp" or any(v.buffer is out.buffer for v in graph.outputs.values())
            or helpers_of(node.attrs["epilogue"]) or not all(record(user).fold_sums for user in users)):
        return False
    reads = max(record(user).fold_sums(user, graph.device) for user in users)
    if node.attrs["splits"] > (graph.device.fold_splits_once if reads == 1 else graph.device.fold_splits):
        return False
    for user in users:
        buffers = {v.buffer for v in user.inputs if v.buffer is not out.buffer} | {v.buffer for v in node.inputs}
        if sum(buf.pages for buf in buffers) > input_buffers(graph):
            return False
    for user in users:
        user.attrs.setdefault("operands", user.operands)
        for k, v in enumerate(list(user.inputs)):
            if v.buffer is out.buffer:
                base = len(user.inputs) - 1  # the epilogue's input i (i >= 1) is appended as base + i
                user.inputs += node.inputs[1:]
                expr = remap(node.attrs["epilogue"], lambda leaf: leaf if isinstance(leaf, Acc) else In(leaf.dtype, base + leaf.index))
                user.inputs[k] = Value(partials.buffer, v.shape, v.strides, v.offset)
                user.attrs["sums"] = (*user.attrs.get("sums", ()), (k, node.attrs["splits"], expr, out.shape))
    return True


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
