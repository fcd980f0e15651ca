"""Store an elementwise result in the order of the product it reads through a permutation.

The rewrite (ConvNeXt's block end: its feed-forward runs channels last, [1, H*W, C], and the
residual stream is channels first):

    p = product(...)               a matmul's or implicit-GEMM convolution's result, contiguous
    y = f(permute(p), r, ...)      an elementwise node reading p's whole buffer through a
                                   permutation of p's dims (here [1, C, H, W] of p's [1, H*W, C])
 -> y's buffer holds y in p's order: y's Value takes the permutation's strides, and every view
    that a reader takes of y (written for y's contiguous layout) is the same view in those strides

so the elementwise kernel's threads go in p's order and read p's elements (or the slices of its
split sum: kernels/elementwise.py: thread_order) and write y's as neighbours, where before each
write landed a channel's plane of y away from the last; and the readers of y read it channels
last. In ConvNeXt those are the next block's depthwise convolution + norm, whose warps then read
each pixel's channels as runs of neighbours (kernels/depthwise_norm.py: channels_fastest,
PIXELS_FASTEST) where an NCHW input put each channel a plane apart; the next residual add; and a
downsampling norm over the channels, whose rows become contiguous.

Only where every reader can take the new view exactly (each of its dims stepping one of y's dims,
never past its end, as slices, permutations and broadcasts do; not a merge of y's dims), no reader
is a product (whose kernels read their operands fastest with k contiguous), y is a temporary (no
model output, no state buffer) and every size is a number. Runs after the epilogue pass, which
can then have made y no node of its own, and before the depthwise fusion, which reads the
convolution's input layout. On device classes whose `operand_order` is set (devices.py).
"""

from math import prod

from kuma_build.compiler.ir.graph import Value, contiguous_strides
from kuma_build.compiler.ops import record
from kuma_build.compiler.passes.fuse_elementwise import readers_of


def store_in_operand_order(graph) -> None:
    if not graph.device.operand_order:
        return
    readers = readers_of(graph)
    producer = {node.output.buffer: node for node in graph.nodes}
    kept = {v.buffer for v in graph.outputs.values()} | {v.buffer for pair in graph.state.values() for v in pair}
    for node in graph.nodes:
        out = node.output
        if not (record(node).expression and record(node).strided_output and out.buffer.kind == "temp"
                and out.buffer not in kept and out.is_contiguous() and not out.is_dynamic):
            continue
        layout = next((v.strides for v in node.inputs[:node.operands] if v.is_permuted() and v.numel == v.buffer.count
                       and v.buffer in producer and record(producer[v.buffer]).product(producer[v.buffer], graph.device)), None)
        users = readers.get(out.buffer, set())
        if layout is None or any(record(user).product(user, graph.device) for user in users):
            continue
        views = {id(v): _rebased(v, out.shape, layout) for user in users for v in user.inputs if v.buffer is out.buffer}
        if any(view is None for view in views.values()):
            continue
        node.output = Value(out.buffer, out.shape, layout)
        for user in users:
            user.inputs = [views.get(id(v), v) if v.buffer is out.buffer else v for v in user.inputs]


def _rebased(view: Value, shape, layout) -> Value | None:
    """view, a view of a buffer holding a tensor of `shape` contiguously, as the same view of the
    buffer holding it with strides `layout`; None unless each of view's dims steps one of shape's
    dims by a whole multiple of its stride and, from view's first element, never past its end."""
    if view.is_dynamic or view.offset >= prod(shape):
        return None
    steps = contiguous_strides(shape)
    first = [(view.offset // step) % size for step, size in zip(steps, shape)]  # view's first element
    digit = list(first)
    strides = []
    for size, stride in zip(view.shape, view.strides):
        if size == 1 or stride == 0:
            strides.append(0)
            continue
        dim = next((d for d, (step, extent) in enumerate(zip(steps, shape)) if extent > 1 and step <= stride < step * extent), None)
        if dim is None or stride % steps[dim]:
            return None
        digit[dim] += stride // steps[dim] * (size - 1)  # the furthest this dim's digit goes
        strides.append(stride // steps[dim] * layout[dim])
    if any(d >= extent for d, extent in zip(digit, shape)):
        return None
    return Value(view.buffer, view.shape, tuple(strides), sum(d * stride for d, stride in zip(first, layout)))
