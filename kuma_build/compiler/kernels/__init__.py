"""Kernels: one small lowering per IR op family, each returning a Kernel (WGSL + launch)."""

from kuma_build.compiler.kernels import attention, concat, conv, elementwise, gather, matmul, pool, resize, rows
from kuma_build.compiler.kernels.wgsl import Kernel

LOWERINGS = {
    "elementwise": elementwise.lower,
    "matmul": matmul.lower,
    "concat": concat.lower,
    "conv2d": conv.lower,
    "pool2d": pool.lower,
    "resize": resize.lower,
    "reduce": rows.lower_reduce,
    "softmax": rows.lower_softmax,
    "normalize": rows.lower_normalize,
    "gather": gather.lower,
    "attention": attention.lower,
}


def lower(node) -> Kernel:
    return LOWERINGS[node.op](node)
