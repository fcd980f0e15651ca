"""The IR ops, one record each: everything the passes, the cost model, the weight storage and the
plan need to know about an op lives in its record, so a new op is one record here, one importer
handler (ir/aten_*.py) and one lowering (kernels/), and a pass never tests an op's name.

    lower          (node, device) -> Kernel: its WGSL (kernels/)
    flops          node -> an estimate of the arithmetic it does (cost.py, `kuma bench`)
    weight_dim     (node, k) -> the output-channel dim of input k when input k is a weight operand
                   that precision = "f16" / "int8" may store narrower, else None
    word_row       (node, k) -> the length of the rows along which its GPU kernels read input k, when
                   it is an f16 weight, by words of two neighbours (gemm.py's pairs, conv.py's filter
                   rows), else None: passes/weight_storage.py pads rows of odd length so that each
                   starts on a word
    expression     it computes attrs["expr"] (ir/expr.py) per element: fuse_elementwise may inline
                   it into a reader, fuse_epilogue may attach it to a producer
    epilogue       node -> whether it can apply a fused epilogue to its result before the one store
    strided_output it writes through its output view's strides, so layout fusion may hand it a
                   permuted copy's layout
    product        (node, device) -> (batch, rows, cols, depth) when the GEMM kernels compute it
                   (split_k may split its K), else None
    sliced         (node, device) -> whether that product takes sliced K on its own tile
                   (kernels/gemm.py: SLICED_*), which split_k's choice of split must know
    own_tile       (node, device) -> whether, in a "-f16" program, it takes the subgroup-matrix
                   products' tile and split (kernels/gemm_matrix.py: TILE)
    key_splits     (node, device) -> (slices, keys per slice) when passes/split_keys.py should split
                   its keys over workgroups (decode attention), else None
    bias           node -> its bias viewed in the output's shape and the bias's factor, or None
    fold_sums      (node, k, device) -> how many times its kernel reads each element of input k (0:
                   it cannot here); set when it can read a split-K product's partial sums in place
                   (kernels/elementwise.py: fold_sums), so split_k may drop the split_sum node before
                   it: a sum of at most the device's fold_splits_once slices when every reader reads
                   once, else fold_splits
    stores_input   its kernel can also store its input 0, a split-K sum it reads in place, after its
                   own output (attrs["input_copy"]: where), so that split_k may drop that sum's
                   split_sum node when other kernels read the sum too (they read the copy)
    reads_any_layout  its kernel reads its inputs a row at a time (attention's keys and values along
                   the head dim into registers or workgroup memory, a gather's table rows by id), so
                   a strided view reads about as fast as a contiguous copy: elide_copies points it
                   at a copy's source, and passes/constants.py at the copy of a weight another op
                   reads rather than store the weight twice (a tied embedding and output head)
    fold_affine    (node, x, scale, shift) -> whether x * scale + shift, a per-channel affine (along
                   dim 1 of x, a view of node's result), was folded into node's weights
                   (fold_batchnorm, which runs before any fusion), or None when it never can be
    dynamic        node -> whether its lowering takes sizes that a dim sets (Syms, ir/sizes.py);
                   check_dynamic refuses any other node whose sizes depend on a dim
    channel_rows   (node, device) -> whether its result can be computed one output pixel's channels
                   at a time inside the norm over those channels that reads it (a depthwise
                   convolution, kernels/depthwise_norm.py): passes/fuse_channel_norm.py
    channel_norm   node -> whether it normalizes its first input along the last dim alone, reading
                   its weight and bias (and epilogue) in the output's shape: the norm that pass
                   may fuse a channel_rows producer into
    computes_pieces its first operands inputs are pieces of its output, each of which it may compute
                   in place from an elementwise expression (attrs["pieces"]: fuse_elementwise)
    as_pieces      node -> its result as (dim, [(extent, expression)]): pieces along dim, each an
                   expression (ir/expr.py) over its inputs read at the piece's own coordinates
                   (kernels/concat.py: pieces_at), when every element is computed so, else None
    computes_input (node, device) -> whether its kernel may compute its input 0 in place, at each
                   element it reads, from the node that writes it when that node's as_pieces says
                   how, the writer's inputs appended to its own (attrs["computed"]: fuse_elementwise;
                   a decode step's rotated key written into the cache, its rotated queries)
    row_mean       node -> whether its result is the mean of each row of its input (the last dim):
                   passes/fuse_rms_norm.py folds an RMSNorm written out in PyTorch around it

Every op reads its inputs through their views' strides (kernels/wgsl.py: Bindings.load), so
views of any layout cost nothing, and writes one contiguous buffer unless strided_output.
"""

