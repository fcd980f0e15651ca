"""Weight precision (kuma.toml `precision`, docs/precision.md) on real WebGPU.

- The weight readers are exact: layers compiled with f16 or int8 weights match PyTorch run on
  the same rounded weights (rounded here, independently of the compiler) within the f32
  tolerance: int8 builds, and f16 builds' widened programs (f32 kernels on weights widened at
  load; a memory-bound product's weight kept f16, read as words). The "gpu-f16" program (lavapipe
  has shader-f16) reads the weights natively, and its matrix products (matmul, implicit-GEMM
  convolution) multiply in f16, so they get a bound. Its code is tested here also for products
  without a subgroup-matrix variant (conftest.py: f16_programs_everywhere), as a model's
  "gpu-f16" program ships it for them beside products that have one.
- That code really runs f16 arithmetic: f16 tiles and sums in its WGSL, and results that
  differ from the widened program's.
- Each test model's error against the f32 PyTorch reference stays within its documented bound
  in each program, and its weights shrink to about 1/2 (f16) and 1/4 plus scales (int8).
- kuma.toml's precision reaches the build, the cache keys and `kuma verify`; Chromium
  (SwiftShader, no shader-f16) runs the widened program.
"""

import copy
import dataclasses
import importlib
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import torch
from torch import nn

from browser_support import run_folder
from kuma_build.cache.store import LocalCache
from kuma_build.compiler import compile_module
from kuma_build.compiler.export import build_module, call_order, example_inputs
from kuma_build.config import load_project
from kuma_build.devices import F16_PROGRAM
from support import F16_MATH_LAYER_BOUND, TOLERANCE, assert_outputs_match, model_config, rel_l2, run_compiled
from test_filter_order import Downsample

merge_products = importlib.import_module("kuma_build.compiler.passes.merge_products")  # the module (the package exports its pass)

MODELS_DIR = Path(__file__).parent / "models"
VARIANTS = [("f16", False), ("f16", True), ("int8", False)]  # (precision, the "gpu-f16" program)
# largest relative L2 error against f32 PyTorch per VARIANT (f16's widened program: f32 math, with the
# kernels of target = "cpu"; its "gpu-f16" program: f16 math, with those of "gpu"; int8, "cpu"),
# about 3x the values measured in docs/precision.md
BOUNDS = {
    "mlp": (1e-3, 3e-3, 1.5e-2),
    "convnet": (3e-4, 4e-4, 1.5e-2),
    "resnet": (1e-3, 2e-3, 1.5e-2),  # the "gpu" kernels' convolutions are implicit GEMMs (K up to 4608): f16 math too
    "mobilenet": (6e-4, 2e-3, 1.5e-2),
    "transformer": (3e-4, 8e-4, 5e-3),
    "gpt": (1e-3, 2e-3, 2e-2),
    "unet": (2e-3, 8e-3, 4e-2),
}


def rounded(w: torch.Tensor, precision: str, dim: int) -> torch.Tensor:
    """The weight as the kernels see it: f16-rounded, or int8 with one scale per slice along `dim`."""
    if precision == "f16":
        return w.half().float()
    others = [d for d in range(w.dim()) if d != dim]
    scale = w.abs().amax(dim=others, keepdim=True) / 127
    return torch.round(w / scale).clamp(-127, 127) * scale


def f16_math(program: dict) -> bool:
    """Whether some kernel of the program multiplies in f16: it adds f16 sums (gemm.py's `part`) to
    f32 ones."""
    return any(fold in k["code"] for k in program["kernels"] for fold in ("f32(part", "f32>(part"))


class Linear(nn.Module):  # an odd-sized weight (padding), read through a transposed input
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(37, 41)

    def forward(self, x):
        return self.fc(x.transpose(0, 1))


class RightMatmul(nn.Module):  # x @ w: the channel is w's last dim (stride 1)
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(33, 47))

    def forward(self, x):
        return x @ self.weight


class WideMatmul(nn.Module):  # x @ w on the tiled kernel with 32-column tiles (pairs of f16 columns per fetch)
    def __init__(self, k, n):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(k, n))

    def forward(self, x):
        return x @ self.weight


class LeftMatmul(nn.Module):  # w @ x: the weight is A, read by words of two k
    def __init__(self, m, k):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(m, k))

    def forward(self, x):
        return self.weight @ x


