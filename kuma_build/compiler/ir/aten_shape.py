"""Shape ops. Views alias their input (no node, no kernel); cat is a "concat" node."""

from kuma_build.compiler.ir import views
from kuma_build.compiler.ir.registry import aten



@aten("view.default", "_unsafe_view.default", "reshape.default")
def view(ctx, x, shape):
    return ctx.reshape(x, ctx.shape)  # as recorded: a -1 is resolved, a dim's size is its Sym


@aten("permute.default")
def permute(ctx, x, dims):
    return views.permute(x, dims)


@aten("t.default")
def t(ctx, x):
    return views.transpose(x, 0, 1) if len(x.shape) == 2 else x


@aten("transpose.int")
def transpose(ctx, x, a, b):
    return views.transpose(x, a, b)


@aten("expand.default")
def expand(ctx, x, shape, implicit=False):
    return views.expand(x, ctx.shape)


@aten("unsqueeze.default")
def unsqueeze(ctx, x, dim):
    return views.unsqueeze(x, dim)


@aten("squeeze.dim", "squeeze.dims", "squeeze.default")
def squeeze(ctx, x, dims=None):
    if isinstance(dims, int):
        dims = [dims]
    return views.squeeze(x, dims)


@aten("slice.Tensor")
def slice_(ctx, x, dim=0, start=None, end=None, step=1):
    return views.slice_(x, dim, start, end, step, ctx.shape[views.norm_dim(dim, len(x.shape))])


@aten("select.int")
def select(ctx, x, dim, index):
    return views.select(x, dim, index)


@aten("alias.default", "detach.default")
def alias(ctx, x):
    return x


@aten("split_with_sizes.default", "split.Tensor")
def split(ctx, x, sizes, dim=0):
    dim = views.norm_dim(dim, len(x.shape))
    sizes = [ctx.size(part.shape[dim]) for part in ctx.meta]  # as recorded, so a dim's part is its Sym
    parts, start = [], 0
    for size in sizes:
        parts.append(views.slice_(x, dim, start, start + size))
        start += size
    return parts


@aten("unbind.int")
def unbind(ctx, x, dim=0):
    return [views.select(x, dim, i) for i in range(x.shape[views.norm_dim(dim, len(x.shape))])]


@aten("cat.default")
def cat(ctx, tensors, dim=0):
    tensors = [t for t in tensors if t.numel != 0]
    dim = views.norm_dim(dim, len(tensors[0].shape))
    most = ctx.graph.device.storage_buffers - 2  # inputs per concat: well inside the device's storage buffers
    while len(tensors) > most:  # concatenate in groups, then the groups
        group = tensors[:most]
        shape = list(group[0].shape)
        shape[dim] = sum(t.shape[dim] for t in group)
        tensors = [ctx.emit("concat", group, shape, group[0].dtype, dim=dim)] + tensors[most:]
    if len(tensors) == 1:
        return ctx.copy(tensors[0])
    return ctx.emit("concat", tensors, ctx.shape, tensors[0].dtype, dim=dim)
