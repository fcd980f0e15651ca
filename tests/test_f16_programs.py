"""An f16 build's programs (devices.F16_PROGRAM). "<class>", for every device, is the f32 build's
kernels and plan with the weights sent as f16 and widened to f32 as they are written, so it is never
slower than the f32 build and downloads half the bytes; there a weight that only memory-bound readers
use (an embedding table, a product of a few rows) stays f16, read as words. "gpu-f16" reads the f16
weights natively, for devices with shader-f16 and tensor cores (subgroup matrices): the build writes
it only where some kernel has a subgroup-matrix variant or the products are convolutions (the
runtime takes it nowhere else), and its kernels ship their shader-f16 code alone; the "cpu" class
never has one. Checked on lavapipe (which has shader-f16, so every program runs) and in Chromium,
whose SwiftShader lacks it: the runtime picks the widened program, downloads only its chunks, and
narrows the weights back to their f16 bytes when it stores them in the browser cache."""

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from browser_support import Browser, decode, encode, run_folder
from kuma_build.compiler import compile_module
from kuma_build.compiler.passes.weight_storage import MIN_ELEMENTS
from kuma_build.devices import CPU
from kuma_build.outfolder import chunk_file, expand_copies, read_program, used_chunks
from kuma_build.webgpu import run_program
from support import TOLERANCE, assert_outputs_match, model_config, reference_outputs, run_runtime_script

F16_TOLERANCE = 1e-2  # verify.DEFAULT_TOLERANCE["f16"]


class Mixer(nn.Module):
    """Two linear layers (compute-bound products, so every weight is widened); at 300 rows of 260
    features the first has a subgroup-matrix variant where they are not only shipped where faster
    (conftest.py: matrices_everywhere), the second (70 columns) has none."""

    def __init__(self, features: int = 64, hidden: int = 150):
        super().__init__()
        self.up = nn.Linear(features, hidden)
        self.down = nn.Linear(hidden, 70)

    def forward(self, x):
        return self.down(F.gelu(self.up(x)))


