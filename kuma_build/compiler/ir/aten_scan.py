"""Running and ranked reductions along a dim: one "cumsum" or "topk" node, one thread per row.

The dim goes last as a free permuted view, and the result is permuted back (a view).
topk gives (values, indices) as two nodes (the dead code pass drops one nothing reads),
sorted from the best; of equal values the first position comes first.
"""

from kuma_build.compiler.ir import views
from kuma_build.compiler.ir.graph import ir_dtype
from kuma_build.compiler.ir.registry import aten

COVERS = "`torch.cumsum`, `torch.topk`"


def _last(x, dim: int):
    """x with dim moved last (a view), and the permutation that puts it back."""
    dim = views.norm_dim(dim, len(x.shape))
    order = [d for d in range(len(x.shape)) if d != dim] + [dim]
    back = sorted(range(len(order)), key=order.__getitem__)
    return views.permute(x, order), back


@aten("cumsum.default")
def cumsum(ctx, x, dim, dtype=None):
    moved, back = _last(x, dim)
    out = ctx.emit("cumsum", [moved], moved.shape, ir_dtype(ctx.meta.dtype))
    return views.permute(out, back)


@aten("topk.default")
def topk(ctx, x, k, dim=-1, largest=True, sorted=True):
    moved, back = _last(x, dim)
    shape = moved.shape[:-1] + (k,)
    values = ctx.emit("topk", [moved], shape, x.dtype, largest=bool(largest), indices=False)
    indices = ctx.emit("topk", [moved], shape, "i32", largest=bool(largest), indices=True)
    return views.permute(values, back), views.permute(indices, back)
