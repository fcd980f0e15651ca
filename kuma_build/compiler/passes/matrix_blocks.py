"""Store the weights that tensor cores load in 16 x 16 blocks (an f16 build's "-f16" program only).

That program runs only where the adapter has shader-f16 and subgroup matrices (devices.F16_PROGRAM).
Its linear layers load their f16 weight's right matrices straight from storage
(kernels/gemm_matrix.py). Stored row-major, [K, N], a matrix's 16 rows are 32 bytes each, N * 2
bytes apart; stored in blocks, the same matrix is 512 contiguous bytes. On the H200 through Dawn that
took BERT-512's 48 products from 2,234 to 1,848 us back to back (docs/performance.md, 2026-12-02 10:04).

Rewrite: Buffer.blocked 0 -> N for a constant f16 weight whose every reader is a product taking it
as B, [K, N] row-major (k stride N, column stride 1, no offset, one batch), K and N whole blocks,
of a fixed row count over gemm.THIN (fewer: the thin kernel) and a K of at least
gemm_matrix.MIN_DEPTH (gemm_matrix.worthwhile: products that ship on tensor cores). Its bytes are written in blocks (precision.encode); the products' other
code (their shader-f16 code, which wgpu-py runs) reads element (k, n) at precision.block_position
(Bindings.load), a few shifts and masks more a load than row-major. The "-f16" program's weights
are then other bytes than the widened program's, so an f16 build's output holds these weights
twice; a browser fetches only its program's.
"""

from kuma_build.compiler.ir.sizes import Sym
from kuma_build.compiler.kernels import gemm_matrix
from kuma_build.compiler.kernels.gemm import THIN
from kuma_build.compiler.kernels.matmul import gemm_shape
from kuma_build.compiler.precision import BLOCK


def store_matrix_weights_blocked(graph) -> None:
    for buf, reads in graph.uses().items():
        if buf.kind != "const" or buf.storage != "f16" or not all(right_weight(n, k) for n, k in reads):
            continue
        rows = {node.inputs[k].shape[2] for node, k in reads}
        if len(rows) == 1:  # every reader's matrices are then whole blocks
            buf.blocked = rows.pop()


def right_weight(node, k: int) -> bool:
    """Whether input k of the node is the B of a product on tensor cores, [K, N] row-major and whole blocks."""
    if node.op != "matmul" or k != 1 or isinstance(node.output.shape[1], Sym) or gemm_shape(node)[1] <= THIN:
        return False
    view = node.inputs[1]
    batch, depth, cols = view.shape
    return (not view.is_dynamic and view.offset == 0 and (batch == 1 or view.strides[0] == 0) and view.strides[1:] == (cols, 1)
            and view.buffer.numel == depth * cols and depth >= gemm_matrix.MIN_DEPTH and depth % BLOCK == 0 and cols % BLOCK == 0)