class QueryKey(nn.Module):  # two linear layers of one input, merged into one product (passes/merge_products.py)
    def __init__(self, k, n):
        super().__init__()
        self.q, self.k = nn.Linear(k, n), nn.Linear(k, n)

    def forward(self, x):
        return self.q(x) @ self.k(x).transpose(0, 1)


class Embedding(nn.Module):  # per-row scales of a gathered table
    def __init__(self):
        super().__init__()
        self.table = nn.Embedding(101, 24)

    def forward(self, tokens):
        return self.table(tokens) * 2.0


LAYERS = {  # module, inputs, {weight (merged ones: their parameters joined by "+"): its output-channel dim}, target
    "linear": (Linear, lambda: [torch.randn(37, 5)], {"fc.weight": 0}, "cpu"),  # thin gemm
    "right_matmul": (RightMatmul, lambda: [torch.randn(6, 33)], {"weight": 1}, "cpu"),  # thin gemm
    "long_linear": (lambda: nn.Linear(4608, 24), lambda: [torch.randn(40, 4608)], {"weight": 0}, "gpu"),  # tiled, K = 4608
    "gpu_thin_linear": (lambda: nn.Linear(301, 70), lambda: [torch.randn(1, 301)], {"weight": 0}, "gpu"),  # a decode step's
    # the thin kernel by f16 words: two columns a thread (77, padded), two k a word (a merged weight's; a convolution's
    # on 6 pixels, the weight the wide side, K = 297 padded)
    "gpu_thin_odd_linear": (lambda: nn.Linear(300, 77), lambda: [torch.randn(3, 300)], {"weight": 0}, "gpu"),
    "gpu_thin_merged": (lambda: QueryKey(45, 130), lambda: [torch.randn(4, 45)], {"q.weight+k.weight": 0}, "gpu"),
    "gpu_thin_conv": (lambda: nn.Conv2d(33, 40, 3, padding=1), lambda: [torch.randn(1, 33, 2, 3)], {"weight": 0}, "gpu"),
    # tiled, 16 x 32 tiles
    "gpu_pair_linear": (lambda: nn.Linear(45, 258), lambda: [torch.randn(256, 45)], {"weight": 0}, "gpu"),
    "gpu_pair_matmul": (lambda: WideMatmul(45, 258), lambda: [torch.randn(256, 45)], {"weight": 1}, "gpu"),
    # odd rows (257 columns), stored padded to even (passes/weight_storage.py): the kernels' strides skip the zeros
    "gpu_odd_matmul": (lambda: WideMatmul(43, 257), lambda: [torch.randn(256, 43)], {"weight": 1}, "gpu"),
    # odd K and odd columns, neither a multiple of the tiles: the weight's rows (131 columns) padded
    "gpu_odd_linear": (lambda: nn.Linear(147, 131), lambda: [torch.randn(40, 147)], {"weight": 0}, "gpu"),
    "gpu_left_matmul": (lambda: LeftMatmul(40, 45), lambda: [torch.randn(45, 70)], {"weight": 0}, "gpu"),  # odd K, padded
    # tiled, 16 x 32 tiles: merged weights (test_merged_weight_layout)
    "gpu_pair_merged": (lambda: QueryKey(46, 130), lambda: [torch.randn(256, 46)], {"q.weight+k.weight": 0}, "gpu"),
    "gpu_odd_merged": (lambda: QueryKey(45, 130), lambda: [torch.randn(56, 45)], {"q.weight+k.weight": 0}, "gpu"),  # odd K, padded
    "conv": (lambda: nn.Conv2d(7, 19, 3, padding=1), lambda: [torch.randn(2, 7, 9, 11)], {"weight": 0}, "cpu"),  # direct
    "conv_gemm": (lambda: nn.Conv2d(7, 19, 3, padding=1), lambda: [torch.randn(2, 7, 9, 11)], {"weight": 0}, "gpu"),  # odd K of 63, padded
    # a ResNet stem's K of 3 x 7 x 7 = 147, padded; 20 rows and 15 x 16 pixels, not multiples of the tiles
    "gpu_odd_conv": (lambda: nn.Conv2d(3, 20, 7, stride=2, padding=3), lambda: [torch.randn(1, 3, 29, 31)], {"weight": 0}, "gpu"),
    # tiled, 32 x 32 tiles, 21 rows a group
    "gpu_pair_conv": (lambda: nn.Conv2d(12, 42, 3, padding=1, groups=2), lambda: [torch.randn(2, 12, 37, 37)], {"weight": 0}, "gpu"),
    # a channels-last input: k in (kh, kw, c) order, the filter stored channels last, its odd K of 63 padded
    "gpu_channels_last_conv": (lambda: Downsample(14, 22, 3, 1, padding=1, groups=2), lambda: [torch.randn(2, 14, 11, 9)], {"conv.weight": 0}, "gpu"),
    # direct: filter rows of 7 (padded to 8), 4 and 3 (too short to pad)
    "gpu_depthwise": (lambda: nn.Conv2d(22, 22, 7, padding=3, groups=22), lambda: [torch.randn(1, 22, 9, 11)], {"weight": 0}, "gpu"),
    "gpu_depthwise_3x3": (lambda: nn.Conv2d(120, 120, 3, padding=1, groups=120), lambda: [torch.randn(1, 120, 5, 6)], {"weight": 0}, "gpu"),
    "gpu_conv_transpose": (lambda: nn.ConvTranspose2d(12, 10, 4, stride=2, padding=1), lambda: [torch.randn(1, 12, 5, 7)], {"weight": 1}, "gpu"),
    # the same on a few pixels (at most weight_storage.MEMORY_BOUND flops a weight element): the widened
    # program keeps their filters f16, a row's words loaded before its taps, rows starting on words
    # (7 x 7, padded; 4 x 4) or on odd elements (3 x 3)
    "gpu_few_pixels_depthwise": (lambda: nn.Conv2d(22, 22, 7, padding=3, groups=22), lambda: [torch.randn(1, 22, 2, 3)], {"weight": 0}, "gpu"),
    "gpu_few_pixels_depthwise_3x3": (lambda: nn.Conv2d(120, 120, 3, padding=1, groups=120), lambda: [torch.randn(1, 120, 2, 2)],
                                     {"weight": 0}, "gpu"),
    "gpu_few_pixels_conv_transpose": (lambda: nn.ConvTranspose2d(12, 10, 4, stride=2, padding=1), lambda: [torch.randn(1, 12, 1, 2)],
                                      {"weight": 1}, "gpu"),
    "conv_transpose": (lambda: nn.ConvTranspose2d(12, 10, 3, stride=2), lambda: [torch.randn(1, 12, 5, 6)], {"weight": 1}, "cpu"),
    "embedding": (Embedding, lambda: [torch.randint(0, 101, (3, 7))], {"table.weight": 0}, "cpu"),
}
# the products of the "gpu" class (the "cpu" class has no "-f16" program, so no f16 math)
GEMM_LAYERS = ["long_linear", "gpu_thin_linear", "gpu_thin_odd_linear", "gpu_thin_merged", "gpu_thin_conv", "gpu_pair_linear", "gpu_pair_matmul", "gpu_odd_matmul",
               "gpu_odd_linear", "gpu_left_matmul", "conv_gemm", "gpu_odd_conv", "gpu_pair_conv", "gpu_channels_last_conv", "gpu_pair_merged", "gpu_odd_merged"]


