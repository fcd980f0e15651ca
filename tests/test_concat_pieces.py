"""Pieces of a concatenation computed in place from their elementwise expressions
(passes/fuse_elementwise.py, kernels/concat.py), on lavapipe against PyTorch: rotary embeddings as
Llama-style models write them, pieces along a middle dim beside plain and constant ones, an
expression calling a helper function, each device class; a piece something else reads too keeps its kernel."""

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kuma_build.cache.store import LocalCache
from kuma_build.compiler import compile_module
from support import assert_matches, assert_outputs_match, model_config, reference_outputs, run_compiled

sys.path.insert(0, str(Path(__file__).parent / "models"))
from llama import Llama, rotate  # noqa: E402


class Rotary(nn.Module):  # queries [1, heads, tokens, head_dim], angles [tokens, head_dim / 2]
    def forward(self, q, cos, sin):
        return rotate(q, cos, sin)


class Mixed(nn.Module):  # along dim 1: a computed piece, a plain input, a constant, a GELU (erf helper)
    def __init__(self):
        super().__init__()
        self.register_buffer("table", torch.randn(2, 3, 5))

    def forward(self, x, y):
        return torch.cat([x * 2.0 + y[:, :4], y, self.table, F.gelu(x[:, :2] - 1.0)], dim=1)


class Gelus(nn.Module):  # two pieces calling erf
    def forward(self, x, y):
        return torch.cat([F.gelu(x), F.gelu(y * 2.0)], dim=1)


class Shared(nn.Module):  # the piece's result is also an output: it stays a kernel of its own
    def forward(self, x):
        doubled = x * 2.0
        return torch.cat([doubled, x], dim=-1), doubled


class Twice(nn.Module):  # one result as two pieces: it stays a kernel of its own, written before both are read
    def forward(self, x):
        doubled = x * 2.0
        return torch.cat([doubled, x, doubled], dim=0)


def kernel_names(compiled) -> list[str]:
    p = compiled.program
    return [p["kernels"][d[0]]["name"] for d in p["dispatches"]]


@pytest.mark.parametrize("device", ["gpu", "cpu"])
def test_rotary_embedding_is_one_kernel(device):
    torch.manual_seed(0)
    compiled = assert_matches(Rotary(), torch.randn(1, 3, 7, 10), torch.randn(7, 5), torch.randn(7, 5), device=device)
    assert kernel_names(compiled) == ["concat"]


def test_pieces_beside_plain_and_constant_ones():
    torch.manual_seed(0)
    compiled = assert_matches(Mixed(), torch.randn(2, 4, 5), torch.randn(2, 6, 5), device="gpu")
    assert kernel_names(compiled) == ["concat"] and "kuma_erf" in compiled.program["kernels"][0]["code"]


def test_two_pieces_calling_one_helper():  # the helper function is written once
    torch.manual_seed(0)
    compiled = assert_matches(Gelus(), torch.randn(3, 5), torch.randn(3, 4), device="gpu")
    assert kernel_names(compiled) == ["concat"]


@pytest.mark.parametrize("module", [Shared(), Twice()])
def test_a_piece_read_elsewhere_keeps_its_kernel(module):
    torch.manual_seed(0)
    compiled = assert_matches(module, torch.randn(3, 5), device="gpu")
    assert sorted(kernel_names(compiled)) == ["concat", "elementwise"]


@pytest.mark.parametrize("device, concats", [("cpu", 2), ("gpu", 0)])
def test_llama_decode_step_takes_no_kernel_for_a_rotation(device, concats):
    """A block: its norms, four products (queries, keys and values merged; the output; gate and up;
    down), the two cache writes (the keys' rotating them as it writes them: tests/test_scatter_source.py),
    the attention (on "gpu" rotating the queries as it reads them: tests/test_attention_query.py; on
    "cpu" a concatenation does)."""
    torch.manual_seed(0)
    model = Llama(vocab=67, dim=48, layers=2, heads=4, kv_heads=2, hidden=100, context=40).eval()
    compiled = assert_matches(model, torch.tensor([[5]]), torch.tensor([3]), device=device)
    names = kernel_names(compiled)
    assert names.count("concat") == concats and names.count("scatter") == 4 and "elementwise" not in names[4:-1]


class Turn(nn.Module):  # a rotation in either direction: the same views, other expressions
    def __init__(self, sign: float):
        super().__init__()
        self.sign = sign

    def forward(self, x, cos, sin):
        x1, x2 = x[..., :5], x[..., 5:]
        return torch.cat([x1 * cos - self.sign * x2 * sin, x2 * cos + self.sign * x1 * sin], -1)


def test_kernel_cache_tells_pieces_apart(tmp_path):
    # the kernel cache's key holds the pieces' expressions (kernels/__init__.py: spec_key): a model
    # whose rotation turns the other way must not get the first one's kernel back
    store = LocalCache(tmp_path)
    inputs = (torch.randn(3, 7, 10), torch.randn(7, 5), torch.randn(7, 5))
    for sign in (1.0, -1.0):
        module = Turn(sign).eval()
        config = model_config(module, inputs, device="gpu")
        compiled = compile_module(module, config, kernel_store=store)
        assert [k["name"] for k in compiled.program["kernels"]] == ["concat"]
        expected = reference_outputs(module, config, {s.name: t for s, t in zip(config.inputs, inputs)})
        assert_outputs_match(run_compiled(compiled, config, inputs), expected)
