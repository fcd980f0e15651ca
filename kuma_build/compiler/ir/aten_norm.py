"""Normalisation ops.

Batch norm (inference) becomes a per-channel affine elementwise node with
constants folded at compile time; the fold_batchnorm pass then merges it into
the conv or linear before it when it can.

Layer, group and instance norm compute statistics at run time: one
"normalize" node over rows, the input viewed so each normalised group is the
trailing dims. Weight and bias are broadcast views of the same shape, so the
kernel reads them at the element's own index whatever the channel layout.
"""

import torch

from kuma_build.compiler.ir import views
from kuma_build.compiler.ir.expr import In, Op
from kuma_build.compiler.ir.graph import const
from kuma_build.compiler.ir.registry import Unsupported, aten


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
    layer = mean.buffer.name.rsplit(".", 1)[0]
    scale_v = views.expand(views.reshape(const(scale, f"{layer}.scale"), per_channel), x.shape)
    shift_v = views.expand(views.reshape(const(shift, f"{layer}.shift"), per_channel), x.shape)
    expr = Op("add", "f32", (Op("mul", "f32", (In("f32", 0), In("f32", 1))), In("f32", 2)))
    out = ctx.emit("elementwise", [x, scale_v, shift_v], x.shape, "f32", expr=expr, channel_affine=(scale, shift))
    empty = const(torch.zeros(0))
    return (out, empty, empty)


def normalize(ctx, x, reduced: int, weight, bias, channel_shape, eps):
    """Normalise the trailing `reduced` dims of x; weight and bias reshape to channel_shape, then broadcast."""
    affine = [views.expand(ctx.reshape(v, channel_shape), x.shape) for v in (weight, bias) if v is not None]
    return ctx.emit("normalize", [x, *affine], x.shape, "f32", reduced=reduced, eps=float(eps),
                    has_weight=weight is not None, has_bias=bias is not None)


@aten("native_layer_norm.default")
def layer_norm(ctx, x, normalized_shape, weight, bias, eps):
    out = normalize(ctx, x, len(normalized_shape), weight, bias, normalized_shape, eps)
    return (out, None, None)


@aten("native_group_norm.default")
def group_norm(ctx, x, weight, bias, n, channels, hxw, groups, eps):
    # [N, C, *spatial] viewed as [N, G, C/G, *spatial]: splitting one dim is always a view
    spatial = x.shape[2:]
    grouped = ctx.reshape(x, (n, groups, channels // groups, *spatial))
    channel_shape = (groups, channels // groups) + (1,) * len(spatial)
    out = normalize(ctx, grouped, len(grouped.shape) - 2, weight, bias, channel_shape, eps)
    return (views.reshape(out, x.shape), None, None)


@aten("_native_batch_norm_legit.no_stats")
def batch_norm_batch_stats(ctx, x, weight, bias, training, momentum, eps):
    """Statistics of the batch itself (instance norm reaches this through a [1, N*C, ...] view)."""
    order = [1, 0] + list(range(2, len(x.shape)))  # channel first, the rest are its row
    channel_shape = (x.shape[1],) + (1,) * (len(x.shape) - 1)
    out = normalize(ctx, views.permute(x, order), len(x.shape) - 1, weight, bias, channel_shape, eps)
    return (views.permute(out, order), None, None)
