"""Fusion passes: elementwise chains become one kernel, and elementwise consumers become the epilogue
of the matmul or convolution they read. Each case checks the exact dispatch count and still runs
on real WebGPU against PyTorch; the cases that must not fuse check that they don't."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from support import Fn, assert_matches


class Layers(nn.Module):
    """Two convs and two linears to build conv/matmul epilogue cases from."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.conv = nn.Conv2d(5, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(5, 6, 1, bias=False)
        self.depthwise = nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.linear = nn.Linear(11, 13)
        self.group_norm = nn.GroupNorm(3, 6)
        self.norm = nn.BatchNorm2d(6).eval()
        with torch.no_grad():
            self.norm.running_mean.uniform_(-1, 1)
            self.norm.running_var.uniform_(0.5, 2)

    def forward(self, x, y):
        return self.fn(self, x, y)


ELEMENTWISE = {  # name -> (fn, x shape, y shape, dispatches)
    "silu_chain": (lambda x, y: F.silu(x) * 2 + y, (3, 7, 5), (5,), 1),
    "hardswish_then_relu": (lambda x, y: F.relu(F.hardswish(x) - y), (2, 3, 9), (2, 3, 9), 1),
    "through_reshape": (lambda x, y: (x.exp().reshape(6, 10) + 1).sigmoid() * y, (3, 4, 5), (6, 10), 1),
    "shared_input": (lambda x, y: (x * y).tanh() + x * 3 - y, (4, 33), (4, 33), 1),
    "two_readers": (lambda x, y: (lambda a: (a + 1) * (a.sum(-1, keepdim=True)))(x.exp()), (3, 5), (1,), 3),
    "transposed_read": (lambda x, y: x.exp().t() + y, (4, 6), (6, 4), 2),
    "broadcast_read": (lambda x, y: x.sum(-1, keepdim=True).exp() * y, (3, 5), (3, 7), 3),  # exp would run 7 times
    "producer_is_output": (lambda x, y: (lambda a: (a, a * y))(x.exp()), (3, 5), (3, 5), 2),
    "integer_chain": (lambda x, y: torch.where(x > y, x * 2, y).floor().int() // 3, (5, 8), (5, 8), 1),
}


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise_fusion(name):
    fn, x_shape, y_shape, dispatches = ELEMENTWISE[name]
    compiled = assert_matches(Fn(fn), torch.randn(x_shape), torch.randn(y_shape))
    assert compiled.stats["dispatches"] == dispatches


def test_binding_limit_splits_the_chain():
    class Sum(nn.Module):
        def __init__(self):
            super().__init__()
            self.weights = nn.ParameterList([nn.Parameter(torch.randn(5, 7)) for _ in range(12)])

        def forward(self, x):
            return sum(x * w for w in self.weights)
    compiled = assert_matches(Sum(), torch.randn(5, 7))
    assert compiled.stats["dispatches"] == 2  # x and 8 weights, then the partial sum and the last 4 weights
    for kernel in compiled.program["kernels"]:
        assert kernel["code"].count("@binding(") <= 10


EPILOGUES = {  # name -> (fn, x shape, y shape, dispatches)
    "conv_relu_residual": (lambda m, x, y: F.relu(m.conv(x) + y), (2, 5, 9, 7), (2, 6, 9, 7), 1),
    # the second conv comes later in the graph than the first, which must move down to read it
    "two_conv_branches": (lambda m, x, y: F.relu(m.conv(x) + m.conv2(x)), (1, 5, 6, 8), (1,), 2),
    "unfolded_batchnorm": (lambda m, x, y: (lambda c: F.relu6(m.norm(c)) + c.sum())(m.conv(x)), (1, 5, 6, 6), (1,), 3),
    "depthwise_hardswish": (lambda m, x, y: F.hardswish(m.depthwise(m.conv(x))), (1, 5, 7, 5), (1,), 2),
    "linear_gelu_residual": (lambda m, x, y: F.gelu(m.linear(x), approximate="tanh") + y, (2, 3, 11), (2, 3, 13), 1),
    "matmul_sigmoid_scale": (lambda m, x, y: torch.sigmoid(x @ y) * 0.5, (3, 17, 9), (9, 21), 1),
    "pool_clone_linear": (lambda m, x, y: m.linear(x.mean((2, 3)).clone()), (2, 11, 4, 4), (1,), 2),
    "conv_read_twice": (lambda m, x, y: (lambda c: (c, c + 1))(m.conv(x)), (1, 5, 4, 4), (1,), 2),
    "conv_transposed_read": (lambda m, x, y: m.conv(x).transpose(2, 3) * y, (1, 5, 4, 6), (6, 4), 2),
    "integer_result": (lambda m, x, y: (m.linear(x) > 0).sum(-1), (4, 11), (1,), 3),
    "conv_group_norm_silu": (lambda m, x, y: F.silu(m.group_norm(m.conv(x))), (2, 5, 7, 6), (1,), 2),
    "layer_norm_gelu_residual": (lambda m, x, y: F.gelu(F.layer_norm(x, (11,))) + y, (3, 4, 11), (4, 11), 1),
}


@pytest.mark.parametrize("name", sorted(EPILOGUES))
def test_epilogue_fusion(name):
    fn, x_shape, y_shape, dispatches = EPILOGUES[name]
    compiled = assert_matches(Layers(fn).eval(), torch.randn(x_shape), torch.randn(y_shape))
    assert compiled.stats["dispatches"] == dispatches


class MergeHeads(nn.Module):
    """Attention per head, heads merged back with transpose + reshape, then a linear layer."""

    def __init__(self, causal: bool):
        super().__init__()
        self.causal = causal
        self.proj = nn.Linear(30, 7)

    def forward(self, q, k, v):
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=self.causal)
        return self.proj(y.transpose(1, 2).reshape(2, 11, 30))


