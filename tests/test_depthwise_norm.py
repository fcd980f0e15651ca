"""A depthwise convolution and the layer norm over its channels after it as one kernel
(passes/fuse_channel_norm.py, kernels/depthwise_norm.py): ConvNeXt's block. Each case runs on
real WebGPU against PyTorch and checks the dispatch count; the cases that must keep two kernels
check that they do."""

import copy
import hashlib
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kuma_build.compiler import compile_module
from kuma_build.compiler.kernels import depthwise_norm
from support import TOLERANCE, assert_matches, assert_outputs_match, model_config, run_compiled


class Block(nn.Module):
    """conv (depthwise unless `groups` says otherwise) of x (of an NHWC x permuted when
    `channels_last`), then fn(module, conv result); fn may use norm and a 1 x 1 conv `pointwise`."""

    def __init__(self, channels, fn, kernel=7, stride=1, padding=3, dilation=1, groups=None, bias=True, affine=True,
                 channels_last=False):
        super().__init__()
        self.channels_last = channels_last
        self.pointwise = nn.Conv2d(channels, 8, 1)
        self.conv = nn.Conv2d(channels, channels, kernel, stride, padding, dilation, groups or channels, bias)
        self.norm = nn.LayerNorm(channels, eps=1e-6, elementwise_affine=affine)
        if affine:  # not the default ones and zeros
            with torch.no_grad():
                self.norm.weight.uniform_(0.5, 1.5)
                self.norm.bias.uniform_(-0.5, 0.5)
        self.fn = fn

    def forward(self, x):
        return self.fn(self, self.conv(x.permute(0, 3, 1, 2) if self.channels_last else x))


def convnext(m, y):
    return m.norm(y.permute(0, 2, 3, 1))


CASES = {  # name -> (block, input shape, dispatches, whether the two fuse)
    # 40 channels at 13 x 11 pixels (neither a multiple of the threads: 8 pixels of 32 threads a
    # workgroup, a second channel for 8 of the 32), 143 pixels (the last workgroup 7)
    "convnext": (lambda: Block(40, convnext), (1, 40, 13, 11), 1, True),
    # an input in channels-last order (ConvNeXt's first block reads the stem's norm so), two images
    "channels_last_input": (lambda: Block(40, convnext, channels_last=True), (2, 11, 9, 40), 1, True),
    # 300 channels: 2 pixels a workgroup, 3 channels a thread; stride 2, no bias, no norm affine
    "wide_strided": (lambda: Block(300, convnext, kernel=3, stride=2, padding=1, bias=False, affine=False), (1, 300, 7, 6), 1, True),
    # 520 channels: a pixel a workgroup, 256 threads of 3 channels (the last for 8 threads)
    "widest": (lambda: Block(520, convnext, kernel=3, padding=1), (1, 520, 3, 4), 1, True),
    # a 3 x 5 filter, dilated; two images; rows in (n, w, h) order
    "dilated_transposed_rows": (lambda: Block(24, lambda m, y: m.norm(y.permute(0, 3, 2, 1)), kernel=(3, 5), padding=(2, 4), dilation=2),
                                (2, 24, 9, 10), 1, True),
    # the norm's fused epilogue (GELU and a constant); a norm read back in NCHW order by a 1 x 1
    # convolution (timm's LayerNorm2d), which makes the second dispatch
    "norm_epilogue": (lambda: Block(40, lambda m, y: F.gelu(m.norm(y.permute(0, 2, 3, 1))) + 1.5), (1, 40, 6, 7), 1, True),
    "back_to_nchw": (lambda: Block(33, lambda m, y: m.pointwise(m.norm(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))), (1, 33, 5, 9), 2, True),
    # these keep two kernels: not depthwise, a norm not over the channels, the conv's result read twice
    "grouped": (lambda: Block(40, convnext, groups=20), (1, 40, 6, 5), 2, False),
    "norm_over_width": (lambda: Block(11, lambda m, y: F.layer_norm(y, (y.shape[-1],))), (1, 11, 6, 11), 2, False),
    "conv_read_twice": (lambda: Block(40, lambda m, y: (m.norm(y.permute(0, 2, 3, 1)), y)), (1, 40, 6, 5), 2, False),
    # the norm's epilogue reads the conv's result too (the norm's input, once bound)
    "epilogue_reads_conv": (lambda: Block(40, lambda m, y: (lambda p: m.norm(p) + p)(y.permute(0, 2, 3, 1))), (1, 40, 6, 5), 2, False),
}


@pytest.mark.parametrize("name", CASES)
def test_depthwise_conv_and_channel_norm_fuse(name):
    make, shape, dispatches, fused = CASES[name]
    compiled = assert_matches(make().eval(), torch.randn(shape), device="gpu")
    assert compiled.stats["dispatches"] == dispatches
    assert any(k["name"] == "depthwise_norm" for k in compiled.program["kernels"]) == fused
    assert any("t0_0" in k["code"] for k in compiled.program["kernels"]) == fused  # UNROLL_TAPS: a filter row's loads first


@pytest.mark.parametrize("name", [name for name, case in CASES.items() if case[3]])
def test_taps_in_a_loop(name, monkeypatch):
    """depthwise_norm.UNROLL_TAPS off: a tap at a time in a loop over the filter row, skipping taps outside the image."""
    monkeypatch.setattr(depthwise_norm, "UNROLL_TAPS", False)
    make, shape, dispatches, _ = CASES[name]
    compiled = assert_matches(make().eval(), torch.randn(shape), device="gpu")
    assert compiled.stats["dispatches"] == dispatches
    assert not any("t0_0" in k["code"] for k in compiled.program["kernels"])  # the unrolled row's first load


