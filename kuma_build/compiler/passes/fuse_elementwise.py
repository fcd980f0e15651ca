"""Fuse chains of elementwise nodes into one kernel.

An elementwise node whose result exactly one elementwise node reads, in the
order it was written (a contiguous view, any shape: reshapes are fine), is
inlined into that reader's expression tree; its inputs join the reader's,
viewed in the reader's shape. The chain then runs as one dispatch and the
intermediate never reaches memory: silu, hardswish, bias + activation,
residual add + relu, a batch-norm affine that could not be folded.

A piece of a concatenation (a record's computes_pieces) that an elementwise node computes, read
by the concatenation alone and in order, is computed in place the same way: its expression goes
in the node's attrs["pieces"] over inputs appended after the pieces (node.operands of them, the
piece's own input left as the first of them, for its shape). Rotary embeddings
(cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin])) then take one dispatch instead of three.

An input 0 that an elementwise or concatenation node computes (its record's as_pieces) is computed
in place the same way by a kernel that can (its record's computes_input), when nothing else reads
it: the node's inputs are appended to the kernel's and its pieces go in attrs["computed"]
(kernels/concat.py: computed_input). Input 0's view stays, for each element's place in the node's
result; no buffer is bound for it. A decode step's key is then rotated as a scatter writes it into
the cache (kernels/scatter.py), and its queries as the decode attention reads them
(kernels/attention_decode.py): no dispatch of their own. Not when the node reads a state buffer:
that read would move past the writes in place between them (passes/state.py).

Model outputs are never inlined, and a kernel keeps its distinct input buffers
within the device's storage buffers per stage, less one for its output.
The helpers here are shared with the epilogue pass (fuse_epilogue.py).
"""

from kuma_build.compiler.ir import views
from kuma_build.compiler.ir.expr import Acc, In, input_leaves, remap
from kuma_build.compiler.ir.graph import Value
from kuma_build.compiler.ops import record


def readers_of(graph) -> dict:
    """buffer -> the nodes reading it (each once)."""
    readers: dict = {}
    for node in graph.nodes:
        for v in node.inputs:
            readers.setdefault(v.buffer, set()).add(node)
    return readers


def only_reader(node, src, readers, graph) -> bool:
    """Whether `node` is the only thing reading src's result (a model output is read by the caller,
    a state buffer by the next run)."""
    buf = src.output.buffer
    return readers.get(buf) == {node} and buf.kind != "state" and not any(v.buffer is buf for v in graph.outputs.values())


def sole_reader(node, src, readers, graph) -> bool:
    """Whether `node` is the only thing reading src's result, in src's own element order."""
    buf = src.output.buffer
    return only_reader(node, src, readers, graph) and all(v.is_contiguous() for v in node.inputs if v.buffer is buf)


def in_shape(v: Value, shape) -> Value | None:
    """v viewed in `shape` (same element order), or None when strides cannot express it."""
    return v if tuple(v.shape) == tuple(shape) else views.reshape(v, shape)


def compact(inputs: list[Value], expr, most: int, keep: int = 0):
    """Drop inputs the expression does not read and merge identical views (the first `keep` stay put).

    Returns (inputs, expr), or None past `most` distinct buffers.
    """
    used = input_leaves(expr)
    kept, index, moved = list(inputs[:keep]), {}, {}
    for k, v in enumerate(inputs):
        key = (id(v.buffer), v.shape, v.strides, v.offset)
        if k < keep:
            index.setdefault(key, k)
        elif k in used:
            if key not in index:
                index[key] = len(kept)
                kept.append(v)
            moved[k] = index[key]
    if sum(buf.pages for buf in {v.buffer for v in kept}) > most:
        return None
    return kept, remap(expr, lambda leaf: leaf if isinstance(leaf, Acc) or leaf.index < keep else In(leaf.dtype, moved[leaf.index]))


