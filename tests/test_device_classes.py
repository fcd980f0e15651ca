"""A default build (kuma.toml target = "auto") carries the kernels of both device classes, each in a
module of its own, and the runtime picks one by the adapter at load: Chromium's SwiftShader is a
software adapter, so it gets the "cpu" kernels and never downloads the "gpu" ones;
load({ deviceClass }) overrides. Both programs match PyTorch, on lavapipe and in Chromium."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from browser_support import run_folder
from kuma_build.compiler import compile_module
from kuma_build.outfolder import program_classes, read_program
from kuma_build.webgpu import run_program
from support import TOLERANCE, assert_outputs_match, model_config, reference_outputs

pytestmark = pytest.mark.browser


class ConvHead(nn.Module):
    """A convolution (an implicit GEMM on "gpu", direct on "cpu"), a norm (a workgroup per row on
    "gpu", a thread per row on "cpu") and a linear layer: the classes' kernels differ throughout."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)
        self.norm = nn.LayerNorm(12)
        self.fc = nn.Linear(12, 7)

    def forward(self, image):
        x = F.relu(self.conv(image)).mean(dim=(2, 3))
        return self.fc(self.norm(x))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    module, image = ConvHead().eval(), torch.randn(2, 3, 13, 11)
    config = model_config(module, [image], name="head", device="auto")
    compiled = compile_module(module, config)
    folder = compiled.write(tmp_path_factory.mktemp("classes"))
    return compiled, folder, {"image": image}, reference_outputs(module, config, {"image": image})


def test_both_classes_are_built_and_share_the_weight_chunks(built):
    compiled, folder, _, _ = built
    assert list(compiled.programs) == ["gpu", "cpu"] and program_classes(folder) == ["gpu", "cpu"]
    gpu, cpu = (read_program(folder, name) for name in ("gpu", "cpu"))
    conv = [next(k["code"] for k in program["kernels"] if k["name"] == "conv2d") for program in (gpu, cpu)]
    assert "var<workgroup> tile_a" in conv[0] and "conv_put" in conv[1]  # an implicit GEMM, a direct kernel
    assert gpu["chunks"] == cpu["chunks"] and len(compiled.chunks) == len(gpu["chunks"])  # the same bytes, shipped once
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
    assert_outputs_match(list(result.outputs.values()), expected, TOLERANCE)


def test_load_option_overrides_the_device_class(built):
    _, folder, inputs, expected = built
    result = run_folder(folder, {k: v.numpy() for k, v in inputs.items()}, {"deviceClass": "gpu"})
    assert result.facts["deviceClass"] == "gpu"
    assert "gpu.js" in result.facts["fetched"] and "cpu.js" not in result.facts["fetched"]
    assert_outputs_match(list(result.outputs.values()), expected, TOLERANCE)


def test_a_class_the_build_lacks_is_a_clear_error(tmp_path):
    module, image = ConvHead().eval(), torch.randn(1, 3, 5, 5)
    folder = compile_module(module, model_config(module, [image], name="gpuonly", device="gpu")).write(tmp_path)
    assert program_classes(folder) == ["gpu"]
    with pytest.raises(AssertionError, match=r'deviceClass: "cpu".*built for gpu \(kuma.toml target\)'):
        run_folder(folder, {"image": image.numpy()}, {"deviceClass": "cpu"})
    result = run_folder(folder, {"image": image.numpy()})  # a build of one class runs it everywhere
    assert result.facts["deviceClass"] == "gpu"
