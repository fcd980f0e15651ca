"""Fold an inference batch norm into the conv or linear that feeds it.

    conv(x, W, b) * scale + shift  ==  conv(x, W * scale, b * scale + shift)

Only when the producer's result feeds nothing else and is not a model output.
"""

import torch

from kuma_build.compiler.ir import views
from kuma_build.compiler.ir.graph import const


def fold_batchnorm(graph) -> None:
    readers: dict = {}
    for node in graph.nodes:
        for v in node.inputs:
            readers.setdefault(v.buffer, []).append(node)
    outputs = {v.buffer for v in graph.outputs.values()}
    producer = {node.output.buffer: node for node in graph.nodes}

    removed = set()
    for node in graph.nodes:
        affine = node.attrs.get("channel_affine")
        if affine is None:
            continue
        x = node.inputs[0]
        src = producer.get(x.buffer)
        if src is None or len(readers.get(x.buffer, [])) != 1 or x.buffer in outputs or not x.is_contiguous():
            continue
        if _fold_into(src, x, *affine):
            src.output = node.output
            removed.add(node)
    graph.nodes = [n for n in graph.nodes if n not in removed]


def _fold_into(src, x, scale: torch.Tensor, shift: torch.Tensor) -> bool:
    if not all(v.is_const for v in src.inputs[1:]):
        return False  # weights computed at run time cannot absorb the scale
    if src.op == "conv2d" and not src.attrs["transposed"] and x.shape == src.output.shape:
        weight = src.inputs[1].tensor()
        bias = src.inputs[2].tensor() if len(src.inputs) > 2 else torch.zeros(weight.shape[0])
        new_weight = weight * scale.reshape(-1, 1, 1, 1)
    elif src.op == "matmul" and len(x.shape) == 2 and src.output.shape[0] == 1:
        weight = src.inputs[1].tensor()  # [1, K, N]: channels are columns
        bias = src.inputs[2].tensor()[0, 0] if len(src.inputs) > 2 else torch.zeros(weight.shape[2])
        if src.attrs["alpha"] != 1.0 or src.attrs["beta"] != 1.0 or (len(src.inputs) > 2 and src.inputs[2].strides[1] != 0):
            return False
        new_weight = weight * scale.reshape(1, 1, -1)
    else:
        return False
    new_bias = bias * scale + shift
    src.inputs[1] = const(new_weight, src.inputs[1].buffer.name)
    bias_value = const(new_bias, src.inputs[1].buffer.name.rsplit(".", 1)[0] + ".bias")
    src.inputs[2:] = [views.expand(bias_value, src.output.shape) if src.op == "matmul" else bias_value]
    return True
