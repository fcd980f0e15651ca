"""passes/narrow_rows.py: nodes compute only the rows their readers read, on real WebGPU against PyTorch."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kuma_build.compiler import compile_for
from kuma_build.compiler.export import export
from kuma_build.devices import GPU
from support import assert_matches, model_config


class ClassToken(nn.Module):
    """A ViT-style tail: attention, a residual feed-forward and a norm over 21 tokens, of which a
    classifier reads the first; the last block's rows narrow to that one, its keys do not."""

    def __init__(self, dim: int = 24, heads: int = 3, causal: bool = False):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.norm1, self.norm2, self.final = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.up, self.down, self.head = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim), nn.Linear(dim, 5)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, c))
        x = x + self.down(F.gelu(self.up(self.norm2(x))))
        return self.head(self.final(x)[:, 0])


def rows_of(module: nn.Module, x: torch.Tensor, op: str) -> list[tuple]:
    """The output shapes of one op's nodes in module's "gpu" graph after the passes, in order."""
    config = model_config(module, (x,), device="gpu")
    exported, inputs, outputs = export(module.eval(), config)
    graph = compile_for(GPU, exported, config, inputs, outputs, None).graph
    return [tuple(n.output.shape) for n in graph.nodes if n.op == op]


@pytest.mark.parametrize("device", ["gpu", "cpu"])
def test_class_token_narrows_the_last_block(device):
    torch.manual_seed(0)
    module, x = ClassToken(), torch.randn(1, 21, 24)
    assert_matches(module, x, device=device)
    if device == "gpu":
        # one query row scored against all 21 keys; the norms after it on one row, and every
        # product but the query-key-value one (its keys and values are read whole)
        assert rows_of(module, x, "attention") == [(1, 3, 1, 8)]
        assert rows_of(module, x, "normalize") == [(1, 21, 24), (1, 1, 24), (1, 1, 24)]
        assert [shape[1] for shape in rows_of(module, x, "matmul")] == [21, 1, 1, 1, 1]


def test_causal_attention_keeps_its_rows():
    # a causal row's keys depend on its position: the attention keeps every query row
    torch.manual_seed(1)
    module, x = ClassToken(causal=True), torch.randn(1, 21, 24)
    assert_matches(module, x, device="gpu")
    assert rows_of(module, x, "attention") == [(1, 3, 21, 8)]


class MiddleRows(nn.Module):
    """Rows 5..11 of a norm of a product, read through a transpose: a slice that is not at the start."""

    def __init__(self):
        super().__init__()
        self.linear, self.norm = nn.Linear(16, 12), nn.LayerNorm(12)

    def forward(self, x):
        y = self.norm(torch.relu(self.linear(x)))
        return y[:, 5:12].transpose(1, 2) * 2.0


def test_a_middle_slice_read_through_a_transpose():
    torch.manual_seed(2)
    module, x = MiddleRows(), torch.randn(2, 30, 16)
    assert_matches(module, x, device="gpu")
    assert rows_of(module, x, "normalize") == [(2, 7, 12)]
    # the product is one of 60 rows (2 x 30): rows 5 .. 41 of them span what is read
    assert [shape[1] for shape in rows_of(module, x, "matmul")] == [37]
