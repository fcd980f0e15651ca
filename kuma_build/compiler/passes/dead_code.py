"""Drop nodes whose results nothing reads (walking backwards from the outputs)."""


def remove_dead_nodes(graph) -> None:
    needed = {v.buffer for v in graph.outputs.values()}
    kept = []
    for node in reversed(graph.nodes):
        if node.output.buffer in needed:
            kept.append(node)
            needed.update(v.buffer for v in node.inputs)
    graph.nodes = kept[::-1]
