"""Split the K loop of products too small to fill the device (split-K).

A late convolution at batch 1 (ResNet's 512 x 7 x 7 outputs over a K of
4608) makes only a handful of output tiles: most of a GPU would idle while
each tile walks all of K. When the tile cost model says so
(kernels/gemm.py: choose_split), the product's node instead writes S
partial sums, one per slice of K, into a temporary S times its size, and a
new split_sum node (kernels/split_sum.py) adds them up and applies what the
product would have applied after the sum: the bias and the fused epilogue
(activation, residual). That node writes the original output buffer, so the rest of the
graph does not change.

Each such sum is one more dispatch (on Dawn about 5 us of host time,
docs/performance.md). Three ways take it away, tried in this order (but
see the last: first where another split sum reads the sum):

- fold: when every kernel reading its result can read the partial sums in
  place instead (a norm, softmax, a reduction, an elementwise or concat
  kernel, another split sum: their records' fold_sums say how many times they
  read each element), the sum has at most device.fold_splits_once slices
  where each reads an element once (device.fold_splits where one reads it
  more often)
  and its epilogue needs no helper functions, the split_sum node goes: its
  readers read the partials and its epilogue's inputs (kernels/elementwise.py:
  fold_sums). BERT's attention output and FFN output, their biases and
  residuals read so by the layer norms after them (rows of 768 in registers,
  read once); ConvNeXt's layer-scaled FFN output by the residual add that
  reads it through a permute (channels last to first; its threads then go
  in the sum's order, kernels/elementwise.py: thread_order), ViT's patches by the
  concat after the class token, nn.TransformerEncoderLayer's queries, keys and
  values by the copy that lays them out for the attention, ResNet's last
  convolution by the global average pool.
- two levels: a split sum that other sums were folded into (a residual
  stream's, holding the sum before it as its residual where no norm could
  store that one) folds the same way when none of its readers is a split sum
  (that would make three levels, and a residual stream would add up ever more
  levels), counting its slices and theirs.
- the norm stores it: when the first kernel reading the sum is a norm (its
  record's stores_input) that may fold it, and later kernels read it too,
  the norm reads the partials in place and also stores the sum after its
  own output, where the later readers read it (GPT-2's and ViT's residual
  stream: each of a layer's norms stores it for the residual add after the
  next product). This reads fewer bytes than folding into every reader: the
  stream's sum would be added up again by each of them, and by each later
  sum that reads it as its residual. So it is tried first where a split sum
  reads the sum (split_sum.STORE_BEFORE_NESTING): folding first nested the
  attention output's sum in the feed-forward's (GPT-2's 12 slices in its 16,
  or 24 in f16, and then over fold_splits_once: a dispatch of its own). On
  the H200 (Dawn, 2026-12-02 14:23-14:29 UTC, docs/performance.md) GPU back
  to back GPT-2 1.283 -> 1.262-1.273 ms, ViT-B/16 1.949 -> 1.918; f16 GPT-2
  0.948 -> 0.916-0.919 (123 -> 111 dispatches), ViT-B/16 1.291 -> 1.225.

The folds into elementwise and concat readers, the second level, the
norm's copy and its priority are behind switches of kernels/split_sum.py for
an A/B on the device (FOLD_PER_ELEMENT, FOLD_TWO_LEVELS, NORM_STORES_SUM,
STORE_BEFORE_NESTING).
"""

from kuma_build.compiler.ir.expr import Acc, In, Lit, Op, remap
from kuma_build.compiler.ir.graph import Buffer, Node, Value
from kuma_build.compiler.kernels import gemm, gemm_matrix, split_sum
from kuma_build.compiler.kernels.elementwise import helpers_of
from kuma_build.compiler.ops import record
from kuma_build.compiler.passes.fuse_elementwise import input_buffers, readers_of


