"""Fuse an elementwise node into the matmul, convolution or norm whose result it reads.

When an elementwise node is the only reader of the result of a matmul, a
plain convolution or a layer/group norm, reading it in output order, its
expression becomes the producer's epilogue: the kernel applies it to each
accumulated value (the Acc leaf) before the one store, reading
the expression's other inputs (residuals, per-channel constants) at the
output element. This runs after fuse_elementwise, so a whole bias +
activation + residual chain goes in at once, and the standalone dispatch
and its round trip through memory disappear. A plain copy (clone,
contiguous()) of any kernel's result in order is dropped the same way:
that kernel writes the copy's buffer.
"""

from kuma_build.compiler.ir.expr import Acc, In, remap
from kuma_build.compiler.ir.graph import Value, contiguous_strides
from kuma_build.compiler.ops import record
from kuma_build.compiler.passes.fuse_elementwise import compact, in_shape, input_buffers, only_reader, readers_of, sole_reader


def fuse_epilogues(graph) -> None:
    readers = readers_of(graph)
    producer = {node.output.buffer: node for node in graph.nodes}
    place = {}  # producer -> the consumer whose place (in order) it now takes
    removed = set()
    for node in (n for n in graph.nodes if record(n).expression):
        copy = isinstance(node.attrs["expr"], In)  # a plain copy of its one input
        src = producer.get(node.inputs[0].buffer) if copy else None
        layout = src and record(src).strided_output and only_reader(node, src, readers, graph) and _layout_in_copy(node.inputs[0], src.output)
        if layout:  # src writes the copy's buffer in the copy's order
            src.output = Value(node.output.buffer, src.output.shape, layout)
            place[src] = node
            removed.add(node)
            producer[node.output.buffer] = src
            continue
        for v in node.inputs:
            src = producer.get(v.buffer)
            if src is None or not sole_reader(node, src, readers, graph):
                continue
            if copy:  # any kernel can write the copy's buffer itself
                src.output = Value(node.output.buffer, src.output.shape, src.output.strides)
            elif not (record(src).epilogue(src) and node.output.dtype == "f32" and "epilogue" not in src.attrs
                      and _attach(src, node, input_buffers(graph))):
                continue
            place[src] = node
            removed.add(node)
            producer[node.output.buffer] = src
            break
    # a producer moves down to its consumer's place: the epilogue's other inputs
    # may be computed after it, and nothing else reads its result in between
    at = {consumer: src for src, consumer in place.items()}
    graph.nodes = [at.get(n, n) for n in graph.nodes if n not in place and (n not in removed or n in at)]


def _layout_in_copy(view: Value, out: Value) -> tuple[int, ...] | None:
    """Strides that place out's elements where a contiguous copy of `view` (a permutation of all
    of out's contiguous buffer) has them; None when the view is anything else."""
    if view.offset != 0 or view.numel != out.buffer.count or not out.is_contiguous():
        return None
    copy_strides = contiguous_strides(view.shape)
    by_stride = {stride: (size, copy_stride) for size, stride, copy_stride in zip(view.shape, view.strides, copy_strides) if size != 1}
    layout = []
    for size, stride in zip(out.shape, out.strides):
        if size == 1:
            layout.append(0)
        elif by_stride.get(stride, (None,))[0] == size:
            layout.append(by_stride.pop(stride)[1])
        else:
            return None
    return tuple(layout) if not by_stride else None


def _attach(src, node, most: int) -> bool:
    """Make node's expression src's epilogue and src write node's output buffer."""
    buf = src.output.buffer
    moved = [None if v.buffer is buf else in_shape(v, src.output.shape) for v in node.inputs]
    if any(m is None for m, v in zip(moved, node.inputs) if v.buffer is not buf):
        return False
    own = len(src.inputs)
    expr = remap(node.attrs["expr"], lambda leaf: Acc() if node.inputs[leaf.index].buffer is buf
                 else In(leaf.dtype, own + leaf.index))
    merged = compact(src.inputs + [m or v for m, v in zip(moved, node.inputs)], expr, most, keep=own)
    if merged is None:
        return False
    src.inputs, src.attrs["epilogue"] = merged
    src.attrs["operands"] = own
    src.output = Value(node.output.buffer, src.output.shape, src.output.strides)
    return True
