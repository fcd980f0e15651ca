"""View arithmetic: new Values that alias a buffer with other shapes and strides.

These mirror torch's own view semantics. reshape() returns None when the
strides cannot express the new shape; the caller then copies first.
Sizes may be Syms (ir/sizes.py); strides and offsets then may be too.
"""

from math import prod

from kuma_build.compiler.ir.graph import Value
from kuma_build.compiler.ir.sizes import any_sym


def norm_dim(dim: int, rank: int) -> int:
    return dim + rank if dim < 0 else dim


def permute(v: Value, dims) -> Value:
    dims = [norm_dim(d, len(v.shape)) for d in dims]
    return Value(v.buffer, tuple(v.shape[d] for d in dims), tuple(v.strides[d] for d in dims), v.offset)


def transpose(v: Value, a: int, b: int) -> Value:
    dims = list(range(len(v.shape)))
    a, b = norm_dim(a, len(dims)), norm_dim(b, len(dims))
    dims[a], dims[b] = dims[b], dims[a]
    return permute(v, dims)


def expand(v: Value, shape) -> Value:
    """Broadcast to shape (numpy rules): new leading dims and size-1 dims get stride 0."""
    shape = tuple(shape)
    lead = len(shape) - len(v.shape)
    old_shape = (1,) * lead + v.shape
    old_strides = (0,) * lead + v.strides
    sizes, strides = [], []
    for target, size, stride in zip(shape, old_shape, old_strides):
        if target == -1:
            target = size
        if size == target:
            sizes.append(size)
            strides.append(stride if size != 1 else 0)
        elif size == 1:
            sizes.append(target)
            strides.append(0)
        else:
            raise ValueError(f"cannot expand {v.shape} to {shape}")
    return Value(v.buffer, tuple(sizes), tuple(strides), v.offset)


def broadcast_shapes(*shapes) -> tuple:
    """numpy's broadcast of shapes whose sizes may be Syms (a size-1 dim takes the other's size)."""
    rank = max(len(s) for s in shapes)
    padded = [(1,) * (rank - len(s)) + tuple(s) for s in shapes]
    result = []
    for sizes in zip(*padded):
        others = [s for s in sizes if s != 1]
        if any(s != others[0] for s in others):
            raise ValueError(f"shapes {shapes} do not broadcast")
        result.append(others[0] if others else 1)
    return tuple(result)


def slice_(v: Value, dim: int, start, end, step: int = 1, length=None) -> Value:
    """v[..., start:end:step, ...]; with a dim in the sizes, `length` is the result's size as
    torch.export recorded it (torch clamps start and end, which a Sym cannot do here)."""
    dim = norm_dim(dim, len(v.shape))
    size = v.shape[dim]
    if any_sym((size, start, end, length)):
        start = 0 if start is None else (start + size if isinstance(start, int) and start < 0 else start)
        if length is None:  # a crop or a split's part: end and start are exact
            end = size if end is None else (end + size if isinstance(end, int) and end < 0 else end)
            length = (end - start) if step == 1 else -(-(end - start) // step)
    else:
        start, end, _ = slice(start, end).indices(size)
        length = max(0, (end - start + step - 1) // step)
    shape = v.shape[:dim] + (length,) + v.shape[dim + 1:]
    strides = v.strides[:dim] + (v.strides[dim] * step,) + v.strides[dim + 1:]
    return Value(v.buffer, shape, strides, v.offset + start * v.strides[dim])


def select(v: Value, dim: int, index: int) -> Value:
    dim = norm_dim(dim, len(v.shape))
    index = index + v.shape[dim] if index < 0 else index
    return Value(v.buffer, v.shape[:dim] + v.shape[dim + 1:], v.strides[:dim] + v.strides[dim + 1:], v.offset + index * v.strides[dim])


def unsqueeze(v: Value, dim: int) -> Value:
    dim = norm_dim(dim, len(v.shape) + 1)
    return Value(v.buffer, v.shape[:dim] + (1,) + v.shape[dim:], v.strides[:dim] + (0,) + v.strides[dim:], v.offset)


def squeeze(v: Value, dims=None) -> Value:
    rank = len(v.shape)
    dims = range(rank) if dims is None else [norm_dim(d, rank) for d in dims]
    keep = [i for i in range(rank) if not (i in dims and v.shape[i] == 1)]
    return Value(v.buffer, tuple(v.shape[i] for i in keep), tuple(v.strides[i] for i in keep), v.offset)


def infer_shape(shape, numel: int) -> tuple[int, ...]:
    shape = list(shape)
    if -1 in shape:
        known = prod(s for s in shape if s != -1)
        shape[shape.index(-1)] = numel // known if known else 0
    return tuple(shape)


def reshape(v: Value, shape) -> Value | None:
    """A view with the new shape, or None if the strides cannot express it (torch's computeStride)."""
    shape = infer_shape(shape, v.numel)
    if v.numel == 0 or v.numel == 1:
        return Value(v.buffer, shape, (1,) * len(shape), v.offset)
    new_strides = [0] * len(shape)
    view_d = len(shape) - 1
    chunk_base_stride = v.strides[-1] if v.strides else 1
    tensor_numel, view_numel = 1, 1
    for tensor_d in range(len(v.shape) - 1, -1, -1):
        tensor_numel *= v.shape[tensor_d]
        if tensor_d == 0 or (v.shape[tensor_d - 1] != 1 and v.strides[tensor_d - 1] != tensor_numel * chunk_base_stride):
            # torch tests view_numel < tensor_numel; as products only grow, != stops at the same
            # place, and it is what a Sym can answer
            while view_d >= 0 and (view_numel != tensor_numel or shape[view_d] == 1):
                new_strides[view_d] = view_numel * chunk_base_stride
                view_numel *= shape[view_d]
                view_d -= 1
            if view_numel != tensor_numel:
                return None
            if tensor_d > 0:
                chunk_base_stride = v.strides[tensor_d - 1]
                tensor_numel, view_numel = 1, 1
    if view_d != -1:
        return None
    return Value(v.buffer, shape, tuple(new_strides), v.offset)
