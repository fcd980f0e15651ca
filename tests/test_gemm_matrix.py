"""The tiled product on subgroup matrices (kernels/gemm_matrix.py), the third variant of an f16-weight
build's products (docs/precision.md).

No local WebGPU offers subgroup matrices, so the kernel built on gemm_matrix.py's emulation of the
builtins runs on lavapipe against PyTorch (on the same f16-rounded weights): odd sizes, partial
tiles and K steps, split K, a batch, bias and fused epilogues, each operand layout the staging
handles, weights' left and right matrices (row- and column-major) loaded straight from storage,
after the step before's multiplies, at a step's start or a step ahead (gemm_matrix.WEIGHT_LOADS), or
staged (WEIGHTS_FROM_STORAGE off), with edge tiles and steps past a K slice, a step's fetches
issued before or after its barrier (FETCH_BEFORE_BARRIER) and rounded to f16 as staged or as
fetched (CONVERT_AT_STAGE), results through workgroup memory in rounds of subgroups or all at once
(FINISH_ROUNDS), a group's weights, partial
sums stored straight to the output (also of rows off the blocks: the last tile shifted, or the last
block clamped in a product of fewer rows than the tile), a dim's rows. The kernel builds ship differs from the emulated one only in the lines calling a
primitive, so the indexing tested is the indexing shipped, and Chromium (no subgroup matrices)
runs the widened program of a build carrying it (devices.F16_PROGRAM). Only f16-weight products
of the "gpu" class's tiled kernel with enough blocks carry the variant (the "gpu-f16" program,
which a build writes only then); f32 builds are as before.
"""

import dataclasses

import pytest
import torch
from torch import nn

from browser_support import run_folder
from kuma_build.compiler import compile_module
from kuma_build.compiler.kernels import gemm_matrix
from kuma_build.config import InputSpec
from support import F16_MATH_LAYER_BOUND, assert_only_primitives_differ, assert_outputs_match, model_config, run_compiled


class Batched(nn.Module):  # a weight per batch (no folding into rows), a fused relu
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(2, 48, 720))  # whole matrices: each batch's right matrices from storage

    def forward(self, x):
        return torch.relu(x @ self.weight)


class TransposedInput(nn.Module):  # A's rows are its neighbours in memory: k-major staging
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(260, 200))

    def forward(self, x):
        return x.transpose(0, 1) @ self.weight


class WeightLeft(nn.Module):  # W @ x^T: B's k are neighbours in memory: column-major right matrices
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(208, 256))  # 13 matrices of rows: left ones from storage, the last tile's partly past it

    def forward(self, x):
        return self.weight @ x.transpose(0, 1)


class Residual(nn.Module):  # x + a linear layer of x: the bias and the residual added to the split's partials
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(384, 384)

    def forward(self, x):
        return x + self.fc(x)


class TokensTransposed(nn.Module):  # x^T @ W: A's rows are its neighbours in memory, a block per staged k line
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(600, 2048))

    def forward(self, x):
        return x.transpose(0, 1) @ self.weight


class SharedTransposed(nn.Module):  # x @ W^T with W^T broadcast over the batch: a view, read in place: column-major right matrices from storage
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(208, 272))

    def forward(self, x):
        return torch.relu(x @ self.weight.t().expand(2, 272, 208))



pytestmark = pytest.mark.usefixtures("tiles_as_written", "matrices_everywhere")  # conftest.py: the layers' tiles as their comments give them