def fuse_elementwise(graph) -> None:
    readers = readers_of(graph)
    producer = {node.output.buffer: node for node in graph.nodes}
    fused = set()

    def inlined(src, node) -> None:  # src's inputs are node's now
        fused.add(src)
        for v in src.inputs:
            readers[v.buffer].discard(src)
            readers[v.buffer].add(node)

    for node in graph.nodes:
        if record(node).computes_pieces:
            for k in range(node.operands):
                src = producer.get(node.inputs[k].buffer)
                if (src is not None and record(src).expression and src not in fused and src.output.dtype == node.output.dtype
                        and sole_reader(node, src, readers, graph) and _inline_piece(node, k, src, input_buffers(graph))):
                    inlined(src, node)
        if record(node).computes_input and record(node).computes_input(node, graph.device):
            src = producer.get(node.inputs[0].buffer)
            if (src is not None and record(src).as_pieces(src) and src not in fused and src.output.dtype == node.output.dtype
                    and _computable(node, src) and only_reader(node, src, readers, graph)
                    and _inline_input(node, src, input_buffers(graph))):
                inlined(src, node)
        while record(node).expression:
            sources = [producer.get(v.buffer) for v in node.inputs]
            src = next((s for s in sources if s is not None and record(s).expression and s not in fused
                        and sole_reader(node, s, readers, graph) and _inline(node, s, input_buffers(graph))), None)
            if src is None:
                break
            inlined(src, node)
    graph.nodes = [n for n in graph.nodes if n not in fused]


def input_buffers(graph) -> int:
    """How many distinct input buffers a kernel may bind: one storage buffer is its output."""
    return graph.device.storage_buffers - 1


def _inline_piece(node, k: int, src, most: int) -> bool:
    """Compute node's piece k in place from src's expression, its inputs viewed in the piece's shape;
    not when node reads src's result elsewhere too (cat([y, y]): that piece would read it unwritten)."""
    shape = node.inputs[k].shape
    moved = [in_shape(v, shape) for v in src.inputs]
    if not moved or any(v is None for v in moved) or sum(v.buffer is src.output.buffer for v in node.inputs) > 1:
        return False
    kept = [v for j, v in enumerate(node.inputs) if j != k] + moved
    if sum(buf.pages for buf in {v.buffer for v in kept}) > most:
        return False
    node.attrs.setdefault("operands", node.operands)
    base = len(node.inputs)
    node.inputs = node.inputs[:k] + [moved[0]] + node.inputs[k + 1:] + moved
    node.attrs["pieces"] = {**node.attrs.get("pieces", {}), k: remap(src.attrs["expr"], lambda leaf: In(leaf.dtype, base + leaf.index))}
    return True


def _computable(node, src) -> bool:
    """Whether node may compute its input 0 from src in place: not when it reads src's result
    elsewhere too (an index tensor) or src reads a state buffer (passes/state.py)."""
    return sum(v.buffer is src.output.buffer for v in node.inputs) == 1 and not any(v.buffer.kind == "state" for v in src.inputs)


def _inline_input(node, src, most: int) -> bool:
    """Compute node's input 0 in place from src's pieces, src's inputs appended to node's: input 0
    keeps its view, which gives each element's flat index in src's result, and binds no buffer
    (kernels/wgsl.py: computed_inputs). Besides _computable, src's result must be a whole contiguous buffer."""
    out = src.output
    if not out.is_contiguous() or out.offset != 0:
        return False
    if sum(buf.pages for buf in {v.buffer for v in node.inputs[1:] + src.inputs}) > most:
        return False
    dim, pieces = record(src).as_pieces(src)
    base = len(node.inputs)
    node.attrs.setdefault("operands", node.operands)
    node.attrs["computed"] = {"shape": out.shape, "dim": dim,
                              "pieces": [(extent, remap(expr, lambda leaf: In(leaf.dtype, base + leaf.index))) for extent, expr in pieces]}
    node.inputs = node.inputs + src.inputs
    return True


def _inline(node, src, most: int) -> bool:
    """Put src's expression in place of node's leaves that read src's result."""
    slots = {k for k, v in enumerate(node.inputs) if v.buffer is src.output.buffer}
    moved = [in_shape(v, node.output.shape) for v in src.inputs]
    if any(v is None for v in moved):
        return False
    base = len(node.inputs)
    inner = remap(src.attrs["expr"], lambda leaf: In(leaf.dtype, base + leaf.index))
    merged = compact(node.inputs + moved, remap(node.attrs["expr"], lambda leaf: inner if leaf.index in slots else leaf), most)
    if merged is None:
        return False
    node.inputs, node.attrs["expr"] = merged
    return True
