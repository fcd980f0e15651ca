"""Lookups, fused attention and constant padding.

embedding, index_select and single-tensor indexing are one "gather" node
(rows of a table picked by i32 ids). scaled_dot_product_attention is kept
whole by export (see export.decompositions) and becomes one "attention" node,
its operands broadcast to a common batch shape as free views (grouped-query
heads too: enable_gqa reads each key/value head for its group of query heads); a constant causal
mask becomes the node's `causal` flag, so the kernels skip the masked keys, and a constant mask that
hides nothing goes. constant_pad_nd
crops with a slice view and pads with a "pad" node.
"""

import math

import torch

from kuma_build.compiler.ir import views
from kuma_build.compiler.ir.registry import Unsupported, aten


def gather(ctx, table, ids, dim: int):
    """table with dim `dim` replaced by the dims of ids: out[..., *i, ...] = table[..., ids[*i], ...]."""
    if ids.dtype != "i32":
        raise Unsupported("indices must be an integer tensor (boolean masks give data-dependent shapes)")
    dim = views.norm_dim(dim, len(table.shape))
    shape = table.shape[:dim] + ids.shape + table.shape[dim + 1:]
    return ctx.emit("gather", [table, ids], shape, table.dtype, dim=dim)


@aten("embedding.default")
def embedding(ctx, weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    return gather(ctx, weight, indices, 0)


@aten("index_select.default")
def index_select(ctx, x, dim, index):
    return gather(ctx, x, index, dim)


@aten("index.Tensor")
def index(ctx, x, indices):
    tensors = [(dim, ids) for dim, ids in enumerate(indices) if ids is not None]
    if len(tensors) != 1:
        raise Unsupported("only one index tensor is supported (x[ids] or x[:, ids])")
    dim, ids = tensors[0]
    return gather(ctx, x, ids, dim)


@aten("scaled_dot_product_attention.default")
def scaled_dot_product_attention(ctx, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                 scale=None, enable_gqa=False):
    if dropout_p:
        raise Unsupported("dropout_p must be 0 (kuma compiles inference; pass dropout_p=0.0 or call model.eval())")
    shape = tuple(ctx.meta.shape)
    batch, (length, value_dim) = shape[:-2], shape[-2:]
    keys, head_dim = key.shape[-2], query.shape[-1]
    scale = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
    if attn_mask is not None and attn_mask.is_const:
        if mask_hides_nothing(attn_mask):
            attn_mask = None  # (BERT's and ViT's without padding) no loads of it
        elif not is_causal and is_causal_mask(attn_mask, length, keys):
            attn_mask, is_causal = None, True  # the kernels skip the masked keys instead of reading a mask
    query = views.expand(query, batch + (length, head_dim))
    mask = views.expand(attn_mask, batch + (length, keys)) if attn_mask is not None else None
    if enable_gqa and len(key.shape) >= 3 and key.shape[-3] != batch[-1]:
        # grouped-query heads: query head h reads key/value head h // group. The query heads
        # split into (key heads, group) as a free view, and keys and values gain a group dim of
        # stride 0 (torch's repeat_interleave, never materialised)
        kv_heads = key.shape[-3]
        batch = batch[:-1] + (kv_heads, batch[-1] // kv_heads)
        query = ctx.reshape(query, batch + (length, head_dim))
        mask = ctx.reshape(mask, batch + (length, keys)) if mask is not None else None
        key, value = (views.unsqueeze(views.expand(t, batch[:-2] + t.shape[-3:]), -3) for t in (key, value))
    inputs = [query, views.expand(key, batch + (keys, head_dim)), views.expand(value, batch + (keys, value_dim))]
    if mask is not None:
        inputs.append(mask)
    out = ctx.emit("attention", inputs, batch + (length, value_dim), "f32", scale=scale, causal=bool(is_causal))
    return ctx.reshape(out, shape)


def mask_hides_nothing(mask) -> bool:
    """Whether a constant mask is all true (boolean) or all zeros (float)."""
    values = mask.tensor()
    return bool(values.all()) if mask.dtype == "bool" else mask.dtype == "f32" and not values.any()


def is_causal_mask(mask, length: int, keys: int) -> bool:
    """Whether a mask is a constant that lets query row i see keys 0..i and no others (transformers
    builds GPT-2's causal mask so); it may broadcast over the batch and heads."""
    if mask.shape[-2:] != (length, keys):
        return False
    seen = torch.ones(length, keys, dtype=torch.bool).tril()
    values = mask.tensor()
    if mask.dtype == "bool":
        return bool((values == seen).all())
    return mask.dtype == "f32" and bool((values == torch.zeros(()).masked_fill(~seen, float("-inf"))).all())


@aten("constant_pad_nd.default")
def constant_pad_nd(ctx, x, pad, value=0.0):
    """pad holds (before, after) pairs from the last dim backwards; negative amounts crop."""
    before = [0] * len(x.shape)
    after = [0] * len(x.shape)
    for i in range(len(pad) // 2):
        dim = len(x.shape) - 1 - i
        before[dim], after[dim] = pad[2 * i], pad[2 * i + 1]
        x = views.slice_(x, dim, max(-before[dim], 0), x.shape[dim] - max(-after[dim], 0))
    before = [max(b, 0) for b in before]
    if not any(before) and not any(a > 0 for a in after):
        return x
    shape = tuple(ctx.meta.shape)
    return ctx.emit("pad", [x], shape, x.dtype, before=tuple(before), value=float(value))
