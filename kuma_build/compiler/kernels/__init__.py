"""Kernels: one small lowering per IR op family, each returning a Kernel (WGSL + launch)."""

import hashlib

from kuma_build.compiler.kernels import attention, concat, conv, device, elementwise, gather, matmul, pool, resize, rows, split_sum

from kuma_build.cache.keys import compiler_hash
from kuma_build.compiler.kernels.wgsl import Kernel, binding_buffers
from kuma_build.compiler.precision import storage_key

# what kernels may assume of the device; part of every kernel's cache key
TARGET_PROFILE = "webgpu-core:f32:wg256:storage10"

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
    "pad": gather.lower_pad,
    "attention": attention.lower,
    "split_sum": split_sum.lower,
}


def lower(node) -> Kernel:
    return LOWERINGS[node.op](node)


def spec_key(node) -> str:
    """A hash of everything a kernel's code depends on: op, attributes, views, binding pattern,
    weight storage (the model's precision), target."""
    buffers = binding_buffers(node)
    views = [(v.shape, v.strides, v.offset, v.dtype, buffers.index(v.buffer), storage_key(v.buffer)) for v in node.inputs]
    attrs = {k: v for k, v in sorted(node.attrs.items()) if _is_plain(v)}
    # the compiler's own source is part of the key: an edited generator must not reuse old code
    spec = (node.op, attrs, views, node.output.shape, node.output.strides, node.output.dtype, TARGET_PROFILE,
            device.DEVICE["name"], compiler_hash())
    return hashlib.sha256(repr(spec).encode()).hexdigest()


def lower_cached(node, store) -> tuple[Kernel, bool]:
    """The node's kernel, from the cache `store` when it has it; and whether it did."""
    key = spec_key(node)
    cached = store.read_kernel(key) if store else None
    if cached:
        return Kernel(cached["name"], cached["code"], tuple(cached["workgroups"]), binding_buffers(node), cached.get("code_f16")), True
    kernel = lower(node)
    if store:
        store.write_kernel(key, {"name": kernel.name, "code": kernel.code, "workgroups": list(kernel.workgroups),
                                 "code_f16": kernel.code_f16})
    return kernel, False


def _is_plain(value) -> bool:
    """Attributes that shape the code; tensors kept for passes (e.g. batch-norm scales) are not."""
    if isinstance(value, (tuple, list)):
        return all(_is_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))
