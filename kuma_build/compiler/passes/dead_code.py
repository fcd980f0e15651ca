"""Drop nodes whose results nothing reads (walking backwards from the outputs and the state
buffers, which the next run reads)."""


def remove_dead_nodes(graph) -> None:
    needed = {v.buffer for v in graph.outputs.values()} | {start.buffer for start, _ in graph.state.values()}
    kept = []
    for node in reversed(graph.nodes):
        if node.output.buffer in needed:
            kept.append(node)
            needed.update(v.buffer for v in node.inputs)
    graph.nodes = kept[::-1]