from dataclasses import dataclass
from math import prod
from typing import Callable

import torch

from kuma_build.devices import DeviceClass
from kuma_build.errors import KumaError
from kuma_build.compiler.ir import views
from kuma_build.compiler.ir.graph import Node, Value, const
from kuma_build.compiler.ir.sizes import max_value
from kuma_build.compiler.kernels import attention_decode, concat, conv, depthwise_norm, elementwise, gather, matmul, pool, resize, rows, scan, scatter, split_sum
from kuma_build.compiler.kernels.wgsl import Kernel, node_dims


def per_element(node: Node) -> int:
    """One operation per element of the largest operand: a rough figure for what is not a product."""
    return max(max_value(v.numel) for v in [node.output, *node.inputs])


@dataclass(frozen=True)
class OpRecord:
    lower: Callable[[Node, DeviceClass], Kernel]
    flops: Callable[[Node], int] = per_element
    weight_dim: Callable[[Node, int], int | None] = lambda node, k: None
    word_row: Callable[[Node, int], int | None] = lambda node, k: None
    expression: bool = False
    epilogue: Callable[[Node], bool] = lambda node: False
    strided_output: bool = False
    product: Callable[[Node, DeviceClass], tuple[int, int, int, int] | None] = lambda node, device: None
    sliced: Callable[[Node, DeviceClass], bool] = lambda node, device: False
    own_tile: Callable[[Node, DeviceClass], bool] = lambda node, device: False
    key_splits: Callable[[Node, DeviceClass], tuple[int, int] | None] = lambda node, device: None
    bias: Callable[[Node], tuple[Value, float] | None] = lambda node: None
    fold_sums: Callable[[Node, int, DeviceClass], int] | None = None
    stores_input: bool = False
    reads_any_layout: bool = False
    fold_affine: Callable[[Node, Value, torch.Tensor, torch.Tensor], bool] | None = None
    dynamic: Callable[[Node], bool] = lambda node: False
    channel_rows: Callable[[Node, DeviceClass], bool] = lambda node, device: False
    channel_norm: Callable[[Node], bool] = lambda node: False
    row_mean: Callable[[Node], bool] = lambda node: False
    computes_pieces: bool = False
    as_pieces: Callable[[Node], tuple[int, list] | None] = lambda node: None
    computes_input: Callable[[Node, DeviceClass], bool] | None = None
    slices: Callable[[Node], tuple[tuple[int, ...], tuple[int, ...]]] = lambda node: ((), ())


# --- matmul: out[b] = alpha * A[b] @ B[b] + beta * bias[b] (ir/aten_linalg.py) ------------------

def matmul_flops(node: Node) -> int:
    batch, m, n = node.output.shape
    return 2 * batch * m * n * node.inputs[0].shape[2]


def matmul_bias(node: Node) -> tuple[Value, float] | None:
    return (node.inputs[2], node.attrs["beta"]) if node.operands >= 3 else None  # already a view in the output's shape


def fold_into_linear(node: Node, x: Value, scale: torch.Tensor, shift: torch.Tensor) -> bool:
    """A 2-D linear layer's columns are its channels: scale them, and rescale and shift the bias."""
    if len(x.shape) != 2 or node.output.shape[0] != 1 or node.attrs["alpha"] != 1.0 or node.attrs["beta"] != 1.0:
        return False
    if len(node.inputs) > 2 and node.inputs[2].strides[1] != 0:
        return False  # a bias that differs by row is not per channel
    weight = node.inputs[1].tensor()  # [1, K, N]
    bias = node.inputs[2].tensor()[0, 0] if len(node.inputs) > 2 else torch.zeros(weight.shape[2])
    bias = _refold(node, weight * scale.reshape(1, 1, -1), bias * scale + shift)
    node.inputs[2:] = [views.expand(bias, node.output.shape)]
    return True


# --- conv2d: plain or transposed, weight [Cout, Cin/g, kh, kw] (ir/aten_conv.py) --------------

def conv_flops(node: Node) -> int:
    per_element = 2 * prod(node.inputs[1].shape[1:])  # weight [Cout, Cin/groups, kh, kw] ([Cin, Cout/groups, ...] transposed)
    return per_element * (node.inputs[0].numel if node.attrs["transposed"] else node.output.numel)


