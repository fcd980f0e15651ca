"""Writes into a copy of a tensor: one "index_put" node (the copy with the updated slots).

index_put with tensor indices, index_copy, slice_scatter and select_scatter (slice and
select assignment, `x[:, 3:5] = y`) and copy (`x.copy_(y)`) all become one "index_put"
node: x with the slots that the index tensors pick replaced by values. Slices and selects
are index tensors made at build time. When x is a state buffer (a registered buffer that
forward() updates in place, such as a KV cache) and nothing else reads its old value,
passes/state.py turns that node into a "scatter" that writes only the updated slots into
the state buffer itself, so a decode step writes O(updated) bytes, not O(cache).
"""

import torch

from kuma_build.compiler.ir import views
from kuma_build.compiler.ir.expr import In, Op
from kuma_build.compiler.ir.graph import const
from kuma_build.compiler.ir.registry import Unsupported, aten

COVERS = "`x[:, ids] = y`, `index_copy_`, `index_put_`, slice and select assignment, `copy_` (a static KV cache)"


def index_put(ctx, x, dim: int, ids: list, values, progression: tuple[int, int] | None = None):
    """x with x[..., *ids, ...] = values: ids (index tensors, broadcast together) index dims dim, dim + 1, ...
    progression: (start, step) when ids are one range made at build time (slice and select
    assignment), so the kernel finds a slot's update by arithmetic instead of a search."""
    if any(i.dtype != "i32" for i in ids):
        raise Unsupported("index tensors must be integer tensors (boolean masks give data-dependent shapes)")
    batch = views.broadcast_shapes(*(i.shape for i in ids))
    indexed = x.shape[:dim] + batch + x.shape[dim + len(ids):]
    values = _as(ctx, values, x.dtype)
    try:
        values = views.expand(values, indexed)
    except ValueError:
        raise Unsupported(f"values of shape {list(values.shape)} do not broadcast to the indexed shape {list(indexed)}")
    ids = [views.expand(i, batch) for i in ids]
    if progression:  # the slots are arithmetic: no index tensor to bind
        return ctx.emit("index_put", [x, values], x.shape, x.dtype, dim=dim, progression=progression)
    return ctx.emit("index_put", [x, values, *ids], x.shape, x.dtype, dim=dim)


def _as(ctx, v, dtype: str):
    return v if v.dtype == dtype else ctx.emit("elementwise", [v], v.shape, dtype, expr=Op("cast", dtype, (In(v.dtype, 0),)))


@aten("index_put.default")
def index_put_default(ctx, x, indices, values, accumulate=False):
    if accumulate:
        raise Unsupported("accumulate=True is not supported (index_put_ with accumulate, index_add_)")
    dims = [d for d, i in enumerate(indices) if i is not None]
    if not dims or dims != list(range(dims[0], dims[-1] + 1)):
        raise Unsupported("index tensors must index adjacent dims (x[:, ids] or x[ids0, ids1], not x[ids0, :, ids1])")
    return index_put(ctx, x, dims[0], [indices[d] for d in dims], values)


@aten("index_copy.default")
def index_copy(ctx, x, dim, index, source):
    return index_put(ctx, x, views.norm_dim(dim, len(x.shape)), [index], source)


@aten("slice_scatter.default")
def slice_scatter(ctx, x, src, dim=0, start=None, end=None, step=1):
    dim = views.norm_dim(dim, len(x.shape))
    ids = range(*slice(start, end, step).indices(x.shape[dim]))
    return index_put(ctx, x, dim, [const(torch.tensor(list(ids), dtype=torch.int32))], src, (ids.start, ids.step))


@aten("select_scatter.default")
def select_scatter(ctx, x, src, dim, index):
    dim = views.norm_dim(dim, len(x.shape))
    index %= x.shape[dim]
    return index_put(ctx, x, dim, [const(torch.tensor([index], dtype=torch.int32))], views.unsqueeze(src, dim), (index, 1))


@aten("copy.default")
def copy(ctx, x, src, non_blocking=False):
    return ctx.copy(views.expand(_as(ctx, src, x.dtype), x.shape))