class Tagger(nn.Module):
    """An embedding table and a linear layer of one row (memory-bound: kept f16, read as words)
    beside one of 23 rows (widened), every row of which is read (else passes/narrow_rows.py would
    leave it the one row the head reads)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(300, 48)
        self.mix = nn.Linear(48, 130)
        self.head = nn.Linear(130, 90)

    def forward(self, ids):
        h = F.relu(self.mix(self.embed(ids)))
        return self.head(h[:, -1] + h.mean(dim=1))


def build(module, inputs, precision: str):
    config = dataclasses.replace(model_config(module, inputs), target="auto", precision=precision)
    return compile_module(module, config, 16 << 10), config


def rounded(module):
    """module with the weights an f16 build stores narrower rounded to f16 (those of at least
    weight_storage.MIN_ELEMENTS values; biases stay f32), as the widened program computes with them."""
    copied = copy.deepcopy(module)
    copied.load_state_dict({k: v.half().float() if k.endswith("weight") and v.numel() >= MIN_ELEMENTS else v
                            for k, v in module.state_dict().items()})
    return copied.eval()


@pytest.fixture(scope="module")
def mixer():
    torch.manual_seed(0)
    module, x = Mixer().eval(), torch.randn(37, 64)
    return module, x, build(module, (x,), "f16"), build(module, (x,), "f32")[0]


def test_without_subgroup_matrix_kernels_an_f16_build_has_the_widened_program_of_each_class(mixer):
    _, _, (f16, _), f32 = mixer
    assert list(f16.programs) == ["gpu", "cpu"] and list(f16.manifest["classes"]) == ["gpu", "cpu"]
    for name in ("gpu", "cpu"):
        widened, plain = f16.programs[name], f32.programs[name]
        assert widened["kernels"] == plain["kernels"] and widened["dispatches"] == plain["dispatches"]
        weights = [(w, p) for w, p in zip(widened["buffers"], plain["buffers"]) if p["kind"] == "weight"]
        widen = [(w, p) for w, p in weights if w["kind"] == "widen"]
        assert len(widen) == 2 and all(w["size"] * 2 == p["size"] for w, p in widen)  # sent as f16, f32 on the GPU
    assert [w["storage"] for w in f16.manifest["weights"] if w["name"].endswith("weight")] == ["f16", "f16"]  # the bytes


@pytest.fixture
def wide_mixer(tiles_as_written, matrices_everywhere):
    torch.manual_seed(4)
    module, x = Mixer(260, 200).eval(), torch.randn(300, 260)
    return module, x, build(module, (x,), "f16"), build(module, (x,), "f32")[0]


def test_with_them_gpu_f16_ships_the_shader_f16_code_alone_and_every_program_runs_like_pytorch(wide_mixer):
    module, x, (f16, config), f32 = wide_mixer
    assert list(f16.programs) == ["gpu-f16", "gpu", "cpu"]  # never "cpu-f16": software adapters offer no subgroup matrices
    native = f16.programs["gpu-f16"]["kernels"]
    assert [("f16m" in k, k["name"]) for k in native if k["name"] == "matmul"] == [(True, "matmul"), (False, "matmul")]
    # a kernel reading an f16 weight has one code, reading it natively (a browser taking the program has shader-f16)
    readers = [k for k in native if k["name"] == "matmul"]
    assert all(k["code"].startswith("enable f16;") and "unpack2x16float" not in k["code"] and set(k) <= {"name", "code", "f16m"}
               for k in readers)
    assert f16.programs["gpu"]["kernels"] == f32.programs["gpu"]["kernels"]
    files = f16.files()
    assert {"gpu-f16.js", "gpu.js", "cpu.js"} <= set(files) and "cpu-f16.js" not in files
    assert '"gpu-f16": () => import("./gpu-f16.js")' in files["index.js"].decode()

    expected = reference_outputs(module, config, {"x": x})
    exact = reference_outputs(rounded(module), config, {"x": x})
    chunks = [c.data for c in f16.chunks]
    for name, program in f16.programs.items():
        actual = list(run_program(program, {"x": x.numpy()}, chunks=chunks).values())  # gpu-f16: the f16 FMA code
        assert_outputs_match(actual, expected, F16_TOLERANCE)
        if name != "gpu-f16":  # f32 arithmetic on the f16 weights: f32 accuracy against them
            assert_outputs_match(actual, exact, TOLERANCE)


def test_weights_of_memory_bound_readers_stay_f16_words():
    torch.manual_seed(1)
    module, ids = Tagger().eval(), torch.randint(0, 300, (1, 23))
    (f16, config), f32 = build(module, (ids,), "f16"), build(module, (ids,), "f32")[0]
    for name in ("gpu", "cpu"):
        widened, plain = f16.programs[name], f32.programs[name]
        kinds = [(w["kind"], w["size"] / p["size"]) for w, p in zip(widened["buffers"], plain["buffers"])
                 if p["kind"] == "weight" and p["size"] >= 4096]
        # the table and the one-row layer's weight stored f16 (half the bytes, on the GPU too); the 23-row one widened
        assert sorted(kinds) == [("weight", 0.5), ("weight", 0.5), ("widen", 0.5)], kinds
    expected = reference_outputs(module, config, {"ids": ids})
    exact = reference_outputs(rounded(module), config, {"ids": ids})
    chunks = [c.data for c in f16.chunks]
    for name in ("gpu", "cpu"):
        actual = list(run_program(f16.programs[name], {"ids": ids.numpy()}, chunks=chunks).values())
        assert_outputs_match(actual, expected, F16_TOLERANCE)
        assert_outputs_match(actual, exact, TOLERANCE)


class Stem(nn.Module):
    """A ResNet-style stem: a convolution whose rows of K (3 x 7 x 7 = 147) have an odd length."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 40, 7, stride=2, padding=3)

    def forward(self, image):
        return F.relu(self.conv(image))


def test_rows_of_odd_length_are_padded_in_every_program_and_they_share_the_chunks():
    # a convolution takes no subgroup matrices, but a build whose products are convolutions ships
    # "gpu-f16" for its shader-f16 code (compiler.convolutions_only)
    torch.manual_seed(2)
    module, image = Stem().eval(), torch.randn(1, 3, 29, 31)
    f16, config = build(module, (image,), "f16")
    assert list(f16.programs) == ["gpu-f16", "gpu", "cpu"]
    native = f16.programs["gpu-f16"]
    for name in ("gpu", "cpu"):
        widened = f16.programs[name]
        assert used_chunks(expand_copies(native)) == used_chunks(expand_copies(widened))
        assert [b["size"] for b in widened["buffers"] if b["kind"] == "widen"] == [40 * 148 * 2]  # a zero after each row
        actual = list(run_program(widened, {"image": image.numpy()}, chunks=[c.data for c in f16.chunks]).values())
        assert_outputs_match(actual, reference_outputs(rounded(module), config, {"image": image}), TOLERANCE)
    assert len(f16.chunks) == 1


class Bottleneck(nn.Module):
    """A ResNet bottleneck block and its head: 1 x 1, 3 x 3 and 1 x 1 convolutions, the residual, a
    global average pool and a linear layer of one row (the thin kernel)."""

    def __init__(self, channels: int = 64, inner: int = 32, classes: int = 10):
        super().__init__()
        self.reduce = nn.Conv2d(channels, inner, 1)
        self.conv = nn.Conv2d(inner, inner, 3, padding=1)
        self.expand = nn.Conv2d(inner, channels, 1)
        self.head = nn.Linear(channels, classes)

    def forward(self, image):
        y = F.relu(self.conv(F.relu(self.reduce(image))))
        return self.head(F.relu(image + self.expand(y)).mean(dim=(2, 3)))


