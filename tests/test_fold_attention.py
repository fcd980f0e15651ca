"""The attention reads a split-K product's partial sums in place (passes/split_k.py, the attention op's
fold_sums): GPT-2's and BERT's merged query-key-value product, split on the "gpu" class, needs no
split_sum dispatch before the attention. On lavapipe against PyTorch, through each of the attention
kernels (kernels/attention.py's tiled, flash_split and workgroup-per-row kernels, attention_decode.py's)
and in an f16 build's "gpu-f16" program; a split product the attention reads as its mask keeps its sum."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kuma_build.compiler import compile_module
from kuma_build.compiler.kernels import attention
from support import F16_MATH_LAYER_BOUND, TOLERANCE, assert_outputs_match, model_config, reference_outputs, run_compiled


class Block(nn.Module):
    """GPT-2's self-attention: one linear layer for the queries, keys and values, split into heads."""

    def __init__(self, dim: int, heads: int, causal: bool, width: int | None = None):
        super().__init__()
        self.qkv, self.heads, self.causal = nn.Linear(width or dim, 3 * dim), heads, causal

    def forward(self, x):
        (batch, length, _), dim = x.shape, self.qkv.out_features // 3
        q, k, v = (t.view(batch, length, self.heads, dim // self.heads).transpose(1, 2) for t in self.qkv(x).split(dim, -1))
        return F.scaled_dot_product_attention(q, k, v, is_causal=self.causal).transpose(1, 2).reshape(batch, length, dim)


class ScoredMask(nn.Module):
    """An attention whose float mask, one per head, is a split product (K of 300): the attention
    folds no sum into its mask."""

    def forward(self, q, x, y):
        return F.scaled_dot_product_attention(q, q, q, attn_mask=x @ y)


def compiled_names(net, inputs, precision: str = "f32"):
    """(the program's kernel names in dispatch order, compiled, config): built for the "gpu" class and
    checked on lavapipe against PyTorch (f16: the "gpu-f16" program, its products in f16)."""
    config = dataclasses.replace(model_config(net.eval(), inputs, device="gpu"), precision=precision)
    compiled = compile_module(net, config)
    tolerance = F16_MATH_LAYER_BOUND if precision == "f16" else TOLERANCE
    expected = reference_outputs(net, config, {s.name: t for s, t in zip(config.inputs, inputs)})
    assert_outputs_match(run_compiled(compiled, config, inputs), expected, tolerance)
    program = compiled.program
    return [program["kernels"][d[0]]["name"] for d in program["dispatches"]], compiled


def attention_code(compiled) -> str:
    """The attention kernel's WGSL, its spaces taken out (the program's code is shortened)."""
    return next(k["code"] for k in compiled.program["kernels"] if k["name"] == "attention").replace(" ", "")


@pytest.mark.parametrize("dim,heads,batch,length,causal,kernel", [
    (300, 5, 1, 50, False, "tiled"),       # head dim 60: partial steps of 16 dims, a partial query tile
    (300, 5, 1, 37, True, "tiled"),        # GPT-2's causal mask
    (300, 5, 1, 50, False, "split"),       # flash_split (TILED off), the kernel bench/gpu/attention_sweep.py times
    (400, 2, 1, 37, False, "decode"),      # a head dim of 200: past the tiled kernels', attention_decode.py's
    (300, 5, 4, 5, True, "decode"),        # few query rows (decoding's kernel), 20 rows of the product
    (300, 1, 1, 21, False, "workgroup"),   # a head dim past attention_decode.py's: a workgroup a query row
])
def test_attention_reads_split_queries_keys_values(dim, heads, batch, length, causal, kernel, monkeypatch):
    monkeypatch.setattr(attention, "TILED", kernel != "split")
    torch.manual_seed(0)
    names, compiled = compiled_names(Block(dim, heads, causal), [torch.randn(batch, length, dim)])
    assert names == ["matmul", "attention"]
    code = attention_code(compiled)  # the product split: the attention adds up its partials
    assert all(f"fnsum_in{k}(" in code for k in range(3))
    assert ("fnfetch_q(" in code) == (kernel == "tiled") and ("fndot_key(" in code) == (kernel == "split")
    assert ("var<workgroup>dots:" in code) == (kernel == "decode")


def test_f16_program_reads_them_too(f16_programs_everywhere):
    # the "gpu-f16" program's products split as split_k chooses for f16 weights (kernels/gemm_matrix.py)
    torch.manual_seed(0)
    net = Block(300, 5, True)
    net.qkv.weight.data = net.qkv.weight.data.half().float()  # f16 holds them exactly: PyTorch's result on the build's weights
    names, compiled = compiled_names(net, [torch.randn(1, 50, 300)], precision="f16")
    assert list(compiled.programs) == ["gpu-f16", "gpu"] and names == ["matmul", "attention"]
    assert "fnsum_in0(" in attention_code(compiled)


def test_a_split_mask_keeps_its_sum():
    torch.manual_seed(0)
    names, _ = compiled_names(ScoredMask(), [torch.randn(1, 2, 20, 24), torch.randn(2, 20, 300), torch.randn(300, 20)])
    assert names == ["matmul", "split_sum", "attention"]


def test_a_long_sum_stays():
    # a K of 2048: 16 slices, past device.fold_splits for a reader that reads elements more than once
    torch.manual_seed(0)
    names, _ = compiled_names(Block(72, 3, False, width=2048), [torch.randn(1, 37, 2048)])
    assert names == ["matmul", "split_sum", "attention"]
