"""The ops of generative models on real WebGPU against PyTorch: index writes (index_put,
index_copy, slice and select assignment), grouped-query attention with boolean and float
masks, rotary embeddings from position-indexed tables, cumsum and topk."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kuma_build.errors import KumaError
from kuma_build.compiler import compile_module
from kuma_build.devices import GPU
from support import Fn, Fn1, assert_matches, assert_outputs_match, model_config, reference_outputs, run_compiled


def scatter_into(fn):
    """fn(copy of x, y) writes into its first argument in place; the result is that copy."""
    def write(x, y):
        x = x.clone()
        fn(x, y)
        return x
    return write


def index_put_pairs(x, y):
    x.index_put_((torch.tensor([0, 2, 4]), torch.tensor([1, 1, -3])), y[0, :3])


# name -> (fn(x, y), x shape, y shape); sizes are not multiples of the workgroup size
WRITES = {
    "index_copy_dim1": (scatter_into(lambda x, y: x.index_copy_(1, torch.tensor([6, 0, 3]), y[:, :3])), (5, 7, 9), (5, 4, 9)),
    "index_copy_negative_last_dim": (scatter_into(lambda x, y: x.index_copy_(-1, torch.tensor([2, 8]), y[..., :2])), (3, 301), (3, 9)),
    "getitem_assign": (scatter_into(lambda x, y: x.__setitem__((slice(None), torch.tensor([4, -1])), y[:, :2] * 2)), (6, 9, 2), (6, 3, 2)),
    "index_put_two_tensors": (scatter_into(index_put_pairs), (5, 4, 7), (2, 4, 7)),
    "index_put_broadcast_value": (scatter_into(lambda x, y: x.index_put_((torch.tensor([1, 3]),), y[0, 0, 0])), (5, 4, 7), (2, 4, 7)),
    "slice_assign": (scatter_into(lambda x, y: x.__setitem__((slice(None), slice(2, 9, 3)), y[:, :3])), (4, 11), (4, 5)),
    "select_assign": (scatter_into(lambda x, y: x.__setitem__((1, slice(None)), y[0])), (4, 11), (2, 11)),
    "copy_broadcast": (scatter_into(lambda x, y: x[1:].copy_(y[:1])), (3, 300), (2, 300)),
}


@pytest.mark.parametrize("name", sorted(WRITES))
def test_index_writes(name):
    fn, x_shape, y_shape = WRITES[name]
    assert_matches(Fn(fn), torch.randn(x_shape), torch.randn(y_shape))


class IndexCopyWithInput(nn.Module):
    """index_copy with ids from the caller (a decode step's positions)."""

    def forward(self, x, values, ids):
        return x.index_copy(1, ids, values) * 2


def test_index_copy_with_input_ids():
    assert_matches(IndexCopyWithInput(), torch.randn(2, 13, 5), torch.randn(2, 3, 5), torch.tensor([12, 0, 7]))


def test_index_put_accumulate_is_unsupported():
    with pytest.raises(KumaError, match="accumulate"):
        assert_matches(Fn(scatter_into(lambda x, y: x.index_put_((torch.tensor([1, 1]),), y[:2], accumulate=True))),
                       torch.randn(4, 3), torch.randn(2, 3))


class GroupedAttention(nn.Module):
    """scaled_dot_product_attention with fewer key/value heads than query heads."""

    def __init__(self, mask=None, repeat=False, **kwargs):
        super().__init__()
        self.register_buffer("mask", mask)
        self.repeat, self.kwargs = repeat, kwargs

    def forward(self, q, k, v):
        if self.repeat:  # the same, written out with repeat_interleave
            group = q.shape[-3] // k.shape[-3]
            k, v = k.repeat_interleave(group, dim=-3), v.repeat_interleave(group, dim=-3)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask, **self.kwargs)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask, enable_gqa=True, **self.kwargs)


def bool_mask(length, keys):
    mask = torch.rand(length, keys) > 0.5
    mask[:, 0] = True
    return mask


# name -> (q, k, v shapes, GroupedAttention kwargs): 6 query heads over 2 or 3 key/value heads
GQA = {
    "plain": ((2, 6, 13, 24), (2, 2, 17, 24), (2, 2, 17, 24), {}),
    "causal": ((1, 6, 13, 24), (1, 3, 13, 24), (1, 3, 13, 24), dict(is_causal=True)),
    "bool_mask": ((2, 6, 13, 24), (2, 2, 17, 24), (2, 2, 17, 24), dict(mask=bool_mask(13, 17))),
    "float_mask_per_head": ((2, 6, 13, 24), (2, 3, 17, 24), (2, 3, 17, 24), dict(mask=torch.randn(2, 6, 13, 17))),
    "decode_step": ((1, 6, 1, 16), (1, 2, 40, 16), (1, 2, 40, 16), dict(mask=torch.arange(40)[None] <= 11)),
    "repeat_interleave": ((2, 6, 13, 24), (2, 2, 17, 24), (2, 2, 17, 24), dict(mask=bool_mask(13, 17), repeat=True)),
    "long_causal": ((1, 4, 75, 64), (1, 2, 75, 64), (1, 2, 75, 64), dict(is_causal=True)),  # several key tiles
    "long_float_mask": ((1, 6, 70, 32), (1, 3, 90, 32), (1, 3, 90, 32), dict(mask=torch.randn(1, 6, 70, 90))),
}


