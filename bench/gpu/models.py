"""Probes for the GPU benchmark: two ceiling probes, one large fp32 matmul (compute-bound) and one
large elementwise add (memory-bound: 2 reads and 1 write per element, no reuse), with inputs only
so the built folders stay small enough to carry to the device machine; and a linear layer whose
2048 x 2048 weight kuma.toml stores as f16, for the f16-arithmetic kernels."""

from torch import nn


class MatMul(nn.Module):
    def forward(self, a, b):
        return a @ b


class Add(nn.Module):
    def forward(self, a, b):
        return a + b


def build_matmul():
    return MatMul()


def build_add():
    return Add()


def build_linear():
    """A 2048 -> 2048 linear layer without bias: a compute-bound product with a weight, for f16."""
    return nn.Linear(2048, 2048, bias=False)
