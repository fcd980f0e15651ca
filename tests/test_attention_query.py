"""A decode attention computing its queries in place (passes/fuse_elementwise.py: _inline_input,
kernels/concat.py: computed_input): the rotation a Llama-style step applies to its
queries, or any elementwise expression of them, evaluated as the attention reads each query element
instead of by a kernel of its own. On lavapipe against PyTorch, fresh random inputs, sizes off the
workgroup's; a query the model also returns keeps its kernel, and the "cpu" class (no such attention
kernel) keeps the concatenation."""

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from support import assert_matches

sys.path.insert(0, str(Path(__file__).parent / "models"))
from llama import rotate  # noqa: E402

HEADS, HEAD_DIM, DIM = 3, 10, 17


class DecodeAttention(nn.Module):
    """One token's queries from a linear layer, shaped [1, heads, 1, head_dim], made by `queries`
    (a rotation by default), attending over given keys and values (and a float mask)."""

    def __init__(self, queries=lambda q, cos, sin: rotate(q, cos, sin), also_return_queries: bool = False):
        super().__init__()
        self.proj = nn.Linear(DIM, HEADS * HEAD_DIM)
        self.queries, self.also = queries, also_return_queries

    def forward(self, x, k, v, cos, sin, mask=None):
        q = self.queries(self.proj(x).view(1, 1, HEADS, HEAD_DIM).transpose(1, 2), cos, sin)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return (out, q) if self.also else out


def inputs(keys: int, mask: bool = False) -> list[torch.Tensor]:
    angles = torch.randn(1, HEAD_DIM // 2)
    tensors = [torch.randn(1, 1, DIM), torch.randn(1, HEADS, keys, HEAD_DIM), torch.randn(1, HEADS, keys, 7),
               angles.cos(), angles.sin()]
    return tensors + ([torch.randn(1, HEADS, 1, keys)] if mask else [])


CASES = {  # name -> (module, keys, mask, kernels past the product)
    "rotation": (lambda: DecodeAttention(), 37, False, ["attention"]),
    # a float mask: the attention's own fourth operand, before the queries' inputs
    "rotation_masked": (lambda: DecodeAttention(), 37, True, ["attention"]),
    # keys split over workgroups (passes/split_keys.py), then combined
    "rotation_split_keys": (lambda: DecodeAttention(), 1100, False, ["attention", "attention_combine"]),
    # an elementwise expression calling a helper function (erf) instead of a rotation
    "elementwise": (lambda: DecodeAttention(lambda q, cos, sin: F.gelu(q) * 2.0 - 0.5), 37, False, ["attention"]),
}


@pytest.mark.parametrize("name", CASES)
def test_attention_computes_its_queries(name):
    make, keys, mask, kernels = CASES[name]
    compiled = assert_matches(make().eval(), *inputs(keys, mask), device="gpu")
    names = [compiled.program["kernels"][k]["name"] for k, _, _ in compiled.program["dispatches"]]
    assert names == ["matmul", *kernels]
    assert "fn computed_at" in compiled.program["kernels"][compiled.program["dispatches"][1][0]]["code"]


def test_queries_the_model_returns_keep_their_kernel():
    compiled = assert_matches(DecodeAttention(also_return_queries=True).eval(), *inputs(37), device="gpu")
    names = [compiled.program["kernels"][k]["name"] for k, _, _ in compiled.program["dispatches"]]
    assert names == ["matmul", "concat", "attention"]


def test_cpu_class_keeps_the_concatenation():
    compiled = assert_matches(DecodeAttention().eval(), *inputs(37), device="cpu")
    assert "concat" in [compiled.program["kernels"][k]["name"] for k, _, _ in compiled.program["dispatches"]]
