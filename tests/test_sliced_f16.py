"""Sliced K for f16 weights (kernels/gemm.py: SLICED_F16, off by default: measured slower on the
H200; on here): the linear layers that f32 builds run on
sliced K take it in f16 builds too, in the variants that multiply with FMAs: the plain code (the
weight read as u32 words, 4 values a vec2 load, f32 math) and the shader-f16 one (a vec4<f16> load,
f16 math). Their subgroup-matrix variant keeps the tile it had, at the split all variants share,
and so its own workgroup grid, which the kernel record carries (f16mGroups) and the runtimes
dispatch when they pick it. Each variant runs on lavapipe against PyTorch on the same f16-rounded
weights (the subgroup-matrix one on gemm_matrix.py's emulation of the builtins), at sizes off the
tiles and K steps.
"""

import dataclasses
import importlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kuma_build.compiler import compile_module
from kuma_build.compiler.kernels import gemm, gemm_matrix
from support import TOLERANCE, assert_outputs_match, model_config, run_compiled

merge_products = importlib.import_module("kuma_build.compiler.passes.merge_products")  # the module (the package exports its pass)

F16_MATH_LAYER_BOUND = 3e-3  # as tests/test_precision.py's: one product with f16 operands against PyTorch


class Merged(nn.Module):  # three linear layers of one input: one product on their weights side by side (passes/merge_products.py)
    def __init__(self, k: int, n: int):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(k, n), nn.Linear(k, n), nn.Linear(k, n)

    def forward(self, x):
        return self.q(x) @ self.k(x).t() + self.v(x)


class LinearGelu(nn.Module):  # a bias and a fused GELU, over a batch folded into the rows
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(200, 260)

    def forward(self, x):
        return F.gelu(self.fc(x))


LAYERS = {  # module, input; the product's rows x columns x K
    "linear_gelu": (LinearGelu, lambda: torch.randn(2, 37, 200)),  # 74 x 260 x 200
    "merged": (lambda: Merged(136, 100), lambda: torch.randn(100, 136)),  # 100 x 300 x 136, the weight [K, N]
    "bert_ffn": (lambda: nn.Linear(768, 3072), lambda: torch.randn(128, 768)),  # BERT-128's feed-forward up: 64 x 64 tiles on matrices
    "wide": (lambda: nn.Linear(384, 2304), lambda: torch.randn(1, 100, 384)),  # 100 x 2304 x 384: 16 x 128 tiles on matrices
}


@pytest.fixture(autouse=True)
def sliced_f16(monkeypatch):
    """The switch on (off by default: measured slower on the H200, kernels/gemm.py)."""
    monkeypatch.setattr(gemm, "SLICED_F16", True)


def compiled_layer(layer: str, precision: str = "f16"):
    make, make_input = LAYERS[layer]
    torch.manual_seed(0)
    module, x = make().eval(), make_input()
    config = dataclasses.replace(model_config(module, [x], device="gpu"), precision=precision)
    return compile_module(module, config), config, x, module


def rounded_reference(module, x) -> list:
    """The module's output with its weights as stored (f16; biases stay f32)."""
    for param in module.parameters():
        if param.dim() > 1:
            param.data = param.data.half().float()
    with torch.no_grad():
        return [module(x).numpy()]


def sliced_kernel(compiled) -> dict:
    """The kernel of the layer's (first) product, the one on the weight."""
    return compiled.program["kernels"][compiled.program["dispatches"][0][0]]


@pytest.mark.parametrize("layer", ["linear_gelu", "merged"])
def test_sliced_variants_match_pytorch(layer):
    """Both FMA variants on sliced K (the groups add their sums: gemm_add0), B's 4 columns one load:
    a vec2 of words in the plain code, a vec4<f16> with shader-f16."""
    compiled, config, x, module = compiled_layer(layer)
    kernel = sliced_kernel(compiled)
    for code in (kernel["code"], kernel["f16"]):
        assert "fn gemm_add0(" in code and "@workgroup_size(8,8,4)" in code and "gemm_b4(" in code
    assert "array<vec2<u32>>" in kernel["code"] and "gemm_b_pair" not in kernel["code"]
    assert "array<vec4<f16>>" in kernel["f16"]
    expected = rounded_reference(module, x)
    assert_outputs_match(run_compiled(compiled, config, [x], False), expected, TOLERANCE)
    assert_outputs_match(run_compiled(compiled, config, [x], True), expected, F16_MATH_LAYER_BOUND)


@pytest.mark.parametrize("layer, sliced, matrix", [
    ("bert_ffn", [48, 4, 4], [48, 2, 4]),  # as on the H200 (docs/performance.md): fewer rows of tiles on matrices
    ("wide", [36, 4, 4], [18, 7, 4]),  # more: on the sliced grid the matrices would miss rows 64 to 99
])
def test_matrix_variant_keeps_its_tile_split_and_grid(layer, sliced, matrix, monkeypatch):
    """The FMA variants on sliced 32 x 64 tiles, the subgroup-matrix one on the tile and at the
    split of 4 it had (the same kernel as without SLICED_F16), dispatched on its own grid (wgpu-py's
    runner picks it as templates/runtime.js does); emulated, it matches PyTorch."""
    monkeypatch.setattr(gemm_matrix, "BACKEND", gemm_matrix.EMULATED)
    compiled, config, x, module = compiled_layer(layer)
    kernel = sliced_kernel(compiled)
    assert [d[2] for d in compiled.program["dispatches"] if compiled.program["kernels"][d[0]] is kernel] == [sliced]
    assert kernel["f16mGroups"] == matrix and "fn gemm_add0(" in kernel["code"]
    monkeypatch.setattr(gemm, "SLICED_F16", False)
    before = compiled_layer(layer)[0]
    assert [d[2] for d in before.program["dispatches"]][0] == matrix
    assert sliced_kernel(before)["f16m"] == kernel["f16m"] and "f16mGroups" not in sliced_kernel(before)
    expected = rounded_reference(module, x)
    assert_outputs_match(run_compiled(compiled, config, [x], True, matrix=True), expected, F16_MATH_LAYER_BOUND)
    assert_outputs_match(run_compiled(compiled, config, [x], False), expected, TOLERANCE)


def test_merged_weight_layout(monkeypatch):
    """f16 builds store a merged weight [K, N] with each k's columns together (passes/merge_products.py:
    F16_COLUMNS), as f32 builds do, sliced K then reading its 4 columns a load and the tiled kernel
    words of two columns; int8 builds, and f16 ones without F16_COLUMNS, each column's k together."""
    kernel = sliced_kernel(compiled_layer("merged")[0])["code"]
    assert "fn gemm_add0(" in kernel and "vb=weight4_in1(bk*300u+bn);" in kernel  # element (k, n) at k * N + n
    kernel = sliced_kernel(compiled_layer("merged", "int8")[0])["code"]
    assert "fn gemm_add0(" not in kernel and "vb=weight_in1(bk+bn*136u);" in kernel  # at n * K + k
    monkeypatch.setattr(gemm, "SLICED_F16", False)
    kernel = sliced_kernel(compiled_layer("merged")[0])["code"]
    assert "fn gemm_add0(" not in kernel and "vb=in1[(bk*300u+bn)>>1u];" in kernel  # words of two columns
    monkeypatch.setattr(merge_products, "F16_COLUMNS", False)
    kernel = sliced_kernel(compiled_layer("merged")[0])["code"]
    assert "fn gemm_add0(" not in kernel and "vb=in1[(bk+bn*136u)>>1u];" in kernel  # words of two k
