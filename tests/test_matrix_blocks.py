"""Weights stored in 16 x 16 blocks for tensor cores (passes/matrix_blocks.py, precision.BLOCK).

An f16 build's "gpu-f16" program stores the weights of its products on subgroup matrices block by
block; its subgroup-matrix kernels (gemm_matrix.py, built on the emulation of the builtins) load a
block's matrix at once and its other code reads element (k, n) at precision.block_position. A BERT encoder layer of 144 tokens (rows off the 32-row tile) runs on
lavapipe in each of the build's three codes against PyTorch on the same f16-rounded weights: the
subgroup-matrix variants, the shader-f16 code, and the widened "gpu" program, whose weights stay
row-major. The blocked bytes and block_position agree, and a weight whose product takes no
tensor cores stays row-major.
"""

import dataclasses

import numpy as np
import torch
from transformers import BertConfig, BertModel

from kuma_build.compiler import compile_module, precision
from kuma_build.compiler.ir.graph import Buffer
from kuma_build.compiler.kernels import gemm_matrix
from support import F16_MATH_LAYER_BOUND, TOLERANCE, assert_outputs_match, model_config, run_compiled


class Encoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        config = BertConfig(hidden_size=384, num_hidden_layers=1, num_attention_heads=6, intermediate_size=1536,
                            vocab_size=64, max_position_embeddings=160)
        self.bert = BertModel(config, add_pooling_layer=False)

    def forward(self, x):
        return self.bert(inputs_embeds=x).last_hidden_state


def test_encoder_with_blocked_weights_matches_pytorch(monkeypatch):
    monkeypatch.setattr(gemm_matrix, "BACKEND", gemm_matrix.EMULATED)
    monkeypatch.setattr(gemm_matrix, "ONLY_WHERE_FASTER", False)  # 144 rows: not where it was measured
    torch.manual_seed(0)
    net, x = Encoder().eval(), torch.randn(1, 144, 384)
    config = dataclasses.replace(model_config(net, [x]), precision="f16", target="gpu")
    compiled = compile_module(net, config)
    native, widened = compiled.programs["gpu-f16"]["kernels"], compiled.programs["gpu"]["kernels"]
    matrix = [k for k in native if "f16m" in k]
    assert len(matrix) == 4  # query-key-value, output, feed-forward up and down
    # each loads its weight's right matrices from the block a row-major offset falls in, 16 apart
    assert all("%1152u*16u,16u,false)" in k["f16m"] or "%384u*16u,16u,false)" in k["f16m"] or "%1536u*16u,16u,false)" in k["f16m"]
               for k in matrix)
    assert all("%16u*16u+" in k["code"] for k in matrix)  # the shader-f16 code reads at block_position
    assert not any("%16u*16u+" in k["code"] for k in widened)
    for param in net.parameters():
        if param.dim() > 1:
            param.data = param.data.half().float()
    with torch.no_grad():
        expected = [net(x).numpy()]
    assert_outputs_match(run_compiled(compiled, config, [x], "gpu-f16", matrix=True), expected, F16_MATH_LAYER_BOUND)
    assert_outputs_match(run_compiled(compiled, config, [x], "gpu-f16"), expected, F16_MATH_LAYER_BOUND)
    assert_outputs_match(run_compiled(compiled, config, [x], "gpu"), expected, TOLERANCE)  # f32 math on the rounded weights


def test_blocked_bytes_and_position():
    """encode writes block (i, j) of a [32, 48] weight as 256 contiguous row-major values, and
    block_position finds each element (k, n) where encode put it."""
    data = torch.arange(32 * 48, dtype=torch.float32)
    buf = Buffer(32 * 48, "f32", "const", data=data, storage="f16", blocked=48)
    stored = np.frombuffer(precision.encode(buf), dtype="<f2").astype(np.float32)
    blocks = data.reshape(2, 16, 3, 16).permute(0, 2, 1, 3).reshape(-1).numpy()
    np.testing.assert_array_equal(stored, blocks)
    position = precision.block_position("k", "n", 48).replace("u", "").replace("/", "//")
    for k, n in ((0, 0), (0, 15), (0, 16), (0, 47), (1, 0), (15, 47), (16, 0), (31, 47), (17, 33)):
        assert stored[eval(position, {"k": k, "n": n})] == k * 48 + n


def test_only_weights_of_products_on_tensor_cores_are_blocked(f16_programs_everywhere):
    """A K of 96 (under gemm_matrix.MIN_DEPTH: no tensor-core variant) stays row-major, and so does
    every weight of a product of 8 rows (the thin kernel: a "gpu-f16" program written all the same,
    conftest.py); the manifest (the "gpu-f16" program's weights) says which weights are blocked, and
    by what row length."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(96, 384), torch.nn.GELU(), torch.nn.Linear(384, 256)).eval()
    for rows, blocked in ((128, {"0.weight": None, "2.weight": 256}), (8, {"0.weight": None, "2.weight": None})):
        x = torch.randn(1, rows, 96)
        compiled = compile_module(net, dataclasses.replace(model_config(net, [x]), precision="f16", target="gpu"))
        assert list(compiled.programs) == ["gpu-f16", "gpu"]
        assert {w["name"]: w.get("blocked") for w in compiled.manifest["weights"] if w["storage"] == "f16"} == blocked