LAYERS = {  # module, inputs; the comments say the product's (batch, rows, cols, K), split and tile
    "linear_gelu": (lambda: nn.Sequential(nn.Linear(40, 614), nn.GELU()), lambda: [torch.randn(2, 207, 40)]),  # 1 414 614 40, 32x64
    "batched": (Batched, lambda: [torch.randn(2, 164, 48)]),  # 2 164 720 48
    "split_k": (lambda: nn.Linear(260, 200), lambda: [torch.randn(300, 260)]),  # 1 300 200 260, 4 slices
    "transposed_input": (TransposedInput, lambda: [torch.randn(260, 300)]),
    "weight_left": (WeightLeft, lambda: [torch.randn(300, 256)]),
    "shared_transposed": (SharedTransposed, lambda: [torch.randn(2, 150, 272)]),
    "stored_edges": (lambda: nn.Linear(272, 400), lambda: [torch.randn(300, 272)]),  # 300 400 272, 4 slices of 80, 64x64
    "conv": (lambda: nn.Conv2d(64, 128, 3, padding=1), lambda: [torch.randn(1, 64, 28, 28)]),  # 1 128 784 576, 64x64
    # weights stored with a zero after each row of odd length (passes/weight_storage.py): K = 147, 263 columns
    "padded_stem": (lambda: nn.Conv2d(3, 128, 7, stride=2, padding=3), lambda: [torch.randn(1, 3, 112, 112)]),  # 1 128 3136 147
    "padded_columns": (lambda: nn.Linear(256, 263), lambda: [torch.randn(300, 256)]),  # 1 300 263 256
    "grouped_conv": (lambda: nn.Conv2d(64, 128, 3, padding=1, groups=2), lambda: [torch.randn(1, 64, 28, 28)]),  # 2 64 784 288, 4 slices: a group's weight rows after the last's
    "bert_ffn": (lambda: nn.Linear(768, 3072), lambda: [torch.randn(128, 768)]),  # 128x128: 8 blocks a subgroup, 16 KB staged
    # rows off the blocks, partial sums straight to the output (gemm_matrix.stores_sum)
    "vit_tokens": (lambda: nn.Linear(768, 384), lambda: [torch.randn(1, 197, 768)]),  # 197 384 768, 8 slices, 64x64: the last tile shifted
    "residual_tokens": (Residual, lambda: [torch.randn(1, 197, 384)]),  # 197 384 384, 4 slices, 32x64
    "odd_depth": (lambda: nn.Linear(200, 768, bias=False), lambda: [torch.randn(200, 200)]),  # 200 768 200, 2 slices of 112 and 88, staged weight
    "few_tokens": (lambda: nn.Linear(600, 2048), lambda: [torch.randn(1, 37, 600)]),  # 37 2048 600, 8 slices, 64x64: the last block clamped
    "few_tokens_transposed": (TokensTransposed, lambda: [torch.randn(600, 37)]),  # the same through workgroup memory (no clamp on k-major staging)
    # the subgroup-matrix products' own tile and split (gemm_matrix.TILE, with OWN_TILE): 32 x 128, 161 rows (the last tile shifted)
    "own_tile": (lambda: nn.Linear(384, 256), lambda: [torch.randn(1, 161, 384)]),  # 161 256 384, 6 slices
}


def compiled_layer(layer: str, precision: str = "f16", target: str = "gpu"):
    make, make_inputs = LAYERS[layer]
    torch.manual_seed(0)
    module, inputs = make().eval(), make_inputs()
    config = dataclasses.replace(model_config(module, inputs), precision=precision, target=target)
    return compile_module(module, config), config, inputs, module


def matrix_kernels(compiled) -> list[dict]:
    return [k for k in compiled.program["kernels"] if "f16m" in k]


@pytest.mark.parametrize("layer", [layer for layer in LAYERS if layer != "own_tile"])  # own_tile: its own test, below
def test_emulated_kernel_matches_pytorch(layer, monkeypatch):
    assert_emulated_kernel_matches_pytorch(layer, monkeypatch)


@pytest.mark.parametrize("layer, knob, value, sign", [  # gemm_matrix's knobs off their defaults; sign: a line only that path has
    ("stored_edges", "WEIGHT_LOADS", "ahead", "(a0,cb_0_0,"),  # right matrices loaded a step ahead, with the step before's fetches: edge tiles, a last slice of 32 k in a step of 80
    ("weight_left", "WEIGHT_LOADS", "ahead", "(ca_0_0,b0,"),  # left ones so, the last tile partly past the weight's rows
    ("shared_transposed", "WEIGHT_LOADS", "start", "wb0+(k0+0u)*1u,"),  # column-major right ones at a step's start, a batch
    ("stored_edges", "WEIGHTS_FROM_STORAGE", False, "fn fetch_b("),  # the weight staged: 300 x 400, split K
    ("batched", "WEIGHTS_FROM_STORAGE", False, "fn fetch_b("),  # a weight a batch staged, 164 rows
    ("few_tokens", "FETCH_BEFORE_BARRIER", True, "stage_b(li+512u,fb2);\nif(k0+"),  # both sides' fetches before the barrier: 37 rows, 8 slices of K 600
    ("linear_gelu", "CONVERT_AT_STAGE", True, "->vec4<f32>{"),  # fetches kept f32 until staged: 207 rows, K 40, a fused GELU
    ("batched", "CONVERT_AT_STAGE", True, "tile_a[at]=f16(v);"),  # the same, a value at a time: K 48, a weight a batch
    ("transposed_input", "FINISH_ROUNDS", 4, "tile_c:array<f32,1024>"),  # results through tile_c in rounds of half the subgroups (else all at once)
])
def test_emulated_kernel_with_a_knob_matches_pytorch(layer, knob, value, sign, monkeypatch):
    assert sign not in matrix_kernels(compiled_layer(layer)[0])[0]["f16m"]  # the default takes the other path
    monkeypatch.setattr(gemm_matrix, knob, value)
    assert_emulated_kernel_matches_pytorch(layer, monkeypatch, sign)


