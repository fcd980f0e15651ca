"""Fuse a depthwise convolution into the norm over its channels that reads it.

The rewrite (ConvNeXt's block: dwconv, permute(0, 2, 3, 1), LayerNorm(C)):

    y = conv(x, w, b)                 a node whose record says channel_rows (a depthwise
                                      convolution, NCHW result y of C channels)
    z = norm(v, g, h, e...)           a channel_norm node (over v's last dim alone) where v is a
                                      view of y with y's channels as its last dim and its other
                                      dims taking each of y's pixels once (any order)
 -> z = depthwise_norm(x, w, b, g, h, e...)   one kernel (kernels/depthwise_norm.py), at the
                                      norm's place, writing z's buffer; y is never written

when the norm is the only reader of y (no model output, no state) and reads it only as v (its
epilogue too), x is no state buffer (which a node between the two might write in place: the
convolution now runs at the norm's place) and the fused kernel binds at most the device's storage
buffers. Each such pair is one dispatch and one round trip of the activations fewer. A constant
filter is stored [kh, kw, C] (the node's view of it keeps [C, 1, kh, kw]: _channels_last). Runs after the epilogue pass, so the norm's fused epilogue
(moved to the new node's inputs) comes along and a convolution with one of its own stays apart.
kernels/depthwise_norm.py's FUSE turns the pass off (an A/B on a device).
"""

import torch

from kuma_build.compiler.ir.expr import In, input_leaves, remap
from kuma_build.compiler.ir.graph import Node, Value
from kuma_build.compiler.kernels import depthwise_norm
from kuma_build.compiler.ops import record
from kuma_build.compiler.passes.constants import stored_in_order
from kuma_build.compiler.passes.fuse_elementwise import input_buffers, only_reader, readers_of


def fuse_channel_norms(graph) -> None:
    if not depthwise_norm.FUSE:
        return
    readers = readers_of(graph)
    producer = {node.output.buffer: node for node in graph.nodes}
    fused: dict = {}  # norm -> the node taking its place
    gone = set()  # the convolutions computed inside those
    for node in graph.nodes:
        src = producer.get(node.inputs[0].buffer) if record(node).channel_norm(node) else None
        if (src is None or not record(src).channel_rows(src, graph.device) or not only_reader(node, src, readers, graph)
                or any(v.buffer is src.output.buffer for v in node.inputs[1:]) or 0 in input_leaves(node.attrs.get("epilogue"))
                or any(v.buffer.kind == "state" for v in src.inputs)):
            continue
        rows = pixel_rows(node.inputs[0], src.output)
        if rows is None:
            continue
        merged = _merge(src, node, rows)
        if sum(buf.pages for buf in {v.buffer for v in merged.inputs}) > input_buffers(graph):
            continue
        fused[node] = merged
        gone.add(src)
    graph.nodes = [fused.get(n, n) for n in graph.nodes if n not in gone]


def pixel_rows(view, result) -> tuple | None:
    """(shape, strides, offset) of view's dims but the last over result's elements, when result is
    a contiguous NCHW tensor, view's last dim its channels and its other dims take each pixel
    (n, h, w) once; else None."""
    sizes = (*view.shape, *view.strides, view.offset, *result.shape)
    if not all(isinstance(s, int) for s in sizes) or not result.is_contiguous() or len(result.shape) != 4:
        return None
    n, c, h, w = result.shape
    if view.shape[-1] != c or view.strides[-1] != h * w:
        return None
    kept = (tuple(view.shape[:-1]), tuple(view.strides[:-1]), view.offset)
    spots = torch.as_strided(torch.arange(result.numel), *kept).flatten()
    pixels = (torch.arange(n)[:, None] * (c * h * w) + torch.arange(h * w)[None, :]).flatten()
    return kept if spots.numel() == pixels.numel() and bool((spots.sort().values == pixels).all()) else None


def _merge(conv: Node, norm: Node, rows: tuple) -> Node:
    """The depthwise_norm node: conv's inputs (a constant filter stored channels last: _channels_last),
    then the norm's but its first (In leaves of its epilogue moved along)."""
    own = len(conv.inputs)
    attrs = {**conv.attrs, "eps": norm.attrs["eps"], "has_weight": norm.attrs["has_weight"], "has_bias": norm.attrs["has_bias"],
             "conv_shape": tuple(conv.output.shape), "rows": rows, "conv_operands": own, "operands": own + norm.operands - 1}
    if "epilogue" in norm.attrs:
        attrs["epilogue"] = remap(norm.attrs["epilogue"], lambda leaf: In(leaf.dtype, leaf.index - 1 + own) if isinstance(leaf, In) else leaf)
    inputs = [conv.inputs[0], _channels_last(conv.inputs[1]), *conv.inputs[2:], *norm.inputs[1:]]
    return Node("depthwise_norm", inputs, norm.output, attrs, norm.where)


def _channels_last(weight: Value) -> Value:
    """A constant filter [C, 1, kh, kw] as the same view of a copy stored [kh, kw, C]: the weights of a
    tap that a warp's neighbouring channels load are then neighbours in memory (in PyTorch's order
    each is a line apart; depthwise_norm.FILTER_CHANNELS_LAST)."""
    if not depthwise_norm.FILTER_CHANNELS_LAST or not weight.is_const or not weight.is_contiguous():
        return weight
    return stored_in_order(weight, (1, 2, 3, 0))
