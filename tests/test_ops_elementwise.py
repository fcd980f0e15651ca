"""Elementwise ops, broadcasting, type promotion and views, each run on real WebGPU against PyTorch."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from support import Fn, assert_matches


UNARY = {
    "abs": torch.abs, "neg": torch.neg, "exp": torch.exp, "log": lambda x: torch.log(x.abs() + 0.1),
    "sqrt": lambda x: torch.sqrt(x.abs()), "rsqrt": lambda x: torch.rsqrt(x.abs() + 0.1), "relu": F.relu,
    "relu6": F.relu6, "hardtanh": lambda x: F.hardtanh(x, -0.5, 0.7), "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"), "silu": F.silu, "sigmoid": torch.sigmoid,
    "tanh": torch.tanh, "hardswish": F.hardswish, "hardsigmoid": F.hardsigmoid, "leaky_relu": F.leaky_relu,
    "elu": F.elu, "erf": torch.erf, "sin": torch.sin, "cos": torch.cos, "reciprocal": lambda x: 1 / (x.abs() + 0.5),
    "floor": lambda x: torch.floor(x * 3), "ceil": lambda x: torch.ceil(x * 3), "round": lambda x: torch.round(x * 3),
    "sign": torch.sign, "clamp": lambda x: x.clamp(-0.3, 0.4), "clamp_min": lambda x: x.clamp(min=0.1),
    "pow2": lambda x: x ** 2, "pow3": lambda x: x ** 3, "pow_frac": lambda x: x.abs() ** 1.7, "softplus": F.softplus,
    "mish": F.mish, "large_tanh": lambda x: torch.tanh(x * 30), "large_sigmoid": lambda x: torch.sigmoid(x * 100),
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary(name):
    fn = UNARY[name]
    assert_matches(Fn(lambda x, y: fn(x) + 0 * y), torch.randn(3, 5, 67), torch.randn(67))


BINARY = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": lambda a, b: a / (b.abs() + 0.5),
    "pow": lambda a, b: a.abs() ** b, "maximum": torch.maximum, "minimum": torch.minimum,
    "add_alpha_scalar": lambda a, b: torch.add(a, 2.5) - b * 3, "rsub": lambda a, b: 1 - a + b,
    "where": lambda a, b: torch.where(a > b, a, b * 2), "where_scalar": lambda a, b: torch.where(a > 0, a, 0.0) + b,
    "masked_fill": lambda a, b: a.masked_fill(b > 0.5, -1e9) + b,
    "comparisons": lambda a, b: (a > b).float() + (a >= b).float() * 2 + (a < b).float() * 4 + (a <= 0).float() * 8 + (a == a).float() + (a != b).float(),
    "remainder": lambda a, b: torch.remainder(a * 3, b.sign() * (b.abs() + 0.5)) + (a * 9).int() % -4 + (b * 9).int() % 5,
    "logical": lambda a, b: torch.logical_and(a > 0, b > 0).float() + torch.logical_or(a > 1, b < -1).float() + torch.logical_not(a > 0).float(),
}


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_broadcast(name):
    # shapes broadcast both ways, and sizes are not multiples of the workgroup size
    assert_matches(Fn(BINARY[name]), torch.randn(4, 1, 33), torch.randn(7, 1))


def test_non_contiguous_inputs():
    fn = lambda x, y: F.gelu(x.transpose(0, 2)) * y[::2, 1:].t()[None] + x.permute(2, 1, 0)
    assert_matches(Fn(fn), torch.randn(5, 6, 9), torch.randn(10, 7))


def test_fused_chain_and_scalars():
    fn = lambda x, y: ((x * 0.5 + 1.25) / (y.abs() + 2) - 3).sigmoid() * F.silu(x)
    assert_matches(Fn(fn), torch.randn(2, 300), torch.randn(300))


def test_views_reshape_flatten_squeeze():
    fn = lambda x, y: (x.reshape(6, -1).flatten().unsqueeze(0).squeeze(0).view(3, 2, 5, 7) * 2 + y).permute(3, 0, 2, 1).reshape(7, -1)
    assert_matches(Fn(fn), torch.randn(2, 3, 35), torch.randn(7))


def test_split_cat_select_slice():
    def fn(x, y):
        a, b, c = x.split([2, 3, 4], dim=1)
        return torch.cat([c, a * 2, b[:, 1:], y[:, :, 1]], dim=1) + x.select(1, 3).unsqueeze(1)
    assert_matches(Fn(fn), torch.randn(3, 9, 5), torch.randn(3, 2, 4, 5))


def test_many_way_cat():
    fn = lambda x, y: torch.cat([x * i for i in range(11)] + [y], dim=0)
    assert_matches(Fn(fn), torch.randn(2, 3), torch.randn(1, 3))


def test_integer_and_float_mix():
    fn = lambda x, y: x * (torch.arange(x.shape[-1]) % 3) + (y > 0).sum(-1, keepdim=True)
    assert_matches(Fn(fn), torch.randn(4, 10), torch.randn(4, 10))


def test_constant_subgraph_is_folded():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(8, 8))

        def forward(self, x, y):
            mask = torch.ones(8, 8).tril() * (self.w.exp().sum() / 100)
            return x @ mask + y
    compiled = assert_matches(M(), torch.randn(3, 8), torch.randn(8))
    assert compiled.stats["dispatches"] == 1  # the matmul, with the add as its epilogue; the mask is a constant


def test_output_that_is_an_input_or_view():
    fn = lambda x, y: (x, x.t(), y * 2)
    assert_matches(Fn(fn), torch.randn(3, 4), torch.randn(5))


@pytest.mark.parametrize("name", ["gelu", "large_tanh", "pow_frac", "sign"])
def test_vec4_path_for_whole_contiguous_operands(name):
    # 6 x 70 = 420 elements, divisible by 4: loads and stores are vec4, each lane the scalar expression
    fn = UNARY[name]
    compiled = assert_matches(Fn(lambda x, y: fn(x) * y - y), torch.randn(6, 70), torch.randn(6, 70))
    assert "array<vec4<f32>>" in compiled.program["kernels"][-1]["code"]