def compiled_layer(layer: str, precision: str):
    """(compiled, config, inputs, module) of a LAYERS entry."""
    make, make_inputs, weights, target = LAYERS[layer]
    module, inputs = make().eval(), make_inputs()
    config = dataclasses.replace(model_config(module, inputs), precision=precision, target=target)
    return compile_module(module, config), config, inputs, module


pytestmark = pytest.mark.usefixtures("tiles_as_written")  # conftest.py: the gpu layers keep the tiles they were sized for

READS = [(layer, precision, native) for layer in LAYERS for precision, native in VARIANTS if not native or LAYERS[layer][3] == "gpu"]


@pytest.mark.parametrize("layer, precision, native", READS)
def test_weight_readers_are_exact(layer, precision, native, f16_programs_everywhere):
    weights, target = LAYERS[layer][2:]
    compiled, config, inputs, module = compiled_layer(layer, precision)
    storage = {w["name"]: w["storage"] for w in compiled.manifest["weights"]}
    assert {name: storage[name] for name in weights} == {name: precision for name in weights}
    assert all(kind == "f32" for name, kind in storage.items() if name not in weights)  # biases stay f32
    f16_program = [target + F16_PROGRAM] if precision == "f16" and target == "gpu" else []
    assert list(compiled.programs) == f16_program + [target]
    program = compiled.programs[target + F16_PROGRAM if native else target]
    # the "-f16" program reads its weights natively; the widened one, f32 or f16 words, as int8 builds read theirs
    assert any("enable f16;" in k["code"] for k in program["kernels"]) == native

    reference = copy.deepcopy(module)
    for name, dim in weights.items():
        for part in name.split("+"):
            param = reference.get_parameter(part)
            param.data = rounded(param.data, precision, dim)
    with torch.no_grad():
        expected = [reference(*inputs).numpy()]
    assert f16_math(program) == (native and layer in GEMM_LAYERS)
    tolerance = F16_MATH_LAYER_BOUND if f16_math(program) else TOLERANCE
    assert_outputs_match(run_compiled(compiled, config, inputs, target + F16_PROGRAM if native else target), expected, tolerance)


