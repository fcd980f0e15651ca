"""Pooling -> "pool2d" nodes and upsampling -> "resize" nodes.

Output sizes come from the shapes torch.export recorded (ceil_mode and the
upsample size rules are torch's), so the nodes only carry what the kernels need
to find each output's window or source pixels. 3-D (C, H, W) pooling input is
viewed as a batch of one. Max pooling never computes indices.
"""

import operator

from kuma_build.compiler.ir import views
from kuma_build.compiler.ir.aten_conv import pair
from kuma_build.compiler.ir.registry import Unsupported, aten


def pool(ctx, x, mode: str, **attrs):
    if len(x.shape) not in (3, 4):
        raise Unsupported(f"2-D pooling needs a 3-D or 4-D input, got {len(x.shape)}-D")
    shape = ctx.sizes(ctx.meta[0].shape if isinstance(ctx.meta, (tuple, list)) else ctx.meta.shape)
    if len(x.shape) == 3:
        out = ctx.emit("pool2d", [views.unsqueeze(x, 0)], (1,) + shape, "f32", mode=mode, **attrs)
        return views.squeeze(out, [0])
    return ctx.emit("pool2d", [x], shape, "f32", mode=mode, **attrs)


@aten("max_pool2d_with_indices.default")
def max_pool2d_with_indices(ctx, x, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    if any(user.target is operator.getitem and user.args[1] == 1 for user in ctx.node.users):
        raise Unsupported("max pooling indices (return_indices=True) are not computed")
    return (max_pool2d(ctx, x, kernel_size, stride, padding, dilation, ceil_mode), None)


@aten("max_pool2d.default")
def max_pool2d(ctx, x, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    kernel = pair(kernel_size)
    return pool(ctx, x, "max", kernel=kernel, stride=pair(stride or kernel), padding=pair(padding), dilation=pair(dilation))


@aten("avg_pool2d.default")
def avg_pool2d(ctx, x, kernel_size, stride=(), padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None):
    kernel = pair(kernel_size)
    return pool(ctx, x, "avg", kernel=kernel, stride=pair(stride or kernel), padding=pair(padding),
                count_include_pad=bool(count_include_pad), divisor_override=divisor_override)


@aten("_adaptive_avg_pool2d.default")
def adaptive_avg_pool2d(ctx, x, output_size):
    return pool(ctx, x, "adaptive_avg")


def resize(ctx, x, mode: str, scales, align_corners: bool = False):
    if len(x.shape) != 4:
        raise Unsupported(f"2-D upsampling needs a 4-D NCHW input, got {len(x.shape)}-D")
    scales = tuple(None if s is None else float(s) for s in (scales or (None, None)))
    return ctx.emit("resize", [x], ctx.shape, "f32", mode=mode, scales=scales, align_corners=bool(align_corners))


@aten("upsample_nearest2d.vec")
def upsample_nearest2d_vec(ctx, x, output_size, scale_factors):
    return resize(ctx, x, "nearest", scale_factors)


@aten("upsample_nearest2d.default")
def upsample_nearest2d(ctx, x, output_size, scales_h=None, scales_w=None):
    return resize(ctx, x, "nearest", (scales_h, scales_w))


@aten("upsample_bilinear2d.vec")
def upsample_bilinear2d_vec(ctx, x, output_size, align_corners, scale_factors):
    return resize(ctx, x, "bilinear", scale_factors, align_corners)


@aten("upsample_bilinear2d.default")
def upsample_bilinear2d(ctx, x, output_size, align_corners, scales_h=None, scales_w=None):
    return resize(ctx, x, "bilinear", (scales_h, scales_w), align_corners)
