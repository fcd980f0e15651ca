"""Store strided views of constants (transposed or sliced weights) contiguously.

The weight file then holds exactly what kernels read, in the order they read
it. Broadcast views (stride 0) stay views: expanding them would bloat weights, and so do views
whose size a dim sets (a table's first `seq` rows).
"""

from kuma_build.compiler.ir.graph import Value, const


def pack_constant_views(graph) -> None:
    packed: dict[tuple, Value] = {}
    for node in graph.nodes:
        for i, v in enumerate(node.inputs):
            if not v.is_const or v.is_dynamic or v.is_contiguous() or v.is_broadcast():
                continue
            key = (id(v.buffer), v.shape, v.strides, v.offset)
            if key not in packed:
                packed[key] = const(v.tensor().contiguous(), v.buffer.name)
            node.inputs[i] = packed[key]