def split_k(graph) -> None:
    nodes, sums = [], []
    for node in graph.nodes:
        nodes.append(node)
        shape = record(node).product(node, graph.device)
        # sliced K (kernels/gemm.py) only in f32 builds (f16 builds' widened programs are compiled as
        # those: compiler/__init__.py, compile_for): narrower weights keep the cost model's tiles, or
        # the subgroup-matrix kernel's (below), whose variants share the grid; the kernels read the
        # choice from the attribute
        sliced = bool(shape) and graph.precision == "f32" and record(node).sliced(node, graph.device)
        if sliced:
            node.attrs["sliced"] = True
        # the "-f16" program's linear layers that run on subgroup matrices take that kernel's tile and split
        matrix = bool(shape) and graph.precision == "f16" and record(node).own_tile(node, graph.device)
        if matrix:
            node.attrs["tile"] = gemm_matrix.TILE
            splits = gemm_matrix.split(graph.device, *shape)
        else:  # by attribute: bench/gpu/gemm_sweep.py forces it
            splits = gemm.choose_split(graph.device, *shape, sliced=sliced) if shape else 1
        if splits > 1:
            sums.append(_split(node, splits))
            nodes.append(sums[-1])
    graph.nodes = nodes
    order = {node: step for step, node in enumerate(nodes)}
    gone = set()
    for node in sums:  # in graph order: a sum's readers come after it
        users = sorted(readers_of(graph).get(node.output.buffer, ()), key=order.get)
        ways = [lambda: _fold(graph, node, users, sums), lambda: _store_in_norm(graph, node, users)]
        if split_sum.STORE_BEFORE_NESTING and any(user in sums for user in users):
            ways.reverse()  # folding would nest this sum in that one
        if _private(graph, node) and users and any(way() for way in ways):
            gone.add(node)
    graph.nodes = [node for node in graph.nodes if node not in gone]


def _private(graph, node) -> bool:
    """Whether only the graph's kernels read split_sum node's result and its epilogue needs no helper
    functions (which the readers would repeat), so that readers may compute the sum themselves."""
    buf = node.output.buffer
    return buf.kind == "temp" and not any(v.buffer is buf for v in graph.outputs.values()) and not helpers_of(node.attrs["epilogue"])


def _reads(user, buf, device) -> int:
    """How many times user's kernel reads each element of buf (its record's fold_sums); 0 when it
    cannot read a sum in place there."""
    counts = [record(user).fold_sums(user, k, device) if record(user).fold_sums else 0
              for k, v in enumerate(user.inputs) if v.buffer is buf]
    return 0 if 0 in counts else max(counts)


def _slices_allowed(device, reads: int) -> int:
    return device.fold_splits_once if reads == 1 else device.fold_splits


def _fold(graph, node, users, sums) -> bool:
    """Make the readers of split_sum node's result read its partial sums in place, when they all can.
    A sum that other sums were folded into folds only into kernels that are not split sums themselves
    (two levels at most: each level adds its slices to every read)."""
    out = node.output
    reads = [_reads(user, out.buffer, graph.device) for user in users]
    nested = [splits for _, splits, *_ in node.attrs.get("sums", ())]
    if nested and (not split_sum.FOLD_TWO_LEVELS or any(user in sums for user in users)):
        return False
    if 0 in reads or node.attrs["splits"] + sum(nested) > _slices_allowed(graph.device, max(reads)):
        return False
    if not all(_fits(graph, user, node) for user in users):
        return False
    for user in users:
        _read_in_place(user, node)
    return True


