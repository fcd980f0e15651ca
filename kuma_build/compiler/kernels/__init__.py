"""Kernels: one small lowering per IR op family, each a function (node, device class) -> Kernel
(WGSL + launch). compiler/ops.py maps each IR op to its lowering; wgsl.py holds what they share."""

import hashlib

from kuma_build.compiler.ir.expr import Acc, In, Lit, Op
from kuma_build.compiler.kernels.wgsl import binding_buffers
from kuma_build.compiler.precision import storage_key


def spec_key(node, device) -> str:
    """A hash of everything a kernel's code depends on: op, attributes, views, binding pattern,
    weight storage (the model's precision) and the device class. The kernel cache adds the
    compiler's own version to it (an edited generator must not reuse old code)."""
    buffers = binding_buffers(node)
    views = [(v.shape, v.strides, v.offset, v.dtype, buffers.index(v.buffer) if v.buffer in buffers else -1, storage_key(v.buffer), v.buffer.page)
             for v in node.inputs]  # -1: an input the kernel computes (wgsl.computed_inputs)
    attrs = {k: v for k, v in sorted(node.attrs.items()) if _is_plain(v)}
    spec = (node.op, attrs, views, node.output.shape, node.output.strides, node.output.dtype, device)
    return hashlib.sha256(repr(spec).encode()).hexdigest()


def _is_plain(value) -> bool:
    """Attributes that shape the code; tensors kept for passes (e.g. batch-norm scales) are not."""
    if isinstance(value, (tuple, list)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):  # a concat's pieces, an input computed in place: expressions by key
        return all(_is_plain(k) and _is_plain(v) for k, v in value.items())
    return value is None or isinstance(value, (bool, int, float, str, In, Acc, Lit, Op))