@pytest.mark.parametrize("name", sorted(GQA))
def test_grouped_query_attention(name, device_class):
    *shapes, kwargs = GQA[name]
    assert_matches(GroupedAttention(**kwargs), *(torch.randn(shape) for shape in shapes), device=device_class)


def prefix_mask(keys, seen):
    """The static-cache decode mask: the first `seen` positions."""
    return torch.arange(keys)[None] < seen


# the "gpu" class's decode kernel (kernels/attention_decode.py): keys split over workgroups, or one
# workgroup per row going through its keys in chunks; name -> (q, k, v shapes, kwargs)
DECODE = {
    "one_key": ((1, 4, 1, 32), (1, 2, 1, 32), (1, 2, 1, 32), {}),
    "odd_dims_bool_mask": ((1, 6, 1, 37), (1, 3, 37, 37), (1, 3, 37, 37), dict(mask=bool_mask(1, 37))),
    "cache_1000_prefix": ((1, 12, 1, 64), (1, 4, 1000, 64), (1, 4, 1000, 64), dict(mask=prefix_mask(1000, 413))),
    "float_mask_dim_128": ((2, 4, 1, 128), (2, 2, 300, 128), (2, 2, 300, 128), dict(mask=torch.randn(2, 4, 1, 300))),
    "causal_rows": ((1, 2, 7, 24), (1, 1, 90, 24), (1, 1, 90, 24), dict(is_causal=True)),
    "wide_values": ((1, 3, 2, 16), (1, 3, 129, 16), (1, 3, 129, 300), dict(mask=bool_mask(2, 129))),
    "tiny_rows": ((1, 2, 3, 2), (1, 2, 50, 2), (1, 2, 50, 1), dict(mask=torch.randn(3, 50))),
    "rows_fill_the_device": ((1, 64, 4, 64), (1, 64, 300, 64), (1, 64, 300, 64), {}),  # unsplit, chunks
}


@pytest.mark.parametrize("dispatch_cost", [GPU.dispatch_cost, 0])  # as built (few split), and split wherever it fills the device
@pytest.mark.parametrize("name", sorted(DECODE))
def test_decode_attention(name, dispatch_cost):
    *shapes, kwargs = DECODE[name]
    module, inputs = GroupedAttention(**kwargs).eval(), [torch.randn(shape) for shape in shapes]
    config = model_config(module, inputs, device="gpu")
    compiled = compile_module(module, config, devices=[dataclasses.replace(GPU, dispatch_cost=dispatch_cost)])
    expected = reference_outputs(module, config, {s.name: t for s, t in zip(config.inputs, inputs)})
    assert_outputs_match(run_compiled(compiled, config, inputs), expected)


def decode_dispatches(heads: int, keys: int) -> list[tuple[str, int]]:
    """(kernel, workgroups) of a decode step's attention over a cache of `keys` positions, head dim 64."""
    module, inputs = GroupedAttention(mask=prefix_mask(keys, 5)), [torch.randn(1, heads, 1, 64), *2 * [torch.randn(1, heads, keys, 64)]]
    program = compile_module(module.eval(), model_config(module, inputs, device="gpu")).program
    return [(program["kernels"][k]["name"], workgroups[0]) for k, _, workgroups in program["dispatches"]]


def test_decode_attention_splits_where_it_pays():
    """GPT-2 small's decode step (12 heads, 1024 cached positions): 16 slices of 64 keys per head, 192
    workgroups, then one small combine; a short cache (the example site's) is not worth the dispatch."""
    assert decode_dispatches(12, 1024) == [("attention", 192), ("attention_combine", 3)]
    assert decode_dispatches(4, 256) == [("attention", 4)]


class Rotary(nn.Module):
    """Rotary embeddings: sin/cos tables indexed by the caller's positions, halves sliced and
    concatenated; the mask of positions so far from arange."""

    def __init__(self, context=37, head_dim=18):
        super().__init__()
        angles = torch.arange(context).float()[:, None] / 10000 ** (torch.arange(0, head_dim, 2).float() / head_dim)
        self.register_buffer("cos", angles.cos())
        self.register_buffer("sin", angles.sin())
        self.context = context

    def forward(self, x, pos):
        cos, sin = self.cos[pos], self.sin[pos]
        half = x.shape[-1] // 2
        x1, x2 = x[..., :half], x[..., half:]
        rotated = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)
        seen = torch.arange(self.context) <= pos[:, None]
        return rotated, torch.where(seen, 1.0, 0.0).sum(-1)


def test_rotary_embedding():
    assert_matches(Rotary(), torch.randn(2, 3, 5, 18), torch.tensor([0, 36, 4, 9, 20]))


REDUCTIONS = {
    "cumsum_last": (lambda x: torch.cumsum(x, -1), (3, 300)),
    "cumsum_middle_view": (lambda x: torch.cumsum(x.transpose(0, 2), 1), (5, 7, 9)),
    "cumsum_int": (lambda x: torch.cumsum((x > 0).int(), 1) * 2, (11, 65)),
    "topk_values_and_indices": (lambda x: torch.topk(x, 5, -1), (70, 37)),
    "topk_smallest_dim0": (lambda x: torch.topk(x, 3, 0, largest=False), (37, 9)),
    "argmax_embedding_chain": (lambda x: F.embedding(torch.argmax(x, -1), x.t()), (11, 13)),
}


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
def test_scans_and_rankings(name):
    fn, shape = REDUCTIONS[name]
    assert_matches(Fn1(fn), torch.randn(shape))
