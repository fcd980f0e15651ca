"""Embedding and indexing, fused attention, and constant padding, on real WebGPU against PyTorch."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kuma_build.compiler.kernels import attention
from kuma_build.devices import GPU
from kuma_build.errors import KumaError
from support import assert_matches


class Indexing(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x, ids):
        return self.fn(x, ids)


class Embedding(nn.Module):
    def __init__(self, **kwargs):
        super().__init__()
        self.embed = nn.Embedding(101, 37, **kwargs)

    def forward(self, ids):
        return self.embed(ids)


def test_embedding():
    assert_matches(Embedding(), torch.randint(0, 101, (2, 13)))


def test_embedding_padding_idx():
    ids = torch.randint(0, 101, (2, 13))
    ids[0, :3] = 7
    assert_matches(Embedding(padding_idx=7), ids)


INDEXING = {
    # tables read through a transpose or slice, so the gather follows strides
    "index_select_dim0": lambda x, ids: torch.index_select(x.transpose(0, 1), 0, ids),
    "index_select_dim1": lambda x, ids: torch.index_select(x[:, ::2], 1, ids),
    "getitem": lambda x, ids: x.transpose(0, 1)[ids],
    "getitem_dim1_negative": lambda x, ids: x[:, ids - 9],
}


@pytest.mark.parametrize("name", sorted(INDEXING))
def test_indexing(name):
    assert_matches(Indexing(INDEXING[name]), torch.randn(9, 11), torch.randint(0, 5, (6,)))


class Attention(nn.Module):
    """F.scaled_dot_product_attention on (q, k, v), with an optional constant mask."""

    def __init__(self, mask=None, prepare=lambda t: t, **kwargs):
        super().__init__()
        self.register_buffer("mask", mask)
        self.prepare, self.kwargs = prepare, kwargs

    def forward(self, q, k, v):
        q, k, v = self.prepare(q), self.prepare(k), self.prepare(v)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask, **self.kwargs)


def bool_mask(length, keys):
    mask = torch.rand(length, keys) > 0.5
    mask[:, 0] = True  # every row attends somewhere
    return mask


def all_masked_row(length, keys):
    mask = bool_mask(length, keys)
    mask[4] = False  # torch writes zeros for this row
    return mask


def float_mask_with_inf(length, keys):
    mask = torch.randn(2, 1, length, keys)
    return mask.masked_fill(torch.rand(length, keys) > 0.6, float("-inf"))


# name -> (q, k, v shapes, Attention kwargs); heads=3, L=13, E=24 unless the case is about a size
ATTENTION = {
    "plain": ((2, 3, 13, 24), (2, 3, 13, 24), (2, 3, 13, 24), {}),
    "causal": ((2, 3, 13, 24), (2, 3, 13, 24), (2, 3, 13, 24), dict(is_causal=True)),
    "bool_mask": ((2, 3, 13, 24), (2, 3, 17, 24), (2, 3, 17, 24), dict(mask=bool_mask(13, 17))),
    "all_masked_row": ((2, 3, 13, 24), (2, 3, 17, 24), (2, 3, 17, 24), dict(mask=all_masked_row(13, 17))),
    "float_mask_over_heads": ((2, 3, 13, 24), (2, 3, 17, 24), (2, 3, 17, 24), dict(mask=torch.randn(2, 1, 13, 17))),
    "float_mask_with_inf": ((2, 3, 13, 24), (2, 3, 17, 24), (2, 3, 17, 24), dict(mask=float_mask_with_inf(13, 17))),
    "cross_many_keys": ((2, 3, 13, 24), (2, 3, 150, 24), (2, 3, 150, 24), {}),  # several tiles of keys
    "causal_more_keys": ((2, 3, 13, 24), (2, 3, 70, 24), (2, 3, 70, 24), dict(is_causal=True)),
    "value_dim_70": ((2, 3, 13, 24), (2, 3, 17, 24), (2, 3, 17, 70), {}),  # two value columns per thread
    "scale": ((2, 3, 13, 24), (2, 3, 17, 24), (2, 3, 17, 24), dict(scale=0.3)),
    "broadcast_batch": ((2, 3, 13, 24), (1, 3, 17, 24), (3, 17, 24), {}),
    "no_batch": ((13, 24), (17, 24), (17, 5), {}),
    "transposed": ((2, 13, 3, 24), (2, 17, 3, 24), (2, 17, 3, 24), dict(prepare=lambda t: t.transpose(1, 2))),
    "query_too_long_for_workgroup_memory": ((1, 3, 2100), (1, 5, 2100), (1, 5, 3), {}),
    # the "gpu" class's tiled kernel (flash_tiled): partial query and key tiles and steps of head
    # dims, whole ones (no bounds checks), each count of query rows it picks; two key splits at 16
    # rows and more than 64 keys (vit_tokens, head_dim_32_causal, cross_many_keys, causal_more_keys)
    "vit_tokens": ((1, 2, 197, 64), (1, 2, 197, 64), (1, 2, 197, 64), {}),
    "head_dim_128": ((1, 2, 37, 128), (1, 2, 45, 128), (1, 2, 45, 128), dict(mask=bool_mask(37, 45))),
    "head_dim_32_causal": ((1, 2, 150, 32), (1, 2, 150, 32), (1, 2, 150, 32), dict(is_causal=True)),
    "odd_dims": ((2, 3, 21, 37), (2, 3, 29, 37), (2, 3, 29, 70), dict(mask=torch.randn(2, 1, 21, 29))),
    "rows_64_per_workgroup": ((1, 64, 128, 16), (1, 64, 60, 16), (1, 64, 60, 16), {}),  # one tile of keys: no splits, so 64 and 32 rows stay
    "rows_32_per_workgroup": ((1, 40, 100, 16), (1, 40, 50, 16), (1, 40, 50, 16), dict(is_causal=True)),
    # heads side by side in each token's row, as a merged query-key-value product lays them out: the
    # tiled kernel's vec4 reads (attention.VEC4_READS) of strided views, 70 rows and keys
    "vec4_strided_causal": ((1, 70, 2, 64), (1, 70, 2, 64), (1, 70, 2, 64), dict(prepare=lambda t: t.transpose(1, 2), is_causal=True)),
}


def test_flash_tiles_cover_each_row_count():
    # the cases above reach each tile of query rows (the "gpu" class)
    assert [attention.tiled_shape(GPU, heads, length, keys) for heads, length, keys in ((64, 128, 60), (40, 100, 50), (2, 197, 197))] == [(64, 1), (32, 1), (16, 2)]


def test_flash_key_splits_by_shape():
    # two groups of threads a query tile at 128-197 tokens (BERT, GPT-2, ViT: 12 heads of 16-row
    # tiles) and in the cases above with more than one tile of keys; one at 512 tokens (32 rows)
    # and with one tile of keys
    shapes = [(12 * 8, 16, 128), (12 * 13, 16, 197), (12 * 16, 32, 512), (2 * 13, 16, 197), (2 * 10, 16, 150), (6, 16, 17)]
    assert [attention.tiled_splits(GPU, *shape) for shape in shapes] == [2, 2, 1, 2, 2, 1]
    # where 32 rows leave no room for splits (BERT-base at 512 tokens), 16 rows take two
    assert attention.tiled_shape(GPU, 12, 512, 512) == (16, 2)
    assert attention.tiled_shape(GPU, 12, 128, 128) == (16, 2)
    assert attention.tiled_shape(GPU, 6, 17, 17) == (16, 1)


@pytest.mark.parametrize("name", ["all_masked_row", "causal", "odd_dims", "float_mask_with_inf"])
def test_flash_key_splits_forced(name, monkeypatch):
    # two splits where the keys fill one tile: the second split's keys are all past the end (its
    # rows' max stays the lowest float, its sums zero) and an all-masked row writes zeros
    monkeypatch.setattr(attention, "tiled_splits", lambda *shape: 2)
    *shapes, kwargs = ATTENTION[name]
    assert_matches(Attention(**kwargs), *(torch.randn(shape) for shape in shapes), device="gpu")


@pytest.mark.parametrize("name, vec4", [("vec4_strided_causal", True), ("odd_dims", False)])
def test_flash_reads_vec4s_where_aligned(name, vec4):
    # 4 head dims of a key a load where the views allow it (whole steps of head dims, strides and
    # offsets of 4), scalar loads elsewhere
    *shapes, kwargs = ATTENTION[name]
    compiled = assert_matches(Attention(**kwargs), *(torch.randn(shape) for shape in shapes), device="gpu")
    code = next(k["code"] for k in compiled.program["kernels"] if k["name"] == "attention").replace(" ", "")
    assert ("fnkey(i:u32,e:u32)->vec4<f32>" in code) == vec4


@pytest.mark.parametrize("name", ["odd_dims", "head_dim_32_causal", "float_mask_with_inf"])
def test_flash_split(name, monkeypatch):
    # the kernel flash_tiled replaced, kept for bench/gpu/attention_sweep.py to time against it
    monkeypatch.setattr(attention, "TILED", False)
    *shapes, kwargs = ATTENTION[name]
    assert_matches(Attention(**kwargs), *(torch.randn(shape) for shape in shapes), device="gpu")


@pytest.mark.parametrize("name", sorted(ATTENTION))
def test_attention(name, device_class):
    *shapes, kwargs = ATTENTION[name]
    assert_matches(Attention(**kwargs), *(torch.randn(shape) for shape in shapes), device=device_class)


def causal_float_mask(length, keys):
    return torch.zeros(length, keys).masked_fill(~torch.ones(length, keys).tril().bool(), float("-inf"))


@pytest.mark.parametrize("mask", [torch.ones(13, 17).tril().bool(), causal_float_mask(13, 17), torch.ones(1, 17).bool(), torch.zeros(13, 17)],
                         ids=["causal_bool", "causal_float", "all_true", "all_zero"])
def test_constant_masks_that_need_no_loads(mask, device_class):
    # as transformers builds GPT-2's (causal) and BERT's (hiding nothing) masks: the kernel skips
    # the masked keys, if any, and binds no mask
    compiled = assert_matches(Attention(mask=mask), *(torch.randn(2, 3, n, 24) for n in (13, 17, 17)), device=device_class)
    assert [k["code"].count("@binding(") for k in compiled.program["kernels"]] == [4]  # q, k, v, out


class SelfAttention(nn.Module):
    """GPT-style causal self-attention: q, k, v are strided views of one Linear output."""

    def __init__(self, dim=24, heads=3):
        super().__init__()
        self.qkv, self.proj, self.heads = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim), heads

    def forward(self, x):
        batch, length, dim = x.shape
        q, k, v = self.qkv(x).split(dim, dim=2)
        q, k, v = (t.view(batch, length, self.heads, dim // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).contiguous().view(batch, length, dim))


def test_gpt_self_attention(device_class):
    compiled = assert_matches(SelfAttention(), torch.randn(2, 70, 24), device=device_class)
    # qkv, attention reading the head views in place (no copies of q, k, v) and writing the
    # merged heads' layout (no contiguous() copy), proj; 70 tokens are two tiles of keys, so the
    # "gpu" class's kernel splits them (tiled_splits) and its merge writes through those strides
    assert compiled.stats["dispatches"] == 3


class MultiheadAttention(nn.Module):
    def __init__(self, mask=None, **kwargs):
        super().__init__()
        self.attention = nn.MultiheadAttention(24, 3, batch_first=True)
        self.register_buffer("mask", mask)
        self.kwargs = kwargs

    def forward(self, x, memory):
        out, weights = self.attention(x, memory, memory, attn_mask=self.mask, **self.kwargs)
        return out if weights is None else (out, weights)


MULTIHEAD = {
    "weights": {},  # exports as bmm + softmax, and returns the head-averaged weights too
    "no_weights": dict(need_weights=False),  # exports as scaled_dot_product_attention
    "mask": dict(need_weights=False, mask=bool_mask(13, 17)),
}


@pytest.mark.parametrize("name", sorted(MULTIHEAD))
def test_multihead_attention(name, device_class):
    assert_matches(MultiheadAttention(**MULTIHEAD[name]).eval(), torch.randn(2, 13, 24), torch.randn(2, 17, 24), device=device_class)


def test_attention_dropout_is_unsupported():
    with pytest.raises(KumaError, match="dropout_p"):
        assert_matches(Attention(dropout_p=0.5), *(torch.randn(1, 5, 8) for _ in range(3)))


class Pad(nn.Module):
    def __init__(self, pad, value):
        super().__init__()
        self.pad, self.value = pad, value

    def forward(self, x):
        # a transposed view, so the pad reads through strides
        return F.pad(x.transpose(2, 3), self.pad, value=self.value)


PADS = {
    "grow": ((1, 2, 3, 0), 0.0),
    "grow_all_dims": ((1, 2, 0, 1, 2, 0, 1, 1), -1.5),
    "crop": ((-1, -2, 0, -3), 0.0),
    "crop_and_grow": ((2, -3, -1, 2), 0.5),
}


@pytest.mark.parametrize("name", sorted(PADS))
def test_constant_pad(name):
    assert_matches(Pad(*PADS[name]), torch.randn(2, 3, 7, 9))


class ScaleInPlace(nn.Module):
    """forward() divides its input in place, then uses it: torch.export returns the mutated input
    before the real output, which must not be taken for it (issue 13: the Linear was dropped)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(37, 11)

    def forward(self, x):
        x /= 255.0
        return self.fc(x)


def test_an_input_mutated_in_place_compiles_like_pytorch():
    compiled = assert_matches(ScaleInPlace(), torch.rand(3, 37) * 255)
    assert compiled.stats["weight_bytes"] > 37 * 11 * 4 and compiled.stats["ops"] >= 2


class CountCalls(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("calls", torch.zeros(1))

    def forward(self, x):
        self.calls.add_(1)
        return x * self.calls


def test_a_buffer_mutated_in_place_is_state():
    # the first run from the buffer's initial value; later runs and reset() in tests/test_state.py
    compiled = assert_matches(CountCalls(), torch.randn(4))
    assert [s["name"] for s in compiled.program["state"]] == ["calls"]