@pytest.mark.parametrize("causal", [False, True])
def test_attention_writes_the_merged_heads_layout(causal, device_class):
    q, k, v = (torch.randn(2, 11, 3, 10) for _ in range(3))
    compiled = assert_matches(MergeHeads(causal), q, k, v, device=device_class)
    assert compiled.stats["dispatches"] == 2  # attention, then the linear layer: no copy between


class PermutedSum(nn.Module):
    """An elementwise result copied contiguous in another order, then read by a softmax."""

    def forward(self, a, b):
        return (a * 2 + b).permute(0, 2, 1).contiguous().softmax(-1)


def test_an_elementwise_kernel_writes_a_permuted_copy_layout(device_class):
    # the add writes the copy's buffer in the copy's order (its record's strided_output), its
    # threads in that order (kernels/elementwise.py: thread_order): add, softmax, no copy between
    compiled = assert_matches(PermutedSum(), torch.randn(2, 7, 5), torch.randn(2, 7, 5), device=device_class)
    assert compiled.stats["dispatches"] == 2


class CopiedHeads(nn.Module):
    """Keys and values copied contiguous before attention (as transformers' GPT-2 cache code does);
    with `keep`, the keys' copy is also returned, so it must stay."""

    def __init__(self, keep: bool):
        super().__init__()
        self.keep = keep

    def forward(self, q, k, v):
        k, v = k.transpose(1, 2).contiguous(), v.transpose(1, 2).contiguous()
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k, v, is_causal=True)
        return (y, k) if self.keep else y


@pytest.mark.parametrize("keep", [False, True])
def test_attention_reads_the_source_of_a_copy(keep, device_class):
    q, k, v = (torch.randn(1, 19, 3, 16) for _ in range(3))
    compiled = assert_matches(CopiedHeads(keep), q, k, v, device=device_class)
    assert compiled.stats["dispatches"] == (2 if keep else 1)  # attention, and the returned copy of the keys when kept
