"""Fold an inference batch norm into the conv or linear that feeds it.

    conv(x, W, b) * scale + shift  ==  conv(x, W * scale, b * scale + shift)

Only when the producer's result feeds nothing else and is not a model output; the
producer's record (compiler/ops.py: fold_affine) says whether and how its weights absorb it.
"""

from kuma_build.compiler.ops import record


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
        fold = record(src).fold_affine
        # weights computed at run time cannot absorb the scale
        if fold and all(v.is_const for v in src.inputs[1:]) and fold(src, x, *affine):
            src.output = node.output
            removed.add(node)
    graph.nodes = [n for n in graph.nodes if n not in removed]
