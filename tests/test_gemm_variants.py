"""The tiled GEMM's variants that bench/gpu/gemm_sweep.py measures (kernels/gemm.py: VECTOR_LOADS,
DOUBLE_BUFFER, STEP, K_GROUPS), each forced onto a tile where it changes the code, on sizes that are not multiples of the
tile or the K step, on real WebGPU against PyTorch. The cost model picks small tiles for these
small products, so the tests force the tile and split as the sweep does."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kuma_build.compiler import compile_module
from kuma_build.compiler.kernels import gemm
from kuma_build.devices import GPU
from support import Fn, assert_matches, model_config, rel_l2, run_compiled

VECTORS = {"VECTOR_LOADS": True}
DOUBLE = {"DOUBLE_BUFFER": True}
GROUPS = {"K_GROUPS": 4}
CASES = {  # name -> (fn, x shape, y shape, tile, split, knobs, vec4 loads expected in the kernel)
    # both operands vec4 (rows, columns and K past the tile and step), K split in 3 uneven slices
    "vectors_both": (lambda x, y: x @ y, (70, 200), (200, 132), (64, 64), 3, VECTORS, ("gemm_a4", "gemm_b4")),
    # a linear layer over a folded batch: B is the transposed weight (scalar), and the residual
    # reads A's buffer one element at a time through its vec4 binding
    "vectors_linear_residual": (lambda x, y: F.linear(x, y[:, :196], y[:, 199]) + x[..., :1], (2, 35, 196), (68, 200),
                                (128, 64), 1, VECTORS, ("gemm_a4",)),
    # batched, and sliced views: B's offset 4 keeps its vec4s aligned; A's offset 1 does not
    "vectors_batched": (lambda x, y: x @ y, (3, 20, 36), (3, 36, 68), (64, 128), 1, VECTORS, ("gemm_a4", "gemm_b4")),
    "vectors_sliced": (lambda x, y: x[:, 1:] @ y[:, 4:], (50, 41), (40, 136), (64, 128), 2, VECTORS, ("gemm_b4",)),
    # 32 k a step: half the tile fits the workgroup memory
    "step32": (lambda x, y: x @ y, (70, 200), (200, 75), (64, 64), 2, {"STEP": 32}, ()),
    "step32_vectors": (lambda x, y: x @ y, (37, 164), (164, 76), (32, 64), 1, {"STEP": 32, **VECTORS}, ("gemm_a4", "gemm_b4")),
    # two halves of workgroup memory: uneven slices, B's columns in runs of 2 (a 32-wide tile), a single step
    "double": (lambda x, y: x @ y.t(), (70, 200), (75, 200), (64, 64), 3, DOUBLE, ()),
    "double_narrow": (lambda x, y: x @ y, (45, 90), (90, 40), (32, 32), 1, DOUBLE, ()),
    "double_one_step": (lambda x, y: x @ y, (40, 13), (13, 70), (32, 64), 1, DOUBLE, ()),
    "double_vectors": (lambda x, y: x @ y, (70, 200), (200, 132), (64, 64), 2, {**DOUBLE, **VECTORS}, ("gemm_a4", "gemm_b4")),
    # K groups adding their sums in workgroup memory: K split in 3 uneven slices too; 32 k a step
    # with vec4 loads; two halves of a rectangular group grid (8 x 16 threads) over a batch; 16
    # groups of 4 x 4 threads (8 x 8 outputs each); 8 x 8 outputs a thread on a 64 x 64 tile, whose
    # sums go through workgroup memory in two pieces; a transposed B (a linear layer's weight)
    "groups": (lambda x, y: x @ y, (70, 200), (200, 75), (32, 32), 3, GROUPS, ()),
    "groups_step32_vectors": (lambda x, y: x @ y, (70, 200), (200, 132), (32, 32), 1, {**GROUPS, "STEP": 32, **VECTORS},
                              ("gemm_a4", "gemm_b4")),
    "groups_double_batched": (lambda x, y: x @ y, (3, 20, 36), (3, 36, 68), (32, 32), 1, {"K_GROUPS": 2, **DOUBLE}, ()),
    "groups_16": (lambda x, y: x @ y, (45, 90), (90, 40), (32, 32), 1, {"K_GROUPS": 16}, ()),
    "groups_pieces": (lambda x, y: x @ y, (70, 100), (100, 75), (64, 64), 2, GROUPS, ()),
    "groups_linear": (lambda x, y: F.linear(x, y), (2, 35, 100), (53, 100), (64, 32), 2, {"K_GROUPS": 8}, ()),
}


@pytest.fixture
def forced(monkeypatch):
    """Set gemm.py's knobs and force its tile and split (restored after the test); the shipped
    sliced K of linear layers off (SLICED_ROWS 0), so only the knobs change the kernel."""
    monkeypatch.setattr(gemm, "SLICED_ROWS", 0)

    def force(tile, split, knobs):
        for knob, value in knobs.items():
            monkeypatch.setattr(gemm, knob, value)
        monkeypatch.setattr(gemm, "choose_tile", lambda g: tile)
        monkeypatch.setattr(gemm, "choose_split", lambda *shape, **_: split)
    return force


@pytest.mark.parametrize("name", sorted(CASES))
def test_variant_matches_pytorch(name, forced):
    fn, x_shape, y_shape, tile, split, knobs, vector_reads = CASES[name]
    forced(tile, split, knobs)
    compiled = assert_matches(Fn(fn), torch.randn(x_shape), torch.randn(y_shape), device="gpu")
    code = next(k["code"] for k in compiled.program["kernels"] if k["name"] == "matmul")
    assert all(f"fn {reader}(" in code for reader in vector_reads)
    assert ("gemm_a4" in code, "gemm_b4" in code) == ("gemm_a4" in vector_reads, "gemm_b4" in vector_reads)
    assert ("var phase" in code) == ("DOUBLE_BUFFER" in knobs)  # the staged half alternates
    assert ("partial[" in code) == ("K_GROUPS" in knobs)  # the groups add their sums


@pytest.mark.parametrize("knobs, tile", [(VECTORS, (64, 64)), (DOUBLE, (64, 64)), (GROUPS, (32, 32))], ids=["vectors", "double", "groups"])
def test_variants_of_f16_math(knobs, tile, forced, f16_programs_everywhere):
    """The "gpu-f16" program's kernel (f16 weights, f32 activations, here read as vec4s or staged in
    two halves, rounded to f16; conftest.py: f16_programs_everywhere) gives the same bits as the
    default kernel: only how the tiles are fetched and staged differs. With K groups each group sums
    its share of a step in f16, so the sums differ by f16 roundings."""
    net, x = nn.Linear(200, 68).eval(), torch.randn(70, 200)
    config = dataclasses.replace(model_config(net, [x], device="gpu"), precision="f16")
    forced(tile, 2, {})
    plain = compile_module(net, config)
    forced(tile, 2, knobs)
    variant = compile_module(net, config)
    code = next(k["code"] for k in variant.programs["gpu-f16"]["kernels"] if k["name"] == "matmul")
    assert ("vec4<f16>(gemm_a4(" in code) == ("VECTOR_LOADS" in knobs) and ("var phase" in code) == ("DOUBLE_BUFFER" in knobs)
    assert ("partial[" in code) == ("K_GROUPS" in knobs)
    outputs = [run_compiled(c, config, [x], "gpu-f16")[0] for c in (plain, variant)]
    if "K_GROUPS" in knobs:
        assert rel_l2(outputs[1], outputs[0]) < 1e-3
    else:
        assert rel_l2(outputs[1], outputs[0]) == 0


def test_tiles_fit_workgroup_memory_at_any_step(monkeypatch):
    """With 32 k a step a 128 x 128 tile would stage 32 KiB: the cost model keeps to the tiles that fit."""
    monkeypatch.setitem(GPU.__dict__, "small_tile_occupancy", 1)  # the 128 x 128 tile it picks without small tiles' occupancy
    g = gemm.Gemm(1, 4096, 4096, 4096, None, None, None, device=GPU)
    assert gemm.choose_tile(g) == (128, 128)
    monkeypatch.setattr(gemm, "STEP", 32)
    tm, tn = gemm.choose_tile(g)
    assert gemm.fits(GPU, tm, tn) and 4 * (tm + tn) * 32 <= GPU.workgroup_bytes


@pytest.mark.parametrize("fn, x_shape, y_shape, vector_reads", [
    (lambda x, y: x @ y[:, 4:] + x[:, :1], (74, 196), (196, 204), ("gemm_a4", "gemm_b4")),  # 74 rows, B's offset 4, a residual
    (lambda x, y: x @ y + 1.0, (130, 300), (300, 132), ("gemm_a4", "gemm_b4")),  # K split by the cost model
    (lambda x, y: torch.addmm(y[0, :68], x.view(-1, 196), y[:, :68]), (2, 37, 196), (196, 72), ("gemm_a4", "gemm_b4")),  # a batch folded into rows, a bias
    (lambda x, y: x[:, 1:] @ y, (61, 199), (198, 68), ("gemm_b4",)),  # A's rows 199 apart from offset 1: no vec4s
], ids=["residual_rows", "split", "folded_batch", "a_unaligned"])
def test_sliced_linear_layers_by_default(fn, x_shape, y_shape, vector_reads):
    """What ships for f32 linear layers of SLICED_MIN_ROWS to SLICED_ROWS rows: SLICED_GROUPS groups on SLICED_TILE
    (group 0 adds the groups' sums through `partial`), SLICED_STEP k a step, A and B fetched as vec4s where aligned;
    sizes off the tile."""
    compiled = assert_matches(Fn(fn), torch.randn(x_shape), torch.randn(y_shape), device="gpu")
    code = next(k["code"] for k in compiled.program["kernels"] if k["name"] == "matmul")
    assert "partial[" in code and "@workgroup_size(16, 8, 2)" in code.replace(" ", "").replace(",", ", ")
    assert ("gemm_a4" in code, "gemm_b4" in code) == ("gemm_a4" in vector_reads, "gemm_b4" in vector_reads)
    # the next step's fetch is unconditional (measured faster on Dawn): past K it reads zeros, past a
    # slice's end ("split") the next slice's values, neither staged
    flat = code.replace(" ", "")
    assert "fa0=fetch_a(li+0u,batch,row0,k0+16u);" in flat and "<k_end){" not in flat


def test_sliced_only_where_measured():
    """Longer and shorter products (4100 and 40 rows), weights whose columns do not take vec4s (70
    columns; a transposed one, whose k are neighbours), convolutions, int8 weights and f16 builds'
    "-f16" programs (tests/test_precision.py: test_merged_weight_layout) keep the tiles the cost
    model picks."""
    for net, x in ((Fn(lambda x, w: x @ w), (torch.randn(4100, 64), torch.randn(64, 96))),
                   (Fn(lambda x, w: x @ w), (torch.randn(40, 64), torch.randn(64, 96))),
                   (Fn(lambda x, w: x @ w), (torch.randn(60, 64), torch.randn(64, 70))),
                   (Fn(lambda x, w: x @ w.t()), (torch.randn(60, 64), torch.randn(96, 64))),
                   (nn.Conv2d(16, 64, 3), (torch.randn(1, 16, 12, 12),))):
        compiled = compile_module(net, model_config(net, list(x), device="gpu"))
        assert all("partial[" not in k["code"] for k in compiled.program["kernels"])
    for net, x in ((nn.Linear(64, 96), torch.randn(4100, 64)), (nn.Conv2d(16, 64, 3), torch.randn(1, 16, 12, 12))):
        compiled = compile_module(net, model_config(net, [x], device="gpu"))
        assert all("partial[" not in k["code"] for k in compiled.program["kernels"])
    net, x = nn.Linear(200, 68).eval(), torch.randn(70, 200)
    compiled = compile_module(net, dataclasses.replace(model_config(net, [x], device="gpu"), precision="int8"))
    assert all("partial[" not in k["code"] for k in compiled.program["kernels"])
