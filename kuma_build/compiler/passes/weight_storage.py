"""Store large weights narrower (kuma.toml `precision` = "f16" or "int8"; compiler/precision.py).

The weight operands (those whose op record names an output-channel dim for them: matmul
operands, conv weights, embedding tables) of at least MIN_ELEMENTS values are marked f16 or
int8; biases, norms and small tensors stay f32. int8 keeps one scale per output channel.
"""

import torch

from kuma_build.compiler.ops import record

MIN_ELEMENTS = 1024  # smaller weights stay f32 (as TFLite's dynamic-range quantisation does)


def choose_weight_storage(graph, precision: str) -> None:
    if precision == "f32":
        return
    for node in graph.nodes:
        for k, value in enumerate(node.inputs):
            buf, dim = value.buffer, record(node).weight_dim(node, k)
            if (dim is None or buf.kind != "const" or buf.dtype != "f32" or buf.storage != "f32" or buf.numel < MIN_ELEMENTS
                    or value.is_dynamic):  # a view a dim sizes (a table's first seq rows) is read as stored
                continue
            buf.storage = precision
            if precision == "int8":
                buf.channels = channel_axis(value, dim)


def channel_axis(value, dim: int) -> tuple[int, int]:
    """(step, count) such that (flat index // step) % count is the index along `dim` of every
    element the view reads; (1, 1), one scale for the whole tensor, when no such pair exists."""
    step, count = value.strides[dim], value.shape[dim]
    if step == 0 or count == 1:
        return (1, 1)
    flat = torch.as_strided(torch.arange(value.buffer.numel), value.shape, value.strides, value.offset)
    along = torch.arange(count).reshape([count if d == dim else 1 for d in range(len(value.shape))])
    return (step, count) if bool(((flat // step) % count == along).all()) else (1, 1)
