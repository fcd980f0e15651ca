"""A default build (kuma.toml target = "auto") carries the kernels of both device classes, each in a
module of its own, and the runtime picks one by the adapter at load: Chromium's SwiftShader is a
software adapter, so it gets the "cpu" kernels and never downloads the "gpu" ones;
load({ deviceClass }) overrides. Both programs match PyTorch, on lavapipe and in Chromium."""

import dataclasses
import hashlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from browser_support import run_folder
from kuma_build.compiler import compile_module
from kuma_build.devices import CPU
from kuma_build.outfolder import chunk_file, expand_copies, program_classes, read_program, used_chunks
from kuma_build.webgpu import run_program
from support import TOLERANCE, assert_outputs_match, model_config, reference_outputs

pytestmark = pytest.mark.browser


class ConvHead(nn.Module):
    """A convolution (an implicit GEMM on "gpu", direct on "cpu"), a norm (a workgroup per row on
    "gpu", a thread per row on "cpu") and two linear layers of one input, which "gpu" merges into one
product of their weights side by side (passes/merge_products.py): the classes' kernels differ
throughout, and so do some of their weight bytes."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)
        self.norm = nn.LayerNorm(12)
        self.fc = nn.Linear(12, 7)
        self.gate = nn.Linear(12, 7)

    def forward(self, image):
        x = self.norm(F.relu(self.conv(image)).mean(dim=(2, 3)))
        return torch.cat([self.fc(x), self.gate(x)], 1).softmax(1)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    module, image = ConvHead().eval(), torch.randn(2, 3, 13, 11)
    config = model_config(module, [image], name="head", device="auto")
    compiled = compile_module(module, config)
    folder = compiled.write(tmp_path_factory.mktemp("classes"))
    return compiled, folder, {"image": image}, reference_outputs(module, config, {"image": image})


def test_both_classes_are_built_and_each_reads_only_the_weight_chunks_it_needs(built):
    compiled, folder, _, _ = built
    assert list(compiled.programs) == ["gpu", "cpu"] and program_classes(folder) == ["gpu", "cpu"]
    gpu, cpu = (read_program(folder, name) for name in ("gpu", "cpu"))
    conv = [next(k["code"] for k in compiled.programs[name]["kernels"] if k["name"] == "conv2d") for name in ("gpu", "cpu")]
    assert "var<workgroup>tile_a" in conv[0] and "conv_put" in conv[1]  # an implicit GEMM, a direct kernel
    # index.js lists the chunks of both (chunks of the same bytes once); each class's copies read its own
    assert gpu["chunks"] == cpu["chunks"] and len(compiled.chunks) == len(gpu["chunks"])
    used = {name: used_chunks(expand_copies(read_program(folder, name))) for name in ("gpu", "cpu")}
    assert used["gpu"] != used["cpu"] and set(used["gpu"]) | set(used["cpu"]) == set(range(len(compiled.chunks)))
    # the weights both have (the convolution's, the norm's) lie once, in chunks both read; the merged
    # linear layers and the separate ones each in chunks of their own class (emit.pack_classes)
    shared = set(used["gpu"]) & set(used["cpu"])
    assert shared and len(shared) < len(used["gpu"]) and len(shared) < len(used["cpu"])
    for name in ("gpu", "cpu"):
        sha = [compiled.chunks[i].sha256 for i in used[name]]
        assert compiled.programs[name]["digest"] == hashlib.sha256("".join(sha).encode()).hexdigest()
    assert (folder / "gpu.js").is_file() and (folder / "cpu.js").is_file()
    assert '() => import("./gpu.js")' in (folder / "index.js").read_text()


def test_each_class_runs_like_pytorch_on_lavapipe(built):
    _, folder, inputs, expected = built
    for name in ("gpu", "cpu"):
        actual = run_program(read_program(folder, name), {k: v.numpy() for k, v in inputs.items()}, folder)
        assert_outputs_match(list(actual.values()), expected, TOLERANCE)


def test_swiftshader_gets_the_cpu_kernels_and_downloads_only_them(built):
    _, folder, inputs, expected = built
    result = run_folder(folder, {k: v.numpy() for k, v in inputs.items()})
    assert result.facts["deviceClass"] == "cpu", result.facts["adapter"]
    assert "cpu.js" in result.facts["fetched"] and "gpu.js" not in result.facts["fetched"]
    assert weights_fetched(result) == chunk_files(folder, "cpu")
    assert_outputs_match(list(result.outputs.values()), expected, TOLERANCE)


def test_load_option_overrides_the_device_class(built):
    _, folder, inputs, expected = built
    result = run_folder(folder, {k: v.numpy() for k, v in inputs.items()}, {"deviceClass": "gpu"})
    assert result.facts["deviceClass"] == "gpu"
    assert "gpu.js" in result.facts["fetched"] and "cpu.js" not in result.facts["fetched"]
    assert weights_fetched(result) == chunk_files(folder, "gpu")
    assert_outputs_match(list(result.outputs.values()), expected, TOLERANCE)


def weights_fetched(result) -> list[str]:
    return sorted(file for file in result.facts["fetched"] if file.startswith("weights/"))


def chunk_files(folder, name: str) -> list[str]:
    """The weight files the program of class `name` reads (another class's stay on the server)."""
    program = read_program(folder, name)
    return sorted(chunk_file(program["chunks"][i]["id"]) for i in used_chunks(expand_copies(program)))


def test_a_class_the_build_lacks_is_a_clear_error(tmp_path):
    module, image = ConvHead().eval(), torch.randn(1, 3, 5, 5)
    folder = compile_module(module, model_config(module, [image], name="gpuonly", device="gpu")).write(tmp_path)
    assert program_classes(folder) == ["gpu"]
    with pytest.raises(AssertionError, match=r'deviceClass: "cpu".*built for gpu \(kuma.toml target\)'):
        run_folder(folder, {"image": image.numpy()}, {"deviceClass": "cpu"})
    result = run_folder(folder, {"image": image.numpy()})  # a build of one class runs it everywhere
    assert result.facts["deviceClass"] == "gpu"


class TiedLM(nn.Module):
    """A token embedding read twice: gathered, and as the output projection (GPT-2's tied weights)."""

    def __init__(self):
        super().__init__()
        self.table = nn.Embedding(301, 64)

    def forward(self, tokens):
        h = torch.tanh(self.table(tokens))
        return h @ self.table.weight.t()


def test_a_weight_larger_than_a_binding_is_split_into_pages(tmp_path):
    """With bindings of at most 32 KiB, the 301 x 64 table (77 KB) takes 3 buffers; the gather and
    the matmul read it through page_in<k>() and match PyTorch on lavapipe and in Chromium, and no
    buffer the runtime makes is larger than a binding may be."""
    limit = 32 << 10
    module, tokens = TiedLM().eval(), torch.randint(0, 301, (2, 9))
    config = model_config(module, [tokens], name="tied", device="cpu")
    compiled = compile_module(module, config, devices=[dataclasses.replace(CPU, binding_bytes=limit)])
    program = compiled.program
    assert max(b["size"] for b in program["buffers"]) <= limit
    # the table once: transposed for the product, and the gather reads a view of that (passes/constants.py)
    assert sum(1 for b in program["buffers"] if b["kind"] == "weight") == 3
    assert all("fn page_in" in k["code"] for k in program["kernels"] if k["name"] in ("gather", "matmul"))
    expected = reference_outputs(module, config, {"tokens": tokens})
    on_lavapipe = run_program(program, {"tokens": tokens.numpy()}, chunks=[c.data for c in compiled.chunks])
    assert_outputs_match(list(on_lavapipe.values()), expected, TOLERANCE)
    in_chromium = run_folder(compiled.write(tmp_path), {"tokens": tokens.numpy().astype("int32")})
    assert_outputs_match(list(in_chromium.outputs.values()), expected, TOLERANCE)


def test_only_weights_are_paged():
    """An activation larger than a binding stays one buffer: a device whose limits allow it runs it,
    any other is told at load (tests/test_browser_loading.py: the buffer and the limit are named)."""
    module, tokens = TiedLM().eval(), torch.randint(0, 301, (2, 9))
    config = model_config(module, [tokens], name="tied", device="cpu")
    program = compile_module(module, config, devices=[dataclasses.replace(CPU, binding_bytes=16 << 10)]).program
    assert any(b["kind"] == "output" and b["size"] > 16 << 10 for b in program["buffers"])  # 2 x 9 x 301 logits
    assert all(b["size"] <= 16 << 10 for b in program["buffers"] if b["kind"] == "weight")
