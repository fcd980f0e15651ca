"""Reductions and softmax -> "reduce" and "softmax" IR nodes over rows.

The input is permuted (a free view) so the reduced dims come last; the node's
output holds the kept dims, and keepdim is a reshape view of it. Softmax over
a non-last dim writes its result in the permuted order and returns the
inverse permutation, again a free view.
"""

from kuma_build.compiler.ir import views
from kuma_build.compiler.ir.graph import ir_dtype
from kuma_build.compiler.ir.registry import Unsupported, aten


def reduce(ctx, op: str, x, dims, keepdim: bool, dtype: str, **attrs):
    """Emit op over dims (None or [] means all) of x."""
    rank = len(x.shape)
    dims = [dims] if isinstance(dims, int) else dims
    dims = sorted({views.norm_dim(d, rank) for d in dims}) if dims else list(range(rank))
    kept = [d for d in range(rank) if d not in dims]
    out = ctx.emit("reduce", [views.permute(x, kept + dims)], [x.shape[d] for d in kept], dtype, reduction=op, **attrs)
    if keepdim:
        return views.reshape(out, [1 if d in dims else size for d, size in enumerate(x.shape)])
    return out


def out_dtype(ctx):
    return ir_dtype(ctx.meta.dtype)


@aten("sum.dim_IntList")
def sum_dims(ctx, x, dim=None, keepdim=False, dtype=None):
    return reduce(ctx, "sum", x, dim, keepdim, out_dtype(ctx))


@aten("sum.default")
def sum_all(ctx, x, dtype=None):
    return reduce(ctx, "sum", x, None, False, out_dtype(ctx))


@aten("mean.dim")
def mean_dims(ctx, x, dim=None, keepdim=False, dtype=None):
    return reduce(ctx, "mean", x, dim, keepdim, "f32")


@aten("mean.default")
def mean_all(ctx, x, dtype=None):
    return reduce(ctx, "mean", x, None, False, "f32")


@aten("prod.dim_int")
def prod_dim(ctx, x, dim, keepdim=False, dtype=None):
    return reduce(ctx, "prod", x, dim, keepdim, out_dtype(ctx))


@aten("prod.default")
def prod_all(ctx, x, dtype=None):
    return reduce(ctx, "prod", x, None, False, out_dtype(ctx))


for _op in ("max", "min"):
    aten(f"a{_op}.default")(lambda ctx, x, dim=(), keepdim=False, _op=_op: reduce(ctx, _op, x, dim, keepdim, x.dtype))
    aten(f"{_op}.default")(lambda ctx, x, _op=_op: reduce(ctx, _op, x, None, False, x.dtype))
    # the indices are an argmax node; the dead code pass drops it when nothing reads them
    aten(f"{_op}.dim")(lambda ctx, x, dim, keepdim=False, _op=_op: (
        reduce(ctx, _op, x, dim, keepdim, x.dtype), reduce(ctx, f"arg{_op}", x, dim, keepdim, "i32")))
    aten(f"arg{_op}.default")(lambda ctx, x, dim=None, keepdim=False, _op=_op: reduce(ctx, f"arg{_op}", x, dim, keepdim, "i32"))


@aten("any.dim", "any.dims")
def any_dims(ctx, x, dim=None, keepdim=False):
    return reduce(ctx, "any", x, dim, keepdim, "bool")


@aten("any.default")
def any_all(ctx, x):
    return reduce(ctx, "any", x, None, False, "bool")


def correction_of(correction) -> float:
    return 1.0 if correction is None else float(correction)


@aten("var.correction")
def var(ctx, x, dim=None, *, correction=None, keepdim=False):
    return reduce(ctx, "var", x, dim, keepdim, "f32", correction=correction_of(correction))


@aten("var_mean.correction")
def var_mean(ctx, x, dim=None, *, correction=None, keepdim=False):
    return (reduce(ctx, "var", x, dim, keepdim, "f32", correction=correction_of(correction)),
            reduce(ctx, "mean", x, dim, keepdim, "f32"))


NORMS = {1: "norm1", 2: "norm2", float("inf"): "norm_inf"}


@aten("linalg_vector_norm.default")
def vector_norm(ctx, x, ord=2, dim=None, keepdim=False, *, dtype=None):
    if ord not in NORMS:
        raise Unsupported(f"only the 1, 2 and inf norms are compiled, not ord={ord}")
    return reduce(ctx, NORMS[ord], x, dim, keepdim, "f32")


def softmax(ctx, x, dim: int, log: bool):
    dim = views.norm_dim(dim, len(x.shape))
    order = [d for d in range(len(x.shape)) if d != dim] + [dim]
    rows = views.permute(x, order)
    out = ctx.emit("softmax", [rows], rows.shape, "f32", log=log)
    return views.permute(out, [order.index(d) for d in range(len(order))])


@aten("_softmax.default")
def softmax_(ctx, x, dim, half_to_float=False):
    return softmax(ctx, x, dim, log=False)


@aten("_log_softmax.default")
def log_softmax(ctx, x, dim, half_to_float=False):
    return softmax(ctx, x, dim, log=True)
