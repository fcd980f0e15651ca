"""Drop contiguous copies that only attention reads: it reads the copy's source view instead.

GPT-2 (transformers' key/value cache code) copies its keys and values into
contiguous tensors before attention: two dispatches a layer, 24 of GPT-2
small's 159, each paying Dawn's ~5 us per dispatch (docs/performance.md).
Attention reads its keys and values a row at a time along the head dim,
through strides, into registers and workgroup memory (kernels/attention.py),
so reading the copy's source view costs it the same as reading the copy.

A copy goes when every reader is an op whose record says so (reads_any_layout)
and reads the copy's whole result in order, the result is no model output, and
its source is no state buffer (the only buffers written in place, after the
copy maybe: passes/state.py); every other buffer is written once, before any read.
"""

from kuma_build.compiler.ir.expr import In
from kuma_build.compiler.ops import record
from kuma_build.compiler.passes.fuse_elementwise import readers_of


def elide_copies(graph) -> None:
    readers = readers_of(graph)
    outputs = {v.buffer for v in graph.outputs.values()}
    removed = set()
    for node in graph.nodes:
        if not (record(node).expression and isinstance(node.attrs["expr"], In)):
            continue
        source, out = node.inputs[0], node.output
        users = readers.get(out.buffer, set())
        if (not users or out.buffer in outputs or source.buffer.kind == "state" or source.dtype != out.dtype
                or not all(record(user).reads_any_layout for user in users)
                or not all(v.is_contiguous() and v.shape == out.shape for user in users for v in user.inputs if v.buffer is out.buffer)):
            continue
        for user in users:
            user.inputs = [source if v.buffer is out.buffer else v for v in user.inputs]
            readers.setdefault(source.buffer, set()).add(user)
        removed.add(node)
    graph.nodes = [n for n in graph.nodes if n not in removed]