def test_weights_loaded_ahead_only_where_registers_allow(monkeypatch):
    """BERT's 128 x 128 tiles: a second step of right matrices would pass gemm_matrix.REGISTERS, so
    "ahead" loads them as "end" does."""
    monkeypatch.setattr(gemm_matrix, "WEIGHT_LOADS", "ahead")
    ahead = matrix_kernels(compiled_layer("bert_ffn")[0])[0]["f16m"]
    monkeypatch.setattr(gemm_matrix, "WEIGHT_LOADS", "end")
    assert ahead == matrix_kernels(compiled_layer("bert_ffn")[0])[0]["f16m"]


def assert_emulated_kernel_matches_pytorch(layer: str, monkeypatch, sign: str = "emulated_multiply_add"):
    monkeypatch.setattr(gemm_matrix, "BACKEND", gemm_matrix.EMULATED)
    compiled, config, inputs, module = compiled_layer(layer)
    assert matrix_kernels(compiled) and all("emulated_multiply_add" in k["f16m"] and sign in k["f16m"] for k in matrix_kernels(compiled))
    for param in module.parameters():
        if param.dim() > 1:  # the weights as stored (biases stay f32)
            param.data = param.data.half().float()
    with torch.no_grad():
        expected = [module(*inputs).numpy()]
    assert_outputs_match(run_compiled(compiled, config, inputs, matrix=True), expected, F16_MATH_LAYER_BOUND)


def test_emulated_kernel_of_a_dynamic_product(monkeypatch):
    """A product over a dim's rows: the tiled kernel (with the variant) for more than 8 rows."""
    monkeypatch.setattr(gemm_matrix, "BACKEND", gemm_matrix.EMULATED)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(32, 384), nn.GELU()).eval()  # 700 x 384 x 32 at the max: a 32 x 64 tile
    config = dataclasses.replace(model_config(net, [], "dims"), precision="f16", target="gpu")
    config.inputs, config.dims = [InputSpec("x", (1, "seq", 32), "float32")], {"seq": (1, 700)}
    compiled = compile_module(net, config)
    assert list(compiled.programs) == ["gpu-f16", "gpu"]
    assert [("f16m" in k) for k in compiled.program["kernels"]] == [True, False, False]  # the thin ones have none
    net[0].weight.data = net[0].weight.data.half().float()
    for seq in (700, 301, 9, 1):
        x = torch.randn(1, seq, 32)
        with torch.no_grad():
            expected = [net(x).numpy()]
        assert_outputs_match(run_compiled(compiled, config, [x], matrix=True), expected, F16_MATH_LAYER_BOUND)


@pytest.mark.parametrize("layer, arrays", [  # the arrays its left and right matrices come from and its results go to
    ("transposed_input", ("&tile_a,", "&tile_b,", "&tile_c,")),  # both staged, results through workgroup memory
    ("weight_left", ("&in0,", "&tile_b,", "&tile_c,")),  # the weight's left matrices from storage
    ("bert_ffn", ("&tile_a,", "&in1,", "&out,")),  # the weight's right matrices from storage, partials straight to the output
    ("vit_tokens", ("&tile_a,", "&in1,", "&out,")),  # rows off the blocks: the last tile shifted, still straight to the output
    ("few_tokens", ("&tile_a,", "&tile_b,", "&out,")),  # fewer rows than the tile: the last block clamped
    ("few_tokens_transposed", ("&tile_a,", "&tile_b,", "&tile_c,")),  # k-major rows: no clamp, results through workgroup memory
])
def test_shipped_kernel_differs_from_the_emulated_one_only_in_the_primitives(layer, arrays, monkeypatch):
    real = matrix_kernels(compiled_layer(layer)[0])[0]["f16m"]
    monkeypatch.setattr(gemm_matrix, "BACKEND", gemm_matrix.EMULATED)
    emulated = matrix_kernels(compiled_layer(layer)[0])[0]["f16m"]
    assert_only_primitives_differ(real, emulated, arrays)


def test_only_f16_weight_tiled_products_of_enough_blocks_carry_it():
    assert matrix_kernels(compiled_layer("split_k")[0])
    # f32 and int8 builds have one program; an f16 build for "cpu" (the register-blocked kernel, and
    # software adapters offer no subgroup matrices: devices.py) only the widened one
    for precision, target in (("f32", "gpu"), ("int8", "gpu"), ("f16", "cpu")):
        compiled = compiled_layer("split_k", precision, target)[0]
        assert list(compiled.programs) == [target] and not matrix_kernels(compiled), (precision, target)
    assert gemm_matrix.block_grid(32, 32) is None  # 4 blocks for 8 subgroups: the tiled kernel's two variants only
    assert gemm_matrix.block_grid(128, 128) in ((2, 4), (4, 2)) and gemm_matrix.block_grid(16, 128) == (1, 8)



