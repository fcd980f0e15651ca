"""Store large weights narrower (kuma.toml `precision` = "f16" or "int8"; compiler/precision.py).

The weight operands (those whose op record names an output-channel dim for them: matmul
operands, conv weights, embedding tables) of at least MIN_ELEMENTS values are marked f16 or
int8; biases, norms and small tensors stay f32. int8 keeps one scale per output channel.

An f16 weight is read as 32-bit words of two values where the device lacks shader-f16, and the GPU
kernels load a word once for both values when a row they read by pairs starts on a word
(OpRecord.word_row: an implicit GEMM's rows of K, a filter's rows, a linear weight's rows). A row
of odd length would start every other row mid-word and leave those kernels loading elements, so
such a weight is stored with a zero after each row (pad_odd_rows): the views keep their shapes
and the kernels never read the zeros as values (the pairs' bounds stop at the row's last element).

An f16 build's program for devices without tensor cores (`widen`, devices.F16_PROGRAM) was compiled
as the f32 build is; there a chosen weight travels as f16 and is widened to f32 as the runtime
writes it (Buffer.transit): its kernels are the f32 build's, so it is never slower than that build
(reading f16 words and unpacking them in the products' inner loops was: 0.90-0.99x, H200, Dawn,
docs/performance.md). A weight that every reader uses at most MEMORY_BOUND flops an element (a
linear layer of a few rows, as in decoding; an embedding table) is stored f16 there too and read as
words: such readers wait on memory, and read half the bytes. A widened weight's odd rows are padded
as the -f16 program's are, so both programs' chunks are the same bytes (a direct depthwise
convolution's 7 x 7 filters, for one); its kernels then differ from the f32 build's in those strides only.
"""

import dataclasses

import torch

from kuma_build.compiler.ir.graph import Value
from kuma_build.compiler.ir.sizes import max_value
from kuma_build.compiler.kernels.gemm import THIN
from kuma_build.compiler.ops import record

MIN_ELEMENTS = 1024  # smaller weights stay f32 (as TFLite's dynamic-range quantisation does)
# rows shorter than this stay unpadded: the padding adds 1/row of the weight's bytes (a 3 x 3
# depthwise filter's rows would grow by a third); its kernels then read those rows by elements
# or, a direct convolution, by words picking their halves (kernels/conv.py)
MIN_PADDED_ROW = 7


# flops a reader does per element of a weight at most for it to wait on memory, not arithmetic: a
# product of THIN rows (the thin kernel's, kernels/gemm.py) does 2 per row
MEMORY_BOUND = 2 * THIN


def choose_weight_storage(graph, precision: str, widen: bool = False) -> None:
    if precision == "f32":
        return
    first: dict = {}  # weight buffer -> (its first weight operand's view, that operand's channel dim)
    flops: dict = {}  # weight buffer -> the most flops per element of it a reader does
    for node in graph.nodes:
        for k, value in enumerate(node.inputs):
            buf, dim = value.buffer, record(node).weight_dim(node, k)
            if (dim is None or buf.kind != "const" or buf.dtype != "f32" or buf.storage != "f32" or buf.numel < MIN_ELEMENTS
                    or value.is_dynamic):  # a view a dim sizes (a table's first seq rows) is read as stored
                continue
            first.setdefault(buf, (value, dim))
            flops[buf] = max(flops.get(buf, 0), max_value(record(node).flops(node)) / buf.numel)
    for buf, (value, dim) in first.items():
        if widen and flops[buf] > MEMORY_BOUND:
            buf.transit = "f16"
            continue
        buf.storage = precision
        if precision == "int8":
            buf.channels = channel_axis(value, dim)
    if precision == "f16":
        pad_odd_rows(graph)


def channel_axis(value, dim: int) -> tuple[int, int]:
    """(step, count) such that (flat index // step) % count is the index along `dim` of every
    element the view reads; (1, 1), one scale for the whole tensor, when no such pair exists."""
    step, count = value.strides[dim], value.shape[dim]
    if step == 0 or count == 1:
        return (1, 1)
    flat = torch.as_strided(torch.arange(value.buffer.numel), value.shape, value.strides, value.offset)
    along = torch.arange(count).reshape([count if d == dim else 1 for d in range(len(value.shape))])
    return (step, count) if bool(((flat // step) % count == along).all()) else (1, 1)


def pad_odd_rows(graph) -> None:
    """Store each f16 (or widened) weight whose readers all read it by words along rows of one odd length (at
    least MIN_PADDED_ROW) with a zero after each row, and point every reader at the same elements
    in the padded layout; a weight some reader sees in another shape of rows stays as it is."""
    outputs = {v.buffer for v in graph.outputs.values()}
    for buf, uses in graph.uses().items():
        if buf.storage != "f16" and buf.transit != "f16":  # a widened weight too: its bytes are then the -f16 program's
            continue
        rows = {record(node).word_row(node, k) for node, k in uses} - {None}
        if buf in outputs or len(rows) != 1:
            continue
        (row,) = rows
        if not isinstance(row, int) or row % 2 == 0 or row < MIN_PADDED_ROW or buf.numel % row:
            continue
        padded = [padded_view(node.inputs[k], row) for node, k in uses]
        if any(view is None for view in padded):
            continue
        buf.data = torch.nn.functional.pad(buf.data.reshape(-1, row), (0, 1)).reshape(-1)
        buf.numel = buf.data.numel()
        for (node, k), view in zip(uses, padded):
            node.inputs[k] = view


def padded_view(v: Value, row: int) -> Value | None:
    """v over its buffer with a zero after each row of `row` elements (flat element i moves to
    i // row * (row + 1) + i % row), or None when no view can say that: v reads across rows."""
    sizes = (*v.shape, *v.strides, v.offset)
    if not all(isinstance(x, int) for x in sizes) or v.offset % row:
        return None
    used = [(size, stride) for size, stride in zip(v.shape, v.strides) if size > 1]
    inside = sum(stride * (size - 1) for size, stride in used if stride < row)  # the farthest a row's dims reach
    if inside >= row or any(stride >= row and stride % row for _, stride in used):
        return None
    strides = tuple(s if s < row or size == 1 else s // row * (row + 1) for size, s in zip(v.shape, v.strides))
    return dataclasses.replace(v, strides=strides, offset=v.offset // row * (row + 1))
