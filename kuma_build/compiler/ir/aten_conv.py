"""Convolution -> one "conv2d" IR node (plain or transposed), 1-D and 2-D.

A 1-D convolution is a 2-D one of height 1: the input and weight get a
height dim as free views, and the result is viewed back without it.

The weight stays in torch's layout and the bias a plain [C_out] constant, so
the fold_batchnorm pass can rescale both in place. Output sizes come from the
shape torch.export recorded, which already accounts for output_padding.
"""

from kuma_build.compiler.ir import views
from kuma_build.compiler.ir.registry import Unsupported, aten


def pair(values) -> tuple[int, int]:
    """torch's int-or-list arguments (stride=2, padding=[1]) as an (h, w) pair."""
    values = [int(values)] if isinstance(values, int) else [int(v) for v in values]
    return (values[0], values[0]) if len(values) == 1 else tuple(values)


@aten("convolution.default")
def convolution(ctx, x, weight, bias, stride, padding, dilation, transposed, output_padding, groups):
    if not ctx.meta.dtype.is_floating_point:
        raise Unsupported("convolution needs float tensors")
    if len(weight.shape) == 3 and len(x.shape) == 3:  # 1-D: height 1, every height argument neutral
        x, weight = views.unsqueeze(x, 2), views.unsqueeze(weight, 2)
        stride, dilation = (1, pair(stride)[0]), (1, pair(dilation)[0])
        padding, output_padding = (0, pair(padding)[0]), (0, pair(output_padding)[0])
        shape = (*ctx.shape[:2], 1, ctx.shape[2])
    elif len(weight.shape) == 4 and len(x.shape) == 4:
        shape = ctx.shape
    else:
        raise Unsupported(f"only 1-D and 2-D convolutions on batched input are compiled (got a {len(weight.shape) - 2}-D one)")
    inputs = [x, weight] if bias is None else [x, weight, bias]
    out = ctx.emit("conv2d", inputs, shape, "f32", stride=pair(stride), padding=pair(padding), dilation=pair(dilation),
                   groups=int(groups), transposed=bool(transposed), output_padding=pair(output_padding))
    return views.squeeze(out, [2]) if len(shape) != len(ctx.shape) else out
