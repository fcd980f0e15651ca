"""Two ceiling probes for the GPU benchmark: one large fp32 matmul (compute-bound) and one large
elementwise add (memory-bound: 2 reads and 1 write per element, no reuse). Inputs only, no
weights, so the built folders stay small enough to carry to the device machine."""

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
