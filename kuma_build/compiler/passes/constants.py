"""Store strided views of constants (transposed or sliced weights) contiguously, each weight once.

The weight file then holds exactly what kernels read, in the order they read
it. Broadcast views (stride 0) stay views: expanding them would bloat weights, and so do views
whose size a dim sets (a table's first `seq` rows).

A weight read both as it is and as a packed permutation (a tied embedding: the
table's rows by the gather, its transpose by the output head's product) would be
stored twice; when every plain reader is an op whose record says any layout
serves it (OpRecord.reads_any_layout), those readers get a view of the packed copy
instead, and the original is stored nowhere. GPT-2's 154 MB table is then shipped once.
"""

from kuma_build.compiler.ir import views
from kuma_build.compiler.ir.graph import Value, const
from kuma_build.compiler.ops import record


def pack_constant_views(graph) -> None:
    packed: dict[tuple, Value] = {}
    whole: dict = {}  # weight buffer -> all of it, as a view of a packed permuted copy
    for node in graph.nodes:
        for i, v in enumerate(node.inputs):
            if not v.is_const or v.is_dynamic or v.is_contiguous() or v.is_broadcast():
                continue
            key = (id(v.buffer), v.shape, v.strides, v.offset)
            if key not in packed:
                packed[key] = const(v.tensor().contiguous(), v.buffer.name)
                if v.buffer not in whole and (original := unpermuted(v, packed[key])) is not None:
                    whole[v.buffer] = original
            node.inputs[i] = packed[key]
    share_packed_copies(graph, whole)


def share_packed_copies(graph, whole: dict) -> None:
    """Point the plain readers of a weight that has a packed permuted copy at a view of that copy,
    when every one of them takes any layout."""
    for buffer, uses in graph.uses().items():
        if buffer not in whole or not all(record(node).reads_any_layout and not node.inputs[k].is_dynamic and node.inputs[k].is_contiguous() for node, k in uses):
            continue
        shared = [views.reshape(whole[buffer], node.inputs[k].shape) for node, k in uses]
        if all(view is not None for view in shared):
            for (node, k), view in zip(uses, shared):
                node.inputs[k] = view


def stored_in_order(v: Value, order) -> Value:
    """Constant v (contiguous) as the same view of a copy stored with its dims in `order`, outermost
    first (a filter channels last for the kernel that reads it so: passes/filter_order.py,
    passes/fuse_channel_norm.py)."""
    back = [order.index(d) for d in range(len(order))]
    return views.permute(const(v.tensor().permute(*order), v.buffer.name), back)


def unpermuted(view: Value, copy: Value) -> Value | None:
    """view's whole buffer, contiguous, as a view of `copy` (view packed contiguous) when view is a
    permutation of all of it (Value.is_permuted: pack_constant_views passes no contiguous one); else None."""
    if view.numel != view.buffer.numel or not view.is_permuted():
        return None
    order = sorted(range(len(view.shape)), key=lambda d: -view.strides[d])  # the buffer's row-major dim order
    return Value(copy.buffer, tuple(view.shape[d] for d in order), tuple(copy.strides[d] for d in order), 0)