@pytest.mark.parametrize("layer", GEMM_LAYERS)
def test_the_f16_program_multiplies_in_f16(layer, f16_programs_everywhere):
    compiled, config, inputs, _ = compiled_layer(layer, "f16")
    program = compiled.programs["gpu-f16"]
    kernel = next(k for k in program["kernels"] if k["name"] in ("matmul", "conv2d"))
    assert f16_math(program)
    tiled = "var<workgroup>tile_a" in kernel["code"]
    assert tiled == ("thin" not in layer)
    assert not tiled or re.search(r"var<workgroup>tile_a:array<(vec\d<)?f16", kernel["code"])  # f16 staged tiles
    f16_math_out, f32_math_out = (run_compiled(compiled, config, inputs, name)[0] for name in ("gpu-f16", "gpu"))
    assert rel_l2(f16_math_out, f32_math_out) > 10 * TOLERANCE  # the device really rounds to f16


WORDS = ("gemm_a_pair", "gemm_b_pair", "let filter_row=")  # what each way of reading f16 weights by words adds to a kernel


WORDS_READ = {  # layer -> what its kernel reads f16 weights by in the widened program (memory-bound products)
    **dict.fromkeys(["gpu_thin_linear", "gpu_thin_odd_linear", "gpu_thin_merged"], "gemm_b_pair"),
    "gpu_thin_conv": "gemm_a_pair",
    **dict.fromkeys(["gpu_few_pixels_depthwise", "gpu_few_pixels_depthwise_3x3", "gpu_few_pixels_conv_transpose"], "let filter_row="),
}


@pytest.mark.parametrize("layer, words", WORDS_READ.items())
def test_kernels_fetch_f16_weight_words_whole(layer, words, f16_programs_everywhere):
    """The widened program keeps the weight of a memory-bound product f16 (passes/weight_storage.py),
    which the thin kernel reads by words of two values, loading each once, also where rows of odd
    length were padded to start on words, and the direct convolution by a filter row's words loaded
    before its taps, picking their halves only where rows too short to pad start on odd elements
    (docs/precision.md); the "gpu-f16" program and f32 builds read elements. test_weight_readers_are_exact
    runs them."""
    compiled = compiled_layer(layer, "f16")[0]
    kernel, native = (next(k for k in compiled.programs[name]["kernels"] if k["name"] in ("matmul", "conv2d", "conv_transpose2d"))
                      for name in ("gpu", "gpu-f16"))
    assert [w for w in WORDS if w in kernel["code"]] == [words]
    assert ("let odd=" in kernel["code"]) == (layer == "gpu_few_pixels_depthwise_3x3")
    assert not any(w in native["code"] for w in WORDS)
    assert not any(w in k["code"] for w in WORDS for k in compiled_layer(layer, "f32")[0].program["kernels"])


def test_merged_weight_layout(monkeypatch, f16_programs_everywhere):
    """f16 builds store a merged weight [K, N], each k's columns together (merge_products.F16_COLUMNS),
    as f32 builds do: the "-f16" program's tiled kernel, on the cost model's tile (no sliced K:
    kernels/gemm.py), reads neighbouring columns, and the widened program takes sliced K as the f32
    build; int8 builds, and f16 ones without F16_COLUMNS, store each column's k together."""
    def weight_load(precision: str, program: str) -> tuple[bool, str]:
        """(sliced K, the tiled kernel's load of B: a native f16 weight through its reader) of the merged product."""
        programs = compiled_layer("gpu_pair_merged", precision)[0].programs
        kernel = programs[program]["kernels"][programs[program]["dispatches"][0][0]]["code"]
        return "partial[" in kernel, re.findall(r"vb=[^;]*;", kernel)[-1]
    assert weight_load("f16", "gpu-f16") == (False, "vb=weight_in1(bk*260u+bn);")  # element (k, n) at k * N + n
    assert weight_load("f16", "gpu") == weight_load("f32", "gpu") == (True, "vb=in1[(bk*260u+bn)/4u];")
    assert weight_load("int8", "gpu") == (False, "vb=weight_in1(bk+bn*46u);")  # at n * K + k
    monkeypatch.setattr(merge_products, "F16_COLUMNS", False)
    assert weight_load("f16", "gpu-f16") == (False, "vb=weight_in1(bk+bn*46u);")

