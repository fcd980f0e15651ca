"""Compute only the rows that are read: a node whose readers all read a slice of one of its output's
dims computes that slice alone.

    y = f(x)  (rows 0..T-1)  ;  z = g(y[:, 0])      ->      y' = f(x[:, 0:1])  ;  z = g(y'[:, 0])

A ViT classifier reads its last norm's first row (the class token's): that norm then normalises one
row, the residual add before it adds one, its feed-forward and attention output products multiply
one row, and the last attention scores one query against every key (its keys and values stay
whole). The nodes are visited last to first, so a node's readers are narrowed before the node
itself is asked what of its output they read.

What is read of a node's output is the box its readers' views span along each of its dims (a view
that walks it some other way counts as reading none of it narrower: the node stays). A node narrows
along one dim, the narrowest slice among the dims along which its op record's `slices` says it
computes each slice from the same slice of some inputs: elementwise (any dim), normalize (a dim it
does not reduce), matmul (its rows: A's and the bias's) and non-causal attention (its query rows:
the queries' and the mask's). Outputs and state are never narrowed; nor is anything whose sizes a
dim sets. The readers' views then read the same elements of the narrower output.
"""

from kuma_build.compiler.ir import views
from kuma_build.compiler.ir.graph import Value, contiguous_strides, fresh
from kuma_build.compiler.ops import record


def narrow_rows(graph) -> None:
    kept = {v.buffer for v in graph.outputs.values()} | {v.buffer for pair in graph.state.values() for v in pair}
    readers = {}  # buffer -> [(node, input k)] reading it: slicing a node's inputs keeps their buffers
    for reader in graph.nodes:
        for k, v in enumerate(reader.inputs):
            readers.setdefault(v.buffer, []).append((reader, k))
    for node in reversed(list(graph.nodes)):
        out, (dims, inputs) = node.output, record(node).slices(node)
        inputs = [k for k in inputs if k < len(node.inputs)]
        if (not dims or out.buffer in kept or out.buffer.kind != "temp"
                or not all(_static(v) for v in [out, *(node.inputs[k] for k in inputs)]) or not out.is_contiguous()):
            continue
        reads = readers.get(out.buffer, [])
        boxes = [_box(reader.inputs[k], out.shape) for reader, k in reads]
        if not reads or any(box is None for box in boxes):
            continue
        rank = len(out.shape)
        spans = {d: (min(box[d][0] for box in boxes), max(box[d][1] for box in boxes)) for d in range(-rank, 0)}
        narrower = [d for d in dims if spans[d][1] - spans[d][0] < out.shape[d]]
        if not narrower:
            continue
        d = min(narrower, key=lambda d: (spans[d][1] - spans[d][0]) / out.shape[d])  # the narrowest slice
        lo, hi = spans[d]
        _narrow(node, d, lo, hi, inputs)
        for reader, k in reads:
            reader.inputs[k] = _moved(reader.inputs[k], out.shape, node.output, d, lo)


def _static(v: Value) -> bool:
    return all(isinstance(x, int) for x in (*v.shape, *v.strides, v.offset))


def _walk(view: Value, shape) -> tuple[list[int], list[list[tuple[int, int, int]]]] | None:
    """How `view` walks a contiguous `shape`: the index it starts at along each dim, and for each of
    its own dims the parts it walks, (dim of shape, step, count), inner first (none: it stays);
    None when its offset or strides are not made of shape's dims'. A view dim may step within one
    of them (an attention's heads and head dims within a linear layer's columns), or walk several
    whole ones as one (the heads merged back into the model dim)."""
    if not _static(view):
        return None
    strides = contiguous_strides(shape)
    start = [view.offset // s % n for s, n in zip(strides, shape)]
    if sum(i * s for i, s in zip(start, strides)) != view.offset:
        return None

    def parts(size: int, stride: int) -> list[tuple[int, int, int]] | None:
        e = next((e for e in range(len(shape)) if shape[e] > 1 and 0 < strides[e] <= stride), None)
        if e is None or stride % strides[e]:
            return None
        if stride == strides[e] and size > shape[e]:  # whole dims merged: e, then the dims outside it
            outer = parts(size // shape[e], strides[e] * shape[e]) if start[e] == 0 and size % shape[e] == 0 else None
            return None if outer is None else [(e, 1, shape[e]), *outer]
        return [(e, stride // strides[e], size)]

    walks = [[] if size == 1 or stride == 0 else parts(size, stride) for size, stride in zip(view.shape, view.strides)]
    return None if any(w is None for w in walks) else (start, walks)


def _box(view: Value, shape) -> list[tuple[int, int]] | None:
    """[lo, hi) along each dim of a contiguous `shape` that `view` of it reads (None: _walk's)."""
    walk = _walk(view, shape)
    if walk is None:
        return None
    start, walks = walk
    hi = list(start)
    for e, step, count in (part for parts in walks for part in parts):
        hi[e] += (count - 1) * step
    if any(h >= n for h, n in zip(hi, shape)):
        return None
    return [(lo, h + 1) for lo, h in zip(start, hi)]


def _narrow(node, d: int, lo: int, hi: int, inputs) -> None:
    """The node computes slice [lo, hi) of its output's dim d (counted from the end) into a fresh
    buffer of that shape, from that slice of its `inputs` (their indices)."""
    for k in inputs:
        node.inputs[k] = views.slice_(node.inputs[k], d, lo, hi)
    shape = list(node.output.shape)
    shape[d] = hi - lo
    node.output = fresh(tuple(shape), node.output.dtype)


def _moved(view: Value, shape, out: Value, d: int, lo: int) -> Value:
    """A reader's view of the old output (contiguous `shape`) as the same elements of the narrowed
    one `out`: each of its dims steps along the same output dims, at out's strides for them."""
    start, walks = _walk(view, shape)
    start[d] -= lo
    new = contiguous_strides(out.shape)
    # a dim walking whole dims as one still does (its box spans them: d is none of them but the outermost)
    strides = tuple(parts[0][1] * new[parts[0][0]] if parts else 0 for parts in walks)
    return Value(out.buffer, view.shape, strides, sum(i * s for i, s in zip(start, new)))
