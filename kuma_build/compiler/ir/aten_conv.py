"""Convolution -> one "conv2d" IR node (plain or transposed), 2-D only.

The weight stays in torch's layout and the bias a plain [C_out] constant, so
the fold_batchnorm pass can rescale both in place. Output sizes come from the
shape torch.export recorded, which already accounts for output_padding.
"""

from kuma_build.compiler.ir.importer import Unsupported, aten


def pair(values) -> tuple[int, int]:
    """torch's int-or-list arguments (stride=2, padding=[1]) as an (h, w) pair."""
    values = [int(values)] if isinstance(values, int) else [int(v) for v in values]
    return (values[0], values[0]) if len(values) == 1 else tuple(values)


@aten("convolution.default")
def convolution(ctx, x, weight, bias, stride, padding, dilation, transposed, output_padding, groups):
    if len(weight.shape) != 4 or len(x.shape) != 4:
        raise Unsupported(f"only 2-D convolution on NCHW input is compiled (got a {len(weight.shape) - 2}-D one)")
    if not ctx.meta.dtype.is_floating_point:
        raise Unsupported("convolution needs float tensors")
    inputs = [x, weight] if bias is None else [x, weight, bias]
    return ctx.emit("conv2d", inputs, ctx.meta.shape, "f32", stride=pair(stride), padding=pair(padding),
                    dilation=pair(dilation), groups=int(groups), transposed=bool(transposed),
                    output_padding=pair(output_padding))
