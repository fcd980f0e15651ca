"""Batched matmul out[b] = alpha * A[b] @ B[b] + beta * bias[b], then any fused epilogue, as a Gemm.

Loads go through each operand's strides, so transposed and broadcast operands
need no copy. When B and the bias are the same for every batch (a linear
layer applied to a batch of sequences), the batch folds into the rows: one
(batch * M) x N product tiles better than many small ones, and the output
layout is the same.
"""

from kuma_build.compiler.kernels import gemm as gemm_module, gemm_matrix
from kuma_build.compiler.kernels.elementwise import epilogue
from kuma_build.compiler.kernels.gemm import Gemm, Stored
from kuma_build.compiler.kernels.products import gemm_kernel, is_thin
from kuma_build.compiler.ir.sizes import wgsl as u32
from kuma_build.compiler.kernels.wgsl import Bindings, f32


def folds(node) -> bool:
    """Whether the batch folds into the rows: B and the bias are the same for every batch."""
    batch, b_view = node.output.shape[0], node.inputs[1]
    return batch != 1 and b_view.strides[0] == 0 and (node.operands < 3 or node.inputs[2].strides[0] == 0)


def gemm_shape(node) -> tuple[int, int, int, int]:
    """(batch, rows, cols, depth) of the node's product."""
    batch, m, n = node.output.shape
    k = node.inputs[0].shape[2]
    return (1, batch * m, n, k) if folds(node) else (batch, m, n, k)


def sliced(node, device) -> bool:
    """Whether the product can take sliced K (gemm.SLICED_GROUPS groups on gemm.SLICED_TILE, B's tile
    fetched as vec4s, as the sweep measured it): the "gpu" classes' linear layers of
    gemm.SLICED_MIN_ROWS to gemm.SLICED_ROWS rows, static sizes, B's columns neighbours in memory and
    aligned for vec4s (a packed linear weight, GPT-2's Conv1D one, a merged one; where
    B's k are neighbours the groups alone made the products slower on Dawn: docs/performance.md item 4).
    passes/split_k.py decides (f32 builds only) and marks the node's attrs["sliced"], which the
    kernel follows."""
    _, rows, cols, depth = gemm_shape(node)
    weight = node.inputs[1]
    return (gemm_module.sliced_shape(device, rows, cols) and isinstance(depth, int)
            and aligned4(weight) and weight.buffer.numel % 4 == 0 and weight.buffer.dtype == "f32")


def own_tile(node, device) -> bool:
    """Whether the product, in a "-f16" program, takes the subgroup-matrix products' tile and split
    (gemm_matrix.TILE): a linear layer (B a weight) of their shape. passes/split_k.py decides and
    marks the node's attrs["tile"], which the kernel follows."""
    _, rows, cols, depth = gemm_shape(node)
    return node.inputs[1].is_const and gemm_matrix.own_tile(device, rows, cols, depth)


def aligned4(v) -> bool:
    """Whether view v [batch, rows, last] of A or B lies in whole aligned vec4s along its last dim:
    static, unit last stride, a last dim and every other stride and the offset multiples of 4."""
    sizes = (*v.shape, *v.strides, v.offset)
    return (all(isinstance(x, int) for x in sizes) and v.strides[2] == 1 and v.shape[2] % 4 == 0 and v.offset % 4 == 0
            and all(stride % 4 == 0 for size, stride in zip(v.shape[:2], v.strides[:2]) if size > 1))


def vec4_operands(node, device, b: Bindings) -> tuple[bool, bool]:
    """Whether the tiled kernel reads A and B as vec4s along their last dim (gemm.VECTOR_LOADS, or a
    sliced product): static sizes, a tiled product whose tile side takes vec4s (gemm.vector_side), and each vec4
    whole and aligned (unit last stride, a last dim and every other stride and the offset multiples
    of 4). Only then is the binding declared so: its other reads take one element of a vec4."""
    shape = gemm_shape(node)
    on = node.attrs.get("sliced", False)
    if not (gemm_module.VECTOR_LOADS or on) or device.register_gemm or not all(isinstance(x, int) for x in shape):
        return False, False
    g = Gemm(*shape, None, None, None, splits=node.attrs.get("splits", 1), device=device, sliced=on, tile=node.attrs.get("tile"))
    if is_thin(g):
        return False, False
    tm, tn = gemm_module.choose_tile(g)

    def aligned(k: int) -> bool:
        return aligned4(node.inputs[k]) and b.can_load4(k)
    return gemm_module.vector_side(tm, g.step) and aligned(0), gemm_module.vector_side(tn, g.step) and aligned(1)