def test_builds_ship_it_only_where_it_was_measured_faster(monkeypatch):
    """gemm_matrix.worthwhile: a linear layer of a long K (BERT's shape), its partial sums stored
    straight to the output (also ViT's 197 tokens), not a convolution, a short K, nor partial sums
    through workgroup memory."""
    monkeypatch.setattr(gemm_matrix, "ONLY_WHERE_FASTER", True)
    # 128 rows, K 768; 197 rows, K 768, the last tile shifted; 37, K 600, clamped; K 272 (at least MIN_DEPTH, 192)
    for layer in ("bert_ffn", "vit_tokens", "few_tokens", "stored_edges"):
        assert matrix_kernels(compiled_layer(layer)[0]), layer
    # a convolution; K 40; 37 k-major rows (no clamp), 8 slices of K 600 through workgroup memory
    for layer in ("conv", "linear_gelu", "few_tokens_transposed"):
        assert not matrix_kernels(compiled_layer(layer)[0]), layer


def test_linear_layers_on_it_take_its_own_tile_and_split(monkeypatch):
    """In the "-f16" program, a linear layer of at least gemm_matrix.MIN_ROWS rows, whole 128-column
    tiles and a K of at least MIN_DEPTH runs on gemm_matrix.TILE, K split into ceil(SPLIT_SCALE times)
    the slices the tiled kernel's cost model gives that tile (BERT's feed-forward up: 4 -> 6); fewer
    rows keep the cost model's tile and split, and the widened program is the f32 build's."""
    from kuma_build.compiler.kernels import gemm
    from kuma_build.devices import CPU, GPU
    monkeypatch.setattr(gemm_matrix, "OWN_TILE", True)
    monkeypatch.setattr(gemm_matrix, "ONLY_WHERE_FASTER", True)

    def matmul_groups(compiled, program):
        p = compiled.programs[program]
        return [groups for kernel, _, groups in p["dispatches"] if p["kernels"][kernel]["name"] == "matmul"]

    tm, tn = gemm_matrix.TILE
    for rows, own in ((128, True), (64, False)):
        torch.manual_seed(0)
        module, inputs = nn.Linear(768, 3072).eval(), [torch.randn(rows, 768)]
        compiled = compile_module(module, dataclasses.replace(model_config(module, inputs), precision="f16", target="gpu"))
        f32 = compile_module(module, dataclasses.replace(model_config(module, inputs), target="gpu"))
        assert matmul_groups(compiled, "gpu") == matmul_groups(f32, "gpu")  # the widened program: the f32 build's grid
        assert matrix_kernels(compiled), rows
        splits = gemm.choose_split(GPU, 1, rows, 3072, 768, tile=gemm_matrix.TILE)
        own_grid = [3072 // tn, -(-rows // tm), -(-3 * splits // 2)]
        assert (matmul_groups(compiled, "gpu-f16") == [own_grid]) == own, rows
    assert own_grid == [24, 2, 6]  # 64 rows: 32-row tiles, 4 slices then 6, were they taken
    # a K off whole matrices (the weight's matrices not loaded from storage), columns off whole tiles
    assert gemm_matrix.own_tile(GPU, 128, 3072, 768) and not gemm_matrix.own_tile(GPU, 128, 3072, 776)
    assert not gemm_matrix.own_tile(GPU, 128, 3000, 768) and not gemm_matrix.own_tile(CPU, 128, 3072, 768)


def test_emulated_kernel_on_its_own_tile_matches_pytorch(monkeypatch):
    monkeypatch.setattr(gemm_matrix, "OWN_TILE", True)
    compiled = compiled_layer("own_tile")[0]
    assert [d[2] for d in compiled.programs["gpu-f16"]["dispatches"]][0] == [2, 6, 6]  # 2 x 6 tiles of 32 x 128, 6 slices (4 the cost model's)
    assert_emulated_kernel_matches_pytorch("own_tile", monkeypatch)


def test_only_a_build_carrying_it_ships_the_runtime_that_picks_it(tmp_path):
    """index.js ships the whole runtime for a model with f16m kernels, the static one otherwise."""
    for precision, picks in (("f16", True), ("f32", False)):
        index = (compiled_layer("bert_ffn", precision)[0].write(tmp_path / precision) / "index.js").read_text()
        assert ("chromium-experimental-subgroup-matrix" in index) == picks, precision

@pytest.mark.browser
def test_chromium_without_subgroup_matrices_runs_the_widened_program(tmp_path):
    compiled, config, inputs, _ = compiled_layer("split_k")
    assert matrix_kernels(compiled) and list(compiled.programs) == ["gpu-f16", "gpu"]
    run = run_folder(compiled.write(tmp_path), {s.name: t.numpy() for s, t in zip(config.inputs, inputs)})
    # SwiftShader offers neither shader-f16 nor subgroup matrices: the widened program, as lavapipe runs it
    assert_outputs_match(list(run.outputs.values()), run_compiled(compiled, config, inputs, "gpu"))
