"""Make each run end with every state buffer holding its new value (Graph.state).

A state buffer (a registered buffer forward() mutates, such as a KV cache) keeps its
contents on the GPU from one run to the next. When its new value is an index_put of
its whole old value (index_copy_, index_put_, slice assignment) and nothing else reads
the old value, that node becomes a "scatter" writing only the updated slots into the
state buffer itself, and every reader of the new value reads the state buffer (after
the scatter, as they come later in the run). Any other new value is computed as usual
and copied into the state buffer by a last scatter of the whole value.

This runs before the other passes; the fusion passes never move a read of a state
buffer earlier or make a kernel write it instead of another buffer (fuse_elementwise's
only_reader), and dead-code removal keeps the nodes that write state.
"""

from kuma_build.compiler.ir.expr import copy_of
from kuma_build.compiler.ir.graph import Node, Value, fresh


def write_state(graph) -> None:
    for name, (start, end) in graph.state.items():
        if not _scatter_in_place(graph, start, end):
            if end.buffer is start.buffer:  # a view of the state itself: copy it out first
                out = fresh(end.shape, end.dtype)
                graph.nodes.append(Node("elementwise", [end], out, {"expr": copy_of(end.dtype)}))
                end = out
            graph.nodes.append(Node("scatter", [end], start, {"dim": 0}))
        graph.state[name] = (start, start)  # the run now ends with the new value in the state buffer


def _scatter_in_place(graph, start: Value, end: Value) -> bool:
    state = start.buffer
    node = next((n for n in reversed(graph.nodes) if n.output.buffer is end.buffer), None)
    if node is None or node.op != "index_put" or not end.is_contiguous() or node.inputs[0] is not start and not (
            node.inputs[0].buffer is state and node.inputs[0].is_contiguous()):
        return False
    reads_old = [n for n in graph.nodes for k, v in enumerate(n.inputs) if v.buffer is state and (n is not node or k > 0)]
    if reads_old or any(v.buffer is state for v in graph.outputs.values()):
        return False  # the old value is read elsewhere: writing it in place would change what that reads
    written = node.output.buffer
    node.op, node.inputs, node.output = "scatter", node.inputs[1:], Value(state, node.output.shape, node.output.strides)
    retarget = lambda v: Value(state, v.shape, v.strides, v.offset) if v.buffer is written else v
    for n in graph.nodes:
        n.inputs = [retarget(v) for v in n.inputs]
    graph.outputs = {name: retarget(v) for name, v in graph.outputs.items()}
    return True