def _store_in_norm(graph, node, users) -> bool:
    """Make the first reader of node's result, a norm, read its partial sums in place and store the sum
    after its own output; the other readers read that copy (one dispatch, the sum written once)."""
    out, norm, others = node.output, users[0], users[1:]
    slots = [k for k, v in enumerate(norm.inputs) if v.buffer is out.buffer]
    kept = norm.output.buffer
    if (not split_sum.NORM_STORES_SUM or not others or not record(norm).stores_input or slots != [0] or not _covers(norm.inputs[0])
            or kept.kind != "temp" or any(v.buffer is kept for v in graph.outputs.values()) or kept.dynamic is not None):
        return False
    reads = _reads(norm, out.buffer, graph.device)
    slices = node.attrs["splits"] + sum(splits for _, splits, *_ in node.attrs.get("sums", ()))  # a sum folded into this one is added too
    if not reads or slices > _slices_allowed(graph.device, reads) or not _fits(graph, norm, node):
        return False
    _read_in_place(norm, node)
    norm.attrs["input_copy"] = start = kept.numel
    kept.numel += out.numel
    for user in others:
        user.inputs = [Value(kept, v.shape, v.strides, v.offset + start) if v.buffer is out.buffer else v for v in user.inputs]
    return True


def _covers(view: Value) -> bool:
    """Whether a view reads each element of its whole buffer exactly once (a permutation of it)."""
    if view.offset != 0 or view.numel != view.buffer.count:
        return False
    step = 1
    for stride, size in sorted((stride, size) for size, stride in zip(view.shape, view.strides) if size != 1):
        if stride != step:
            return False
        step *= size
    return True


def _fits(graph, user, node) -> bool:
    """Whether user still binds few enough buffers when it reads node's inputs instead of its result."""
    buffers = {v.buffer for v in user.inputs if v.buffer is not node.output.buffer} | {v.buffer for v in node.inputs}
    return sum(buf.pages for buf in buffers) <= input_buffers(graph)


def _read_in_place(user, node) -> None:
    """Point user's reads of split_sum node's result at its partial sums, with the sum's other inputs
    appended and attrs["sums"] saying how to finish them (kernels/elementwise.py: fold_sums); a sum
    folded into node before comes along as one more entry."""
    out, partials = node.output, node.inputs[0]
    user.attrs.setdefault("operands", user.operands)
    for k, v in enumerate(list(user.inputs)):
        if v.buffer is out.buffer:
            base = len(user.inputs) - 1  # node's input i (i >= 1) is appended as base + i
            user.inputs += node.inputs[1:]
            moved = lambda leaf, base=base: leaf if isinstance(leaf, Acc) else In(leaf.dtype, base + leaf.index)  # noqa: E731
            user.inputs[k] = Value(partials.buffer, v.shape, v.strides, v.offset)
            own = (k, node.attrs["splits"], remap(node.attrs["epilogue"], moved), out.shape)
            nested = [(base + j, splits, remap(expr, moved), shape) for j, splits, expr, shape in node.attrs.get("sums", ())]
            user.attrs["sums"] = (*user.attrs.get("sums", ()), own, *nested)


def _split(node, splits: int) -> Node:
    """Make node write `splits` partial sums; return the split_sum node that finishes them."""
    out, own = node.output, node.operands
    partials = Buffer(out.numel * splits, "f32", "temp")
    inputs = [Value(partials, (splits, *out.shape), (out.numel, *out.strides))]
    total = Acc()
    bias = record(node).bias(node)
    if bias is not None:
        inputs.append(bias[0])
        scaled = In("f32", 1) if bias[1] == 1.0 else Op("mul", "f32", (Lit("f32", bias[1]), In("f32", 1)))
        total = Op("add", "f32", (total, scaled))
    expr = total
    if "epilogue" in node.attrs:  # its other inputs follow ours, in order
        base = len(inputs)
        inputs += node.inputs[own:]
        expr = remap(node.attrs.pop("epilogue"), lambda leaf: total if isinstance(leaf, Acc) else In(leaf.dtype, base + leaf.index - own))
    node.inputs = node.inputs[:2]
    node.attrs.pop("operands", None)
    node.attrs["splits"] = splits
    node.output = Value(partials, out.shape, out.strides)
    return Node("split_sum", inputs, out, {"splits": splits, "epilogue": expr, "operands": 1}, node.where)
