"""Merge linear layers that read the same input into one wider product.

BERT's and ViT's attention computes its queries, keys and values with three
linear layers of the same input (768 -> 768 each at base size). At 128 rows
each makes few output tiles, so each is split along K (passes/split_k.py) and
needs a dispatch that sums its partials: six dispatches a layer. Their
weights side by side make one 768 -> 2304 product: two dispatches, and more
tiles per dispatch (on Dawn each dispatch costs about 5 us of host time,
docs/performance.md).

A group is the matmul nodes that read the same view of their input A (same
buffer, shape, strides, offset) with constant weights and bias views, the
same alpha and beta, and no fused epilogue (an epilogue would need its own
inputs merged too). The merged node takes the first one's place; every
reader of a member's result reads the matching columns of the merged result
through its own view's strides rewritten (an offset into the row, the row
stride widened), so the readers' kernels change only in their constants. A
group is left alone when a reader's view cannot be rewritten so (it crosses
rows of the member's result) or a member's result is a model output.
"""

import torch

from kuma_build.compiler.ir import views
from kuma_build.compiler.ir.graph import Buffer, Node, Value, const, fresh

# f16 builds store merged weights [K, N], each k's columns together, as f32 builds do: with Dawn's
# f16 toggle (subgroup matrices, H200, 14:47 UTC by the device's clock, docs/performance.md) GPU
# back to back BERT-512 3.632 -> 3.385 ms, BERT-128 1.215 -> 1.193, ViT 2.136 -> 2.033 (BERT-512's
# products 3161 -> 2918 us); False: each column's k together, as before
F16_COLUMNS = True


def merge_products(graph) -> None:
    if not graph.device.merge_products:
        return
    outputs = {v.buffer for v in graph.outputs.values()}
    groups: dict = {}
    for node in graph.nodes:
        if _mergeable(node, outputs):
            a = node.inputs[0]
            key = (id(a.buffer), a.shape, a.strides, a.offset, node.attrs["alpha"], node.attrs["beta"], node.operands)
            groups.setdefault(key, []).append(node)
    merged = {}
    for group in groups.values():
        if len(group) > 1:
            node = _merge(graph, group)
            if node is not None:
                merged.update({member: node for member in group})
    placed = set()
    nodes = []
    for node in graph.nodes:
        target = merged.get(node, node)
        if target not in placed:
            placed.add(target)
            nodes.append(target)
    graph.nodes = nodes


def _mergeable(node, outputs) -> bool:
    """A matmul of batch 1 (or a batch folded into its rows) with constant weights and bias."""
    if node.op != "matmul" or "epilogue" in node.attrs or "splits" in node.attrs or node.output.buffer in outputs:
        return False
    weight = node.inputs[1]
    batch = node.output.shape[0]
    if not weight.is_const or (batch > 1 and weight.strides[0] != 0):
        return False
    if node.operands == 3:
        bias = node.inputs[2]
        if not bias.is_const or (batch > 1 and bias.strides[0] != 0) or bias.strides[1] != 0:
            return False  # a bias per column only
    return node.operands in (2, 3)


def _merge(graph, group: list[Node]) -> Node | None:
    """The merged node of group, after rewriting the readers of its members' results; None when a
    reader's view cannot be rewritten (nothing is changed then)."""
    batch, rows = group[0].output.shape[:2]
    widths = [node.output.shape[2] for node in group]
    total = sum(widths)
    out = fresh((batch, rows, total), "f32")  # rows may be a dim (ir/sizes.py)
    rewrites = []  # (node, input index, new view)
    start = 0
    for member, width in zip(group, widths):
        old = member.output.buffer
        for node in graph.nodes:
            for k, v in enumerate(node.inputs):
                if v.buffer is old:
                    view = _columns(v, width, total, start, out.buffer)
                    if view is None:
                        return None
                    rewrites.append((node, k, view))
        start += width
    for node, k, view in rewrites:
        node.inputs[k] = view
    depth = group[0].inputs[1].shape[1]
    # the weights side by side, [K, N]. f32 builds store each k's columns together, as a single linear
    # layer's packed weight is: the tiled kernel's neighbouring threads then read neighbouring
    # columns (sliced K: as vec4s), where each column's k together made them read K apart: on the
    # H200 (Dawn, 12:17 UTC) BERT-128's merged 768 -> 2304 product took 52.7 us where GPT-2's of the
    # same shape, columns together, took 34.8. f16 builds too (F16_COLUMNS: the subgroup-matrix
    # variant loads row-major right matrices, as GPT-2's [K, N] weights; their widened program is
    # compiled as f32, graph.precision); int8 builds keep each column's k together, as they were measured with.
    weight = torch.cat([views.select(node.inputs[1], 0, 0).tensor() for node in group], dim=1)
    names = "+".join(node.inputs[1].buffer.name for node in group)
    columns = graph.precision == "f32" or (graph.precision == "f16" and F16_COLUMNS)
    stored = const(weight, names) if columns else views.transpose(const(weight.t(), names), 0, 1)
    inputs = [group[0].inputs[0], views.expand(views.unsqueeze(stored, 0), (batch, depth, total))]
    if group[0].operands == 3:
        bias = torch.cat([views.select(views.select(node.inputs[2], 0, 0), 0, 0).tensor() for node in group])
        inputs.append(views.expand(const(bias, names + ".bias"), (batch, rows, total)))
    return Node("matmul", inputs, out, {"alpha": group[0].attrs["alpha"], "beta": group[0].attrs["beta"]}, group[0].where)


def _columns(v: Value, width: int, total: int, start: int, buffer: Buffer) -> Value | None:
    """v, a view of a member's contiguous [..., width] result, as the same view of columns start ..
    start + width of the merged [..., total] result; None when v's dims mix rows and columns."""
    row, column = divmod(v.offset, width)
    strides, reach = [], column
    for size, stride in zip(v.shape, v.strides):
        if size == 1 or stride == 0:
            strides.append(stride)
        elif stride % width == 0:
            strides.append(stride // width * total)
        else:
            strides.append(stride)
            reach += (size - 1) * stride
    if reach >= width:
        return None  # a dim that walks within a row would leave it
    return Value(buffer, v.shape, tuple(strides), row * total + start + column)
