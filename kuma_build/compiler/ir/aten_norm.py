"""Normalisation ops.

Batch norm (inference) becomes a per-channel affine elementwise node with
constants folded at compile time; the fold_batchnorm pass then merges it into
the conv or linear before it when it can.
"""

import torch

from kuma_build.compiler.ir import views
from kuma_build.compiler.ir.graph import const
from kuma_build.compiler.ir.importer import Unsupported, aten


@aten("_native_batch_norm_legit_no_training.default")
def batch_norm(ctx, x, weight, bias, mean, var, momentum, eps):
    if not all(v is None or v.is_const for v in (weight, bias, mean, var)):
        raise Unsupported("batch norm statistics must be constants (call model.eval())")
    channels = x.shape[1]
    scale = torch.rsqrt(var.tensor() + eps)
    if weight is not None:
        scale = scale * weight.tensor()
    shift = -mean.tensor() * scale
    if bias is not None:
        shift = shift + bias.tensor()
    per_channel = (channels,) + (1,) * (len(x.shape) - 2)
    scale_v = views.expand(views.reshape(const(scale, "bn.scale"), per_channel), x.shape)
    shift_v = views.expand(views.reshape(const(shift, "bn.shift"), per_channel), x.shape)
    expr = ("add", "f32", ("mul", "f32", ("in", "f32", 0), ("in", "f32", 1)), ("in", "f32", 2))
    out = ctx.emit("elementwise", [x, scale_v, shift_v], x.shape, "f32", expr=expr, channel_affine=(scale, shift))
    empty = const(torch.zeros(0))
    return (out, empty, empty)