def test_a_build_whose_products_are_convolutions_ships_gpu_f16_for_their_shader_f16_code():
    # no kernel takes subgroup matrices (gemm_matrix.worthwhile), but the convolutions' shader-f16
    # code was faster than the f32 kernels on ResNet-50 (compiler.convolutions_only), so the build
    # writes "gpu-f16", which the runtime takes where the adapter has shader-f16 and tensor cores
    torch.manual_seed(5)
    module, image = Bottleneck().eval(), torch.randn(1, 64, 13, 11)
    f16, config = build(module, (image,), "f16")
    assert list(f16.programs) == ["gpu-f16", "gpu", "cpu"]
    native = f16.programs["gpu-f16"]["kernels"]
    assert not any("f16m" in k for k in native)
    convolutions = [k for k in native if k["name"] == "conv2d"]
    assert convolutions and all(k["code"].startswith("enable f16;") for k in convolutions)
    expected = reference_outputs(module, config, {"image": image})
    chunks = [c.data for c in f16.chunks]
    for name, program in f16.programs.items():
        actual = list(run_program(program, {"image": image.numpy()}, chunks=chunks).values())  # gpu-f16: f16 arithmetic
        assert_outputs_match(actual, expected, F16_TOLERANCE)


class TiedLM(nn.Module):
    """A token embedding gathered and used as the output projection (GPT-2's tied weights): its
    product of 18 rows makes it compute-bound, so the widened program widens it."""

    def __init__(self):
        super().__init__()
        self.table = nn.Embedding(301, 64)

    def forward(self, tokens):
        return torch.tanh(self.table(tokens)) @ self.table.weight.t()


@pytest.mark.browser
def test_a_widened_weight_larger_than_a_binding_is_sent_as_f16_pages(tmp_path):
    # bindings of at most 32 KiB: the 301 x 64 table, stored for the product as 64 rows of 301 padded
    # to 302 (77 KB as f32 on the GPU, 38.7 KB as sent), takes 3 pages of at most 8192 values, each
    # sent as f16 and widened into its own buffer
    limit = 32 << 10
    torch.manual_seed(3)
    module, tokens = TiedLM().eval(), torch.randint(0, 301, (2, 9))
    config = dataclasses.replace(model_config(module, [tokens], name="tied"), precision="f16")
    compiled = compile_module(module, config, devices=[dataclasses.replace(CPU, binding_bytes=limit)])
    widened = compiled.programs["cpu"]
    assert [b["size"] for b in widened["buffers"] if b["kind"] == "widen"] == [2 * 8192, 2 * 8192, 2 * (64 * 302 - 2 * 8192)]
    expected = reference_outputs(rounded(module), config, {"tokens": tokens})
    on_lavapipe = run_program(widened, {"tokens": tokens.numpy()}, chunks=[c.data for c in compiled.chunks])
    assert_outputs_match(list(on_lavapipe.values()), expected, TOLERANCE)
    in_chromium = run_folder(compiled.write(tmp_path), {"tokens": tokens.numpy().astype("int32")})
    assert in_chromium.facts["deviceClass"] == "cpu" and "cpu.js" in in_chromium.facts["fetched"]
    assert_outputs_match(list(in_chromium.outputs.values()), expected, TOLERANCE)


@pytest.mark.browser
def test_chromium_without_shader_f16_loads_the_widened_program_and_caches_its_f16_bytes(mixer, tmp_path):
    module, x, (f16, config), _ = mixer
    root = f16.write(tmp_path)
    program = read_program(root, "cpu")
    own = sorted(chunk_file(program["chunks"][i]["id"]) for i in used_chunks(expand_copies(program)))
    result = run_folder(root, {"x": x.numpy()})
    assert result.facts["deviceClass"] == "cpu", result.facts["adapter"]  # SwiftShader: software, no shader-f16
    assert "cpu.js" in result.facts["fetched"] and not (root / "cpu-f16.js").exists()
    assert sorted(f for f in result.facts["fetched"] if f.startswith("weights/")) == own
    assert_outputs_match(list(result.outputs.values()), reference_outputs(rounded(module), config, {"x": x}), TOLERANCE)

    # stored in the cache after the load (read back from the GPU, narrowed to f16 again: every chunk
    # must hash as it came, or it is not stored), the second load downloads nothing
    driver = Browser("load_faults.mjs")
    try:
        request = {"scenario": "cache", "root": str(root.parent), "root2": str(root.parent), "model": root.name,
                   "chunks": [], "inputs": {"x": encode(x.numpy())}}
        reply = driver.request(request, "scenario cache")
    finally:
        driver.close()
    first, second, _ = reply["loads"]
    for load in (first, second):
        assert load["ok"], load.get("error")
        assert_outputs_match([decode(o) for o in load["outputs"].values()], reference_outputs(rounded(module), config, {"x": x}), TOLERANCE)
    assert sorted(first["served"]["files"]) == sorted(f.split("/")[-1] for f in own)
    assert second["served"] == {"count": 0, "bytes": 0, "files": []}
    assert sorted(first["keys"]) == sorted(f.split("/")[-1].removesuffix(".bin") for f in own)