def test_cpu_class_keeps_two_kernels():
    """A software device switches threads at every barrier, so its rows stay a thread's each."""
    compiled = assert_matches(Block(40, convnext).eval(), torch.randn(1, 40, 13, 11), device="cpu")
    assert compiled.stats["dispatches"] == 2


@pytest.mark.parametrize("native", [False, True])
@pytest.mark.parametrize("channels, kernel, stored", [(40, 7, 40 * 7 * 8), (120, 3, 120 * 9)])
def test_f16_filter(channels, kernel, stored, native, f16_programs_everywhere, monkeypatch):
    """An f16 filter in PyTorch's order (depthwise_norm.FILTER_CHANNELS_LAST off) read exactly: on a
    few pixels (memory-bound, so an f16 build's widened program keeps it f16: passes/weight_storage.py)
    by words a filter row at a time (as conv.py's direct kernel: 7 x 7 filters stored in rows of 8,
    3 x 3 ones as they are, rows starting on odd elements), and natively by elements in the "gpu-f16"
    program (conftest.py: f16_programs_everywhere). test_f16_filter_channels_last reads the filter
    as it ships."""
    monkeypatch.setattr(depthwise_norm, "FILTER_CHANNELS_LAST", False)
    module, x = Block(channels, convnext, kernel, padding=kernel // 2).eval(), torch.randn(1, channels, 1, 2)
    config = dataclasses.replace(model_config(module, [x], device="gpu"), precision="f16")
    compiled = compile_module(module, config)
    weight = next(w for w in compiled.manifest["weights"] if w["name"] == "conv.weight")
    assert weight["storage"] == "f16" and weight["numel"] == stored
    reference = copy.deepcopy(module)
    reference.conv.weight.data = reference.conv.weight.data.half().float()
    with torch.no_grad():
        expected = [reference(x).numpy()]
    program = "gpu-f16" if native else "gpu"
    (kernel_code,) = compiled.programs[program]["kernels"]
    assert ("let c0_filter_row=" in kernel_code["code"]) == (not native)
    assert ("let c0_odd=" in kernel_code["code"]) == (kernel == 3 and not native)
    assert_outputs_match(run_compiled(compiled, config, [x], program), expected, TOLERANCE)


def test_convnext_model():
    """transformers' ConvNextModel at a small config: each block's pair is one kernel."""
    from transformers import ConvNextConfig, ConvNextModel

    class LastHidden(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = ConvNextModel(ConvNextConfig(depths=[2, 1], hidden_sizes=[40, 72], num_stages=2))

        def forward(self, x):
            return self.model(pixel_values=x).last_hidden_state

    compiled = assert_matches(LastHidden().eval(), torch.randn(1, 3, 52, 44), device="gpu")
    names = [compiled.program["kernels"][d[0]]["name"] for d in compiled.program["dispatches"]]
    assert names.count("depthwise_norm") == 3 and names.count("normalize") == 2  # the stem's and the downsampling norm


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("name", ["channels_last_input", "widest", "convnext", "wide_strided"])
def test_filter_channels_last(name, channels_last, monkeypatch):
    """The filter is stored [kh, kw, C] (depthwise_norm.FILTER_CHANNELS_LAST; off, as PyTorch keeps
    it) whichever neighbours the threads take (channels of a channels-last input or of a pixel a
    workgroup; pixels); both read right, each workgroup starting on its own filter row."""
    monkeypatch.setattr(depthwise_norm, "FILTER_CHANNELS_LAST", channels_last)
    make, shape, _, _ = CASES[name]
    module = make().eval()
    compiled = assert_matches(module, torch.randn(shape), device="gpu")
    weight = next(w for w in compiled.manifest["weights"] if w["name"] == "conv.weight")
    filter_ = module.conv.weight.detach()
    stored = filter_.permute(1, 2, 3, 0) if channels_last else filter_
    assert weight["sha256"] == hashlib.sha256(stored.contiguous().numpy().tobytes()).hexdigest()
    assert any("let kh=(k+row)%" in k["code"] for k in compiled.program["kernels"])  # STAGGER_ROWS


@pytest.mark.parametrize("native", [False, True])
def test_f16_filter_channels_last(native, f16_programs_everywhere):
    """An f16 filter stored channels last (as it ships) read exactly: by elements in the widened
    program (memory-bound on 2 pixels, so stored f16) and natively in the "gpu-f16" one."""
    module, x = Block(520, convnext, 3, padding=1).eval(), torch.randn(1, 520, 1, 2)
    config = dataclasses.replace(model_config(module, [x], device="gpu"), precision="f16")
    compiled = compile_module(module, config)
    weight = next(w for w in compiled.manifest["weights"] if w["name"] == "conv.weight")
    assert weight["storage"] == "f16" and weight["numel"] == 520 * 9
    reference = copy.deepcopy(module)
    reference.conv.weight.data = reference.conv.weight.data.half().float()
    with torch.no_grad():
        expected = [reference(x).numpy()]
    assert_outputs_match(run_compiled(compiled, config, [x], "gpu-f16" if native else "gpu"), expected, TOLERANCE)