def word_row(node, k: int) -> int | None:
    """The rows of an operand whose neighbours the thin kernel reads by words when it is stored
    f16 (OpRecord.word_row): A's k when they are neighbours in memory (W @ x); B's columns when they
    are (x @ W), else its k (a linear layer's weight)."""
    view = node.inputs[k] if k < 2 else None
    if view is None or (k == 0 and view.strides[2] != 1):
        return None
    return view.shape[2] if view.strides[2] == 1 else view.shape[1]


def on_words(view, inner: int) -> bool:
    """Whether the view's neighbours along dim `inner` share stored words, each pair from an even
    index: unit stride there, and the offset and every other dim's stride even (those of size-1
    dims do not matter)."""
    evens = [x for d, (size, x) in enumerate(zip(view.shape, view.strides)) if d != inner and size != 1] + [view.offset]
    return view.strides[inner] == 1 and all(isinstance(x, int) and x % 2 == 0 for x in evens)


def lower(node, device):
    b = Bindings(node)
    a_view, b_view = node.inputs[0], node.inputs[1]
    m, n, k = node.output.shape[1], node.output.shape[2], a_view.shape[2]
    has_bias = node.operands == 3
    fold = folds(node)
    vec_a, vec_b = vec4_operands(node, device, b)
    for operand, vector in enumerate((vec_a, vec_b)):
        if vector:  # declared before any load is written (the epilogue's too)
            b.vec4_input(operand)

    def at(bi: str, r: str) -> list[str]:
        """The (batch, row) of A and the bias for GEMM row r of GEMM batch bi."""
        return [f"({r} / {u32(m)})", f"({r} % {u32(m)})"] if fold else [bi, r]

    writer, stored = epilogue(node, b, "value", "flat")

    def finish(total: str, bi: str, r: str, c: str):
        value = total if node.attrs["alpha"] == 1.0 else f"{f32(node.attrs['alpha'])} * {total}"
        if has_bias:
            bias = b.load(2, at(bi, r) + [c])
            value += f" + {bias}" if node.attrs["beta"] == 1.0 else f" + {f32(node.attrs['beta'])} * {bias}"
        return [f"let value = {value};", *writer.lines], stored

    # neighbouring columns of an f16 weight B share a word when every row starts on a word (even
    # strides and offset; odd rows are padded so, passes/weight_storage.py), or neighbouring k when
    # the columns are not neighbours (a linear weight, merged ones too: passes/merge_products.py)
    # but k are, as A's k (a weight on the left): the thin kernel then loads each word once
    # (gemm.py, pairs). A padded row's last word also holds its padding, read past the last
    # column or k, where the other operand or the output's bounds make it count for nothing
    inner = 2 if b_view.strides[2] == 1 or n == 1 else 1  # the dim of B's pairs: columns (as cols_contiguous says), else k
    pair_b = (lambda var, bi, kk, c: [f"{var} = {b.pair(1, [bi, kk, c])};"]) if on_words(b_view, inner) and b.pair(1, ["0u"] * 3) else None
    pair_a = (lambda var, bi, r, kk: [f"{var} = {b.pair(0, at(bi, r) + [kk])};"]) if on_words(a_view, 2) and b.pair(0, ["0u"] * 3) else None

    def weight_layout(k: int, wide: int) -> Stored | None:
        """Operand k (dims: batch, then `wide` and K in either order) as its f16 binding holds it;
        A only when the batch stays a batch (folded, its rows would span batches)."""
        view, array = node.inputs[k], b.f16_array(k)
        if array is None or (k == 0 and fold):
            return None
        batch = f" + {{}} * {view.strides[0]}u" if view.shape[0] != 1 and view.strides[0] else ""
        return Stored(array, lambda bi: f"{view.offset}u" + batch.format(bi), view.strides[wide], view.strides[3 - wide], view.buffer.blocked)

    gemm = Gemm(
        *gemm_shape(node),
        load_a=lambda var, bi, r, kk: [f"{var} = {b.load(0, at(bi, r) + [kk])};"],
        load_b=lambda var, bi, kk, c: [f"{var} = {b.load(1, [bi, kk, c])};"],
        load_a4=(lambda var, bi, r, kk: [f"{var} = {b.load4(0, at(bi, r) + [kk])};"]) if vec_a else None,
        load_b4=(lambda var, bi, kk, c: [f"{var} = {b.load4(1, [bi, kk, c])};"]) if vec_b else None,
        finish=finish,
        a_k_contiguous=a_view.strides[2] == 1 or k == 1,
        cols_contiguous=b_view.strides[2] == 1 or n == 1,
        load_a_pair=pair_a,
        load_b_pair=pair_b,
        splits=node.attrs.get("splits", 1),
        device=device,
        sliced=node.attrs.get("sliced", False),
        tile=node.attrs.get("tile"),
        stored_a=weight_layout(0, 1),
        stored_b=weight_layout(1, 2),
    )
    return gemm_kernel(b, "matmul", gemm, writer.functions())