def conv_weight_dim(node: Node, k: int) -> int | None:
    if k != 1:
        return None
    return 1 if node.attrs["transposed"] else 0  # [Cout, Cin/g, ...] or [Cin, Cout/g, ...]


def conv_bias(node: Node) -> tuple[Value, float] | None:
    if node.operands < 3:
        return None
    bias, out = node.inputs[2], node.output
    strides = tuple(bias.strides[0] if d == 1 else 0 for d in range(len(out.shape)))  # [Cout], per output channel
    return Value(bias.buffer, out.shape, strides, bias.offset), 1.0


def fold_into_conv(node: Node, x: Value, scale: torch.Tensor, shift: torch.Tensor) -> bool:
    """A plain convolution's output channels are its weight's first dim."""
    if node.attrs["transposed"] or x.shape != node.output.shape:
        return False
    weight = node.inputs[1].tensor()
    bias = node.inputs[2].tensor() if len(node.inputs) > 2 else torch.zeros(weight.shape[0])
    node.inputs[2:] = [_refold(node, weight * scale.reshape(-1, 1, 1, 1), bias * scale + shift)]
    return True


def _refold(node: Node, weight: torch.Tensor, bias: torch.Tensor) -> Value:
    """Give node its new constant weight; the new bias constant, for the caller to view."""
    name = node.inputs[1].buffer.name
    node.inputs[1] = const(weight, name)
    return const(bias, name.rsplit(".", 1)[0] + ".bias")


# --- the rest ---

ANY = lambda node: True  # noqa: E731  (the lowering takes sizes a dim sets)


def static_head_dims(node: Node) -> bool:
    """Attention keeps its query row and value columns in registers: only their lengths must be numbers."""
    return all(isinstance(v.shape[-1], int) for v in [*node.inputs[:3], node.output])

# ------------------------------------------------------------------------------------

def attention_flops(node: Node) -> int:
    keys = node.inputs[1].shape[-2]
    shape = node.attrs.get("rows_shape", node.output.shape)  # its output before passes/split_keys.py
    return 2 * prod(shape[:-1]) * keys * (node.inputs[0].shape[-1] + node.output.shape[-1])


def slices_alike(node: Node, reduced: int = 0) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """An op whose inputs all have its output's shape and which computes each element from theirs at
    the same place (reducing its last `reduced` dims): every other dim slices with all its inputs."""
    rank = len(node.output.shape)
    if "sums" in node.attrs or any(tuple(v.shape) != tuple(node.output.shape) for v in node.inputs):
        return (), ()
    return tuple(range(-rank, -reduced)), tuple(range(len(node.inputs)))


def attention_slices(node: Node) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Query rows slice with the queries and the mask, unless causal (a row's keys are its position's)."""
    if node.attrs["causal"] or "rows_shape" in node.attrs or (len(node.inputs) > 3 and node.inputs[3].shape[-2] != node.output.shape[-2]):
        return (), ()
    return (-2,), (0, 3)


def elementwise_pieces(node: Node) -> tuple[int, list] | None:
    """An elementwise node's result is one piece, its expression (not once it reads a folded sum)."""
    return None if "sums" in node.attrs else (0, [(node.output.shape[0] if node.output.shape else 1, node.attrs["expr"])])


def pool_flops(node: Node) -> int:
    return node.output.numel * prod(node.attrs.get("kernel", (1,)))