PICK = """
import { loadModel } from "./runtime.mjs";
const MATRIX = "chromium-experimental-subgroup-matrix";
const configs = [{ componentType: "f16", resultComponentType: "f32", M: 16, N: 16, K: 16 }];
const cases = { tensorCores: [["shader-f16", MATRIX], configs], f16Only: [["shader-f16"], configs], matricesNoConfig: [["shader-f16", MATRIX], []], none: [[], []] };
const picked = {};
for (const classes of [["gpu-f16", "gpu", "cpu"], ["gpu", "cpu"]]) {
  for (const [name, [features, matrixConfigs]] of Object.entries(cases)) {
    for (const deviceClass of ["gpu", "cpu"]) {
      const device = { features: new Set(features), adapterInfo: { vendor: "nvidia", architecture: "hopper", subgroupMinSize: 32, subgroupMaxSize: 32, subgroupMatrixConfigs: matrixConfigs } };
      const key = `${classes.length} ${name} ${deviceClass}`;
      const modules = Object.fromEntries(classes.map((n) => [n, async () => { picked[key] = n; throw new Error("stop"); }]));
      const shared = { model: "m", classes, inputs: [], outputs: [], chunks: [] };
      await loadModel(shared, modules, [], { device, deviceClass, cache: false }).catch(() => {});
    }
  }
}
console.log(JSON.stringify(picked));
"""


def test_the_runtime_takes_the_f16_program_only_with_shader_f16_and_tensor_cores(tmp_path):
    # load({ device, deviceClass }) with devices of each kind of features, for a build with a
    # "gpu-f16" program and one without (no kernel on subgroup matrices): the class module imported
    picked = run_runtime_script(tmp_path, PICK)
    assert {key: name for key, name in picked.items() if name.endswith("-f16")} == {"3 tensorCores gpu": "gpu-f16"}
    assert len(picked) == 16 and all(name == key.split()[-1] for key, name in picked.items() if key != "3 tensorCores gpu")


FEATURES = """
import { loadModel } from "./runtime.mjs";
const MATRIX = "chromium-experimental-subgroup-matrix";
const limits = { maxStorageBufferBindingSize: 1 << 20, maxBufferSize: 1 << 20, maxStorageBuffersPerShaderStage: 8, maxComputeWorkgroupStorageSize: 16384 };
const info = { vendor: "nvidia", architecture: "hopper", subgroupMinSize: 32, subgroupMaxSize: 32,
  subgroupMatrixConfigs: [{ componentType: "f16", resultComponentType: "f32", M: 16, N: 16, K: 16 }] };
let asked = null;
const adapter = { features: new Set(["shader-f16", MATRIX]), info, limits,
  requestDevice: async (descriptor) => { asked = descriptor; throw new Error("stop"); } };
Object.defineProperty(globalThis, "navigator", { value: { gpu: { requestAdapter: async () => adapter } }, configurable: true });
const program = (kernels) => ({ buffers: [16], dispatches: [[0, [0], [1, 1, 1]]], kernels, inputs: [], outputs: [], chunks: [], copies: [] });
const asks = {};
for (const [name, kernels] of Object.entries({ matrices: [{ name: "matmul", code: "", f16m: "enable f16;" }], convolutions: [{ name: "conv2d", code: "" }] })) {
  const modules = { "gpu-f16": async () => ({ program: program(kernels) }), gpu: async () => ({ program: program([{ name: "x", code: "" }]) }) };
  asked = null;
  await loadModel({ model: "m", classes: ["gpu-f16", "gpu"], inputs: [], outputs: [], chunks: [] }, modules, [], { cache: false }).catch(() => {});
  asks[name] = asked.requiredFeatures ?? [];
}
console.log(JSON.stringify(asks));
"""


def test_the_runtime_asks_for_shader_f16_with_the_f16_program_and_for_subgroup_matrices_where_its_kernels_use_them(tmp_path):
    asks = run_runtime_script(tmp_path, FEATURES)
    assert asks == {"matrices": ["shader-f16", "chromium-experimental-subgroup-matrix"], "convolutions": ["shader-f16"]}
