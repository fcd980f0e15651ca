"""Give every model output its own contiguous buffer written by a kernel.

An output that is a view, an input, a constant, a state buffer, or the same buffer
as another output gets a copy node, so runtimes can read outputs back as whole buffers.
"""

from kuma_build.compiler.ir.expr import copy_of
from kuma_build.compiler.ir.graph import Node, fresh


def materialize_outputs(graph) -> None:
    produced = {node.output.buffer for node in graph.nodes}
    claimed = set()
    for name, value in graph.outputs.items():
        if value.is_contiguous() and value.buffer in produced and value.buffer.kind == "temp" and value.buffer not in claimed:
            out = value
        else:
            out = fresh(value.shape, value.dtype)
            graph.nodes.append(Node("elementwise", [value], out, {"expr": copy_of(value.dtype)}))
        out.buffer.kind = "output"
        out.buffer.name = name
        claimed.add(out.buffer)
        graph.outputs[name] = out
