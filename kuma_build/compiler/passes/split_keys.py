"""Split the keys of decode attention over workgroups (flash-decoding).

An attention node that kernels/attention_decode.py takes (the "gpu" class,
few query rows) and whose rows alone would leave most of the device idle
gets attrs["key_splits"] = (slices, keys per slice) and writes each slice's
partial (its max, sum and unnormalised output row) into a temporary; a new
attention_combine node after it merges the slices into the original output
view. One more dispatch per attention; the choice is the op record's
(kernels/attention_decode.py: key_splits).
"""

from math import prod

from kuma_build.compiler.ir.graph import Buffer, Node, Value
from kuma_build.compiler.ops import record


def split_keys(graph) -> None:
    nodes = []
    for node in graph.nodes:
        nodes.append(node)
        choice = record(node).key_splits(node, graph.device)
        if choice:
            nodes.append(_split(node, *choice))
    graph.nodes = nodes


def _split(node, splits: int, per: int) -> Node:
    out = node.output
    size = prod(out.shape[:-1]) * splits * (out.shape[-1] + 2)
    partials = Value(Buffer(size, "f32", "temp"), (size,), (1,))
    node.attrs["key_splits"] = (splits, per)
    node.attrs["rows_shape"] = out.shape
    node.output = partials
    return Node("attention_combine", [partials], out, {"splits": splits}, node.where)