OPS: dict[str, OpRecord] = {
    "elementwise": OpRecord(elementwise.lower, expression=True, strided_output=True, dynamic=ANY, as_pieces=elementwise_pieces, slices=slices_alike,
                            fold_sums=lambda node, k, device: elementwise.fold_reads(node, k) if split_sum.FOLD_PER_ELEMENT else 0),
    "matmul": OpRecord(matmul.lower, matmul_flops, weight_dim=lambda node, k: {0: 1, 1: 2}.get(k),  # A [b, M, K]: rows; B [b, K, N]: columns
                       word_row=matmul.word_row,
                       epilogue=lambda node: True, product=lambda node, device: matmul.gemm_shape(node), sliced=matmul.sliced, own_tile=matmul.own_tile,
                       bias=matmul_bias,
                       fold_affine=fold_into_linear, dynamic=ANY,
                       slices=lambda node: ((-2,), (0, 2)) if len(node.inputs) <= 3 else ((), ())),  # rows: A's and the bias's
    "conv2d": OpRecord(conv.lower, conv_flops, weight_dim=conv_weight_dim, word_row=conv.word_row, epilogue=lambda node: not node.attrs["transposed"],
                       product=lambda node, device: conv.gemm_shape(node) if conv.is_implicit_gemm(node, device) else None,
                       bias=conv_bias, fold_affine=fold_into_conv, channel_rows=depthwise_norm.fuses),
    "normalize": OpRecord(rows.lower_normalize, epilogue=lambda node: True,
                          fold_sums=lambda node, k, device: rows.row_reads(node, node.attrs["reduced"], device), stores_input=True,
                          dynamic=ANY, channel_norm=lambda node: node.attrs["reduced"] == 1 and not node.attrs.get("rms"),
                          slices=lambda node: slices_alike(node, node.attrs["reduced"])),
    # a depthwise convolution and the norm over its channels after it (passes/fuse_channel_norm.py)
    "depthwise_norm": OpRecord(depthwise_norm.lower, lambda node: conv_flops(node) + 8 * node.output.numel,
                               weight_dim=lambda node, k: 0 if k == 1 else None, word_row=conv.word_row, epilogue=lambda node: True),
    "reduce": OpRecord(rows.lower_reduce, fold_sums=lambda node, k, device: rows.row_reads(node, len(node.inputs[0].shape) - len(node.output.shape), device),
                       dynamic=ANY, row_mean=lambda node: node.attrs["reduction"] == "mean" and len(node.inputs[0].shape) - len(node.output.shape) == 1),
    "softmax": OpRecord(rows.lower_softmax, fold_sums=lambda node, k, device: rows.row_reads(node, 1, device), dynamic=ANY),
    "attention": OpRecord(attention_decode.lower_attention, attention_flops, strided_output=True, reads_any_layout=True,
                          key_splits=attention_decode.split_choice, dynamic=static_head_dims,
                          computes_input=attention_decode.applies, slices=attention_slices),
    # the slices of a decode attention whose keys passes/split_keys.py split over workgroups
    "attention_combine": OpRecord(attention_decode.lower_combine, strided_output=True),
    "pool2d": OpRecord(pool.lower, pool_flops),
    "resize": OpRecord(resize.lower),
    "concat": OpRecord(concat.lower, fold_sums=lambda node, k, device: elementwise.fold_reads(node, k) if split_sum.FOLD_PER_ELEMENT else 0,
                       dynamic=ANY, computes_pieces=True, as_pieces=lambda node: None if "sums" in node.attrs else concat.pieces(node)),
    "gather": OpRecord(gather.lower, weight_dim=lambda node, k: node.attrs["dim"] if k == 0 else None,  # an embedding table's rows
                       reads_any_layout=True, dynamic=ANY),
    "take": OpRecord(gather.lower_take, dynamic=ANY),
    "pad": OpRecord(gather.lower_pad, dynamic=ANY),
    "split_sum": OpRecord(split_sum.lower, fold_sums=lambda node, k, device: elementwise.fold_reads(node, k), dynamic=ANY),
    "index_put": OpRecord(scatter.lower_index_put, dynamic=ANY),
    "cumsum": OpRecord(scan.lower_cumsum, dynamic=ANY),
    "topk": OpRecord(scan.lower_topk, flops=lambda node: node.inputs[0].numel * node.output.shape[-1],
                     dynamic=lambda node: isinstance(node.output.shape[-1], int)),  # k passes, unrolled
    # writes its output view in place (a state buffer, passes/state.py): the updated slots only
    "scatter": OpRecord(scatter.lower_scatter, flops=lambda node: node.inputs[0].numel, dynamic=ANY, computes_input=lambda node, device: True),
    # torch.arange and fills whose shape a dim sets (constant ones are folded at build time)
    "arange": OpRecord(elementwise.lower_arange, dynamic=ANY),
}


def record(node: Node) -> OpRecord:
    return OPS[node.op]


def check_dynamic(graph) -> None:
    """Refuse, before any kernel is written, a node whose sizes depend on a dim when its lowering
    cannot take them yet: the error names the op, the model's line and the dims."""
    for node in graph.nodes:
        dims = node_dims(node)
        if dims and not record(node).dynamic(node):
            file, _, line = node.where.rpartition(":")
            names = ", ".join(sorted(d.name for d in dims))
            raise KumaError(f"the {node.op} op{f' at {node.where}' if node.where else ''} is not supported with a dynamic "
                            f"dimension yet: its sizes depend on the dim {names}. Make {names} static (a number in the "
                            "input shapes in kuma.toml), or compute this part with supported ops (docs/ops.md).",
                            file or None, int(line) if line.isdigit() else None)