@pytest.mark.parametrize("layer, rows, row, padded", [("gpu_odd_conv", 20, 147, 148), ("gpu_depthwise", 22 * 7, 7, 8),
                                                      ("gpu_depthwise_3x3", 120 * 3, 3, 3), ("gpu_pair_conv", 42, 54, 54),
                                                      ("gpu_channels_last_conv", 22, 63, 64)])
def test_f16_weights_rows_of_odd_length_stored_padded(layer, rows, row, padded):
    """An f16 weight read by words along rows of odd length (7 or more), where its readers are
    memory-bound, is stored with a zero after each row (passes/weight_storage.py), also where the
    widened program widens it (both programs send the same bytes); shorter or even rows, and f32
    builds, as they are."""
    for precision, length in (("f16", padded), ("f32", row)):
        weight = next(w for w in compiled_layer(layer, precision)[0].manifest["weights"] if w["name"] in LAYERS[layer][2])
        assert weight["numel"] == rows * length


@cache
def compiled_model(name: str, precision: str, target: str = "cpu"):
    """(compiled, config, inputs, f32 PyTorch outputs) of a tests/models model (kuma.toml's target
    is "cpu"). For an f16 build for "gpu", compile it where f16_programs_everywhere is in force."""
    model = dataclasses.replace(load_project(MODELS_DIR / "kuma.toml").models[name], precision=precision, target=target)
    net = build_module(model, MODELS_DIR).eval()
    named = example_inputs(model, torch.Generator().manual_seed(1))
    if name == "gpt":  # real token ids over the whole vocabulary
        named["tokens"] = torch.randint(0, 211, model.inputs[0].shape, generator=torch.Generator().manual_seed(5))
    inputs = [named[s.name] for s in model.inputs]
    with torch.no_grad():
        expected = [t.numpy() for t in torch.utils._pytree.tree_leaves(net(*[named[n] for n in call_order(net, model)]))]
    return compile_module(net, model), model, inputs, expected


@pytest.mark.parametrize("precision, native", VARIANTS)
@pytest.mark.parametrize("name", BOUNDS)
def test_model_error_within_documented_bound(name, precision, native, f16_programs_everywhere):
    compiled, config, inputs, expected = compiled_model(name, precision, "gpu" if native else "cpu")
    if native:
        assert f16_math(compiled.programs["gpu-f16"])
    else:
        assert list(compiled.programs) == ["cpu"]
    bound = BOUNDS[name][VARIANTS.index((precision, native))]
    for got, want in zip(run_compiled(compiled, config, inputs), expected):  # the first program: "gpu-f16", or "cpu"
        assert rel_l2(got, want) <= bound


@pytest.mark.parametrize("precision, low, high", [("f16", 0.5, 0.53), ("int8", 0.25, 0.31)])
@pytest.mark.parametrize("name", BOUNDS)
def test_weights_shrink(name, precision, low, high):
    compiled = compiled_model(name, precision)[0]
    f32_bytes = sum(4 * w["numel"] for w in compiled.manifest["weights"])
    assert low <= compiled.stats["weight_bytes"] / f32_bytes <= high


def test_kernel_cache_keys_and_keeps_the_f16_variants(tmp_path, f16_programs_everywhere):
    store = LocalCache(tmp_path)
    model = dataclasses.replace(load_project(MODELS_DIR / "kuma.toml").models["mlp"], target="gpu")
    net = build_module(model, MODELS_DIR)
    first = compile_module(net, dataclasses.replace(model, precision="f16"), kernel_store=store)
    again = compile_module(net, dataclasses.replace(model, precision="f16"), kernel_store=store)
    assert list(again.programs) == ["gpu-f16", "gpu"] and any("enable f16;" in k["code"] for k in again.programs["gpu-f16"]["kernels"])
    assert again.stats["kernels_reused"] == again.stats["kernels_total"]  # both programs' (devices.F16_PROGRAM)
    assert again.programs == first.programs
    int8 = compile_module(net, dataclasses.replace(model, precision="int8"), kernel_store=store)
    assert int8.stats["kernels_reused"] < len(int8.program["kernels"])  # weight-reading kernels differ


