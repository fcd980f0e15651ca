"""A convolution of a channels-last input: the implicit GEMM orders k as (kh, kw, c) and stages B
along k (kernels/conv.py: k_channels_last), and passes/filter_order.py stores its filter channels
last to match; on real WebGPU against PyTorch."""

import re

import pytest
import torch
from torch import nn

from kuma_build.compiler.kernels import conv
from support import assert_matches
from test_operand_order import graph_of


class Downsample(nn.Module):
    """ConvNeXt's downsampling: a layer norm over the channels (computed channels last, so its result
    is stored so), then a convolution of that result read channels first."""

    def __init__(self, channels: int, out: int, kernel: int, stride: int, padding: int = 0, groups: int = 1):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.conv = nn.Conv2d(channels, out, kernel, stride=stride, padding=padding, groups=groups)

    def forward(self, x):
        return self.conv(self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))


CASES = {  # (module, input): none of the sizes a multiple of the tiles
    "2x2 stride 2": (lambda: Downsample(24, 50, 2, 2), (1, 24, 26, 30)),  # tiled, 13 x 15 pixels
    "3x3 padded, 2 groups": (lambda: Downsample(14, 22, 3, 1, padding=1, groups=2), (2, 14, 11, 9)),  # odd K of 63
    "long K, few tiles": (lambda: Downsample(150, 40, 2, 2), (1, 150, 10, 12)),  # K = 600 split over workgroups
    "few pixels": (lambda: Downsample(40, 72, 2, 2), (1, 40, 4, 6)),  # 6 pixels: the thin kernel
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("channels_last", [True, False])
def test_a_conv_of_a_channels_last_input_matches_torch(case, channels_last, monkeypatch):
    monkeypatch.setattr(conv, "K_CHANNELS_LAST", channels_last)
    make, shape = CASES[case]
    torch.manual_seed(0)
    module, x = make(), torch.randn(shape)
    compiled = assert_matches(module, x, device="gpu")
    node = next(n for n in graph_of(module, x).nodes if n.op == "conv2d")
    weight = node.inputs[1]
    assert node.inputs[0].strides[1] == 1  # the norm's result, channels last
    cout, cin, kh, kw = weight.shape
    # the filter is stored [Cout, kh, kw, Cin] where k goes so, else as PyTorch holds it
    assert weight.strides == ((cin * kh * kw, 1, kw * cin, cin) if channels_last else (cin * kh * kw, kh * kw, kw, 1))
    code = next(k["code"] for k in compiled.program["kernels"] if k["name"] == "conv2d")
    # c is k's innermost digit where it goes channels last
    assert bool(re.search(rf"%{cin}u", code)) == channels_last


def test_a_filter_read_twice_stays_as_it_is():
    """A filter that another node reads too is not copied: the convolution reads it channels first
    through k's channels-last order."""

    class Twice(Downsample):
        def forward(self, x):
            return super().forward(x), self.conv.weight * x.mean()

    torch.manual_seed(0)
    module, x = Twice(16, 20, 2, 2), torch.randn(1, 16, 10, 14)
    assert_matches(module, x, device="gpu")
    node = next(n for n in graph_of(module, x).nodes if n.op == "conv2d")
    assert node.inputs[1].is_contiguous()
