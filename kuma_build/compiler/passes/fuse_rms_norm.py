"""Fold an RMSNorm written out in PyTorch into one "normalize" node.

Llama-style decoders (Llama, Qwen, Mistral; tests/models/llama.py) write their norm as code:

    x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight

which imports, after fuse_elementwise, as four kernels: x * x, the mean of each row, rsqrt(mean +
eps) a row, and x times that and the weight (fuse_elementwise inlines only what its reader reads
in order, and the last one reads the row's value broadcast). A decode step of Qwen2.5-0.5B's size
runs 49 of them: 196 of its 562 dispatches, each waiting on the one before (docs/performance.md).
Here the four become rows.py's normalize kernel with attrs["rms"]: the row's squares summed, then
x * inverseSqrt(sum / n + eps) * weight, one dispatch, the row read from registers where it fits.

The rewrite, over the last dim only, each intermediate read by the next node alone (not a model
output):

    s = x * x  (or x ** 2)          ->  (gone)
    m = mean(s, last dim)           ->  (gone)
    r = rsqrt(m + eps)              ->  (gone)
    y = x * r * w  (any order)      ->  y = normalize(x, w; rms, eps)     w optional, broadcast over rows

where y's x is the same view of the same buffer as s's, and r is read broadcast along the row.
"""

from kuma_build.compiler.ir.expr import In, Lit, Op
from kuma_build.compiler.ir.graph import Node, contiguous_strides
from kuma_build.compiler.ops import record
from kuma_build.compiler.passes.fuse_elementwise import only_reader, readers_of


def fuse_rms_norms(graph) -> None:
    readers = readers_of(graph)
    producer = {node.output.buffer: node for node in graph.nodes}
    gone = set()
    for k, node in enumerate(graph.nodes):
        found = _rms_norm(graph, node, readers, producer)
        if found:
            graph.nodes[k], removed = found
            gone.update(removed)
    graph.nodes = [node for node in graph.nodes if node not in gone]


def _rms_norm(graph, scale: Node, readers, producer):
    """(the normalize node, the nodes it replaces) when `scale` is y = x * r * w above, else None."""
    if not record(scale).expression or scale.output.dtype != "f32" or "epilogue" in scale.attrs:
        return None
    factors = _factors(scale.attrs["expr"])
    if factors is None or len(factors) not in (2, 3) or len(set(factors)) != len(factors):
        return None
    views = [scale.inputs[leaf.index] for leaf in factors]
    shape = scale.output.shape
    if any(tuple(v.shape) != tuple(shape) for v in views) or len(shape) < 2 or not isinstance(shape[-1], int):  # rows may be a dim's
        return None
    for r_at, r_view in enumerate(views):  # the factor read from rsqrt(m + eps)
        steps = _steps(graph, scale, r_view, readers, producer)
        if steps is None:
            continue
        root, mean, square, x, eps = steps
        rest = views[:r_at] + views[r_at + 1:]
        x_at = next((i for i, v in enumerate(rest) if _same(v, x)), None)
        if x_at is None:
            continue
        weight = rest[1 - x_at] if len(rest) == 2 else None
        if weight is not None and not _row_vector(weight):
            continue
        norm = Node("normalize", [x] + ([weight] if weight is not None else []), scale.output,
                    {"reduced": 1, "eps": eps, "has_weight": weight is not None, "has_bias": False, "rms": True}, scale.where)
        return norm, (root, mean, square)
    return None


def _steps(graph, scale, r_view, readers, producer):
    """(rsqrt node, mean node, square node, x, eps) when r_view is a row's rsqrt(mean(x * x) + eps)
    read broadcast along the row, each node's only reader the next."""
    root = producer.get(r_view.buffer)
    if root is None or not record(root).expression or not only_reader(scale, root, readers, graph) or not _along_rows(r_view):
        return None
    expr = root.attrs["expr"]
    if not (isinstance(expr, Op) and expr.op == "rsqrt" and isinstance(expr.args[0], Op) and expr.args[0].op == "add"):
        return None
    terms = expr.args[0].args
    eps = next((t.value for t in terms if isinstance(t, Lit)), None)
    leaf = next((t for t in terms if isinstance(t, In)), None)
    if eps is None or leaf is None or len(root.inputs) != 1:
        return None
    mean = producer.get(root.inputs[0].buffer)
    if (mean is None or not record(mean).row_mean(mean) or not only_reader(root, mean, readers, graph) or not root.inputs[0].is_contiguous()
            or tuple(mean.output.shape) != tuple(r_view.shape[:-1])):
        return None
    square = producer.get(mean.inputs[0].buffer)
    if square is None or not record(square).expression or not only_reader(mean, square, readers, graph) or not mean.inputs[0].is_contiguous():
        return None
    x = _squared(square)
    return (root, mean, square, x, float(eps)) if x is not None and tuple(x.shape) == tuple(r_view.shape) else None


def _squared(square: Node):
    """The view `square` squares elementwise (x * x or x ** 2), or None."""
    expr = square.attrs["expr"]
    if not isinstance(expr, Op):
        return None
    a, b = (expr.args + (None,))[:2]
    if expr.op == "mul" and isinstance(a, In) and isinstance(b, In) and _same(square.inputs[a.index], square.inputs[b.index]):
        return square.inputs[a.index]
    if expr.op == "pow" and isinstance(a, In) and isinstance(b, Lit) and b.value == 2:
        return square.inputs[a.index]
    return None


def _factors(expr) -> list | None:
    """The leaves of a product of input leaves (mul over mul), or None when it is anything else."""
    if isinstance(expr, In):
        return [expr]
    if isinstance(expr, Op) and expr.op == "mul":
        parts = [_factors(arg) for arg in expr.args]
        return None if None in parts else [leaf for part in parts for leaf in part]
    return None


def _same(a, b) -> bool:
    return a.buffer is b.buffer and tuple(a.shape) == tuple(b.shape) and tuple(a.strides) == tuple(b.strides) and a.offset == b.offset


def _along_rows(v) -> bool:
    """Whether v reads element i of its buffer for every element of row i (the last dim broadcast)."""
    return v.offset == 0 and v.strides[-1] == 0 and all(
        size == 1 or stride == want for size, stride, want in zip(v.shape[:-1], v.strides[:-1], contiguous_strides(v.shape[:-1])))


def _row_vector(v) -> bool:
    """Whether v is a constant of one value a row position, the same for every row (a norm's weight)."""
    return v.is_const and v.strides[-1] == 1 and all(stride == 0 or size == 1 for size, stride in zip(v.shape[:-1], v.strides[:-1]))