def kuma(*args, cwd):
    return subprocess.run([sys.executable, "-m", "kuma_build", *args], cwd=cwd, capture_output=True, text=True)


def test_kuma_toml_precision_builds_verifies_and_rebuilds(tmp_path):
    shutil.copy(MODELS_DIR / "mlp.py", tmp_path)
    (tmp_path / "layer.py").write_text("from torch import nn\n\n\ndef build_model():\n    return nn.Linear(768, 768)\n")
    toml = "".join(f"""[models.{name}]
source = "{source}.py"
factory = "build_model"
precision = "{precision}"
[models.{name}.inputs]
x = {{ shape = {shape}, dtype = "float32" }}
""" for name, source, precision, shape in (("half", "mlp", "f16", [3, 50]), ("quarter", "mlp", "int8", [3, 50]),
                                           ("tensor", "layer", "f16", [128, 768])))
    (tmp_path / "kuma.toml").write_text(toml)
    built = kuma("build", cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    # no product of 3 rows takes subgroup matrices, so no "-f16" program: each class's widened one,
    # f32 kernels and, for the weights of its (memory-bound) products, f16 words (passes/weight_storage.py)
    half = tmp_path / "kuma-out" / "half"
    assert sorted(p.name for p in half.glob("*.js")) == ["cpu.js", "gpu.js", "index.js"]
    for name in ("gpu.js", "cpu.js"):
        kernels = (half / name).read_text()
        assert "enable f16;" not in kernels and "unpack2x16float" in kernels
    # BERT's 128 x 768 x 768 product takes them: "gpu-f16" reads the weight natively, "gpu" widens it
    tensor = tmp_path / "kuma-out" / "tensor"
    assert sorted(p.name for p in tensor.glob("*.js")) == ["cpu.js", "gpu-f16.js", "gpu.js", "index.js"]
    assert "enable f16;" in (tensor / "gpu-f16.js").read_text() and "unpack2x16float" not in (tensor / "gpu-f16.js").read_text()
    verified = kuma("verify", cwd=tmp_path)  # default tolerance follows the precision
    assert verified.returncode == 0 and "FAILED" not in verified.stdout, verified.stdout + verified.stderr
    ran = re.findall(r"\[kuma\] verify tensor\.\S+ \(([\w-]+ kernels)\)", verified.stdout)
    assert ran == ["gpu-f16 kernels", "gpu kernels", "cpu kernels"], verified.stdout  # every program, on lavapipe

    # precision is in the model key: half as int8 is rebuilt, from the kernels quarter already made
    (tmp_path / "kuma.toml").write_text(toml.replace('precision = "f16"', 'precision = "int8"', 1))
    rebuilt = kuma("build", cwd=tmp_path)
    assert re.search(r"\[kuma\] built half in \d+ ms \(kernels 0 compiled / \d+ reused", rebuilt.stdout), rebuilt.stdout
    assert "[kuma] quarter is up to date" in rebuilt.stdout and "[kuma] tensor is up to date" in rebuilt.stdout, rebuilt.stdout
    assert "enable f16;" not in (tmp_path / "kuma-out" / "half" / "gpu.js").read_text()
    assert not (tmp_path / "kuma-out" / "half" / "gpu-f16.js").exists()
    verified = kuma("verify", "half", cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr


@pytest.mark.browser
@pytest.mark.parametrize("name, precision", [("convnet", "f16"), ("gpt", "int8")])
def test_chromium_runs_what_lavapipe_runs(name, precision, tmp_path):
    compiled, config, inputs, expected = compiled_model(name, precision)
    run = run_folder(compiled.write(tmp_path), {s.name: t.numpy() for s, t in zip(config.inputs, inputs)})
    browser = list(run.outputs.values())
    # the same kernels (an f16 build's widened program) and f32 arithmetic as on lavapipe, so the f32 tolerance holds
    assert_outputs_match(browser, run_compiled(compiled, config, inputs))
    assert_outputs_match(browser, expected, BOUNDS[name][VARIANTS.index((precision, False))])
