"""Convolutions (plain, grouped, depthwise, transposed) and batch-norm folding, on real WebGPU against PyTorch."""

import pytest
import torch
from torch import nn

from support import assert_matches


class Conv(nn.Module):
    """One conv layer; `view` picks how the input reaches it (as is, transposed, or a channel slice)."""

    def __init__(self, conv, view=None):
        super().__init__()
        self.conv = conv
        self.view = view or (lambda x: x)

    def forward(self, x):
        return self.conv(self.view(x))


# (in, out, kernel, stride, padding, dilation, groups, bias)
CONV2D = {
    "3x3_pad1": (3, 5, 3, 1, 1, 1, 1, True),
    "stride2_no_pad": (5, 7, 3, 2, 0, 1, 1, True),
    "5x3_kernel_asym_pad": (3, 4, (5, 3), (2, 1), (2, 0), 1, 1, True),
    "dilation2": (4, 6, 3, 1, 2, 2, 1, True),
    "dilation_stride": (3, 5, (3, 2), (2, 3), (1, 2), (2, 3), 1, True),
    "groups": (6, 9, 3, 1, 1, 1, 3, True),
    "depthwise": (7, 7, 3, 2, 1, 1, 7, True),
    "depthwise_multiplier": (5, 10, 5, 1, 2, 1, 5, False),
    "1x1_no_bias": (7, 5, 1, 1, 0, 1, 1, False),
    # several output channels per thread (the direct kernel on small outputs)
    "4_channels_per_thread": (6, 20, 3, 2, 1, 1, 1, True),
    "8_channels_per_thread_groups": (8, 32, 3, 1, (1, 0), 1, 2, True),
    "odd_channels_1x1": (9, 33, 1, 1, 0, 1, 1, True),
}

# larger outputs: the implicit GEMM (gpu) is tiled with many out-channels per group, thin with few
LARGE = {
    "tiled_3x3": (5, 20, 3, 1, 1, 1, 1, True),
    "tiled_strided_dilated_groups": (6, 34, 3, (1, 2), 2, 2, 2, False),
    "tiled_1x1": (7, 17, 1, 1, 0, 1, 1, True),
    "thin_out_channels": (12, 3, 3, 1, 1, 1, 1, True),
    "depthwise": (6, 6, 3, 1, 1, 1, 6, True),  # cpu: 2 pixels per thread, the last one off the image
}


@pytest.mark.parametrize("name", sorted(CONV2D))
def test_conv2d(name, device_class):
    cin, cout, kernel, stride, padding, dilation, groups, bias = CONV2D[name]
    conv = nn.Conv2d(cin, cout, kernel, stride, padding, dilation, groups, bias)
    assert_matches(Conv(conv), torch.randn(2, cin, 13, 11), device=device_class)


@pytest.mark.parametrize("name", sorted(LARGE))
def test_conv2d_large_output(name, device_class):
    cin, cout, kernel, stride, padding, dilation, groups, bias = LARGE[name]
    conv = nn.Conv2d(cin, cout, kernel, stride, padding, dilation, groups, bias)
    assert_matches(Conv(conv, lambda x: x[:, :cin].transpose(2, 3)), torch.randn(1, cin + 1, 75, 37), device=device_class)


@pytest.mark.parametrize("view", ["transposed", "channel_slice"])
def test_conv2d_non_contiguous_input(view, device_class):
    conv = nn.Conv2d(5, 4, 3, padding=1)
    pick = {"transposed": lambda x: x[:, :5].permute(0, 1, 3, 2), "channel_slice": lambda x: x[:, 2:7, 1:]}[view]
    assert_matches(Conv(conv, pick), torch.randn(2, 7, 11, 13), device=device_class)


def test_conv2d_weight_is_a_strided_input(device_class):
    class Functional(nn.Module):
        def forward(self, x, w):
            return torch.nn.functional.conv2d(x, w.transpose(2, 3), stride=(1, 2), padding=1, groups=2)
    assert_matches(Functional(), torch.randn(1, 4, 9, 10), torch.randn(12, 2, 3, 3), device=device_class)


# (in, out, kernel, stride, padding, output_padding, dilation, groups, bias)
CONV_TRANSPOSE2D = {
    "stride2": (5, 3, 3, 2, 0, 0, 1, 1, True),
    "stride2_pad_outpad": (3, 5, 3, 2, 1, 1, 1, 1, True),
    "kernel4_stride2_pad1": (4, 3, 4, 2, 1, 0, 1, 1, False),
    "asym_stride3": (3, 4, (3, 2), (3, 2), (1, 0), (2, 1), 1, 1, True),
    "groups": (6, 4, 3, 2, 1, 1, 1, 2, True),
    "dilation": (3, 2, 3, 1, 1, 0, 2, 1, True),
}


@pytest.mark.parametrize("name", sorted(CONV_TRANSPOSE2D))
def test_conv_transpose2d(name):
    cin, cout, kernel, stride, padding, output_padding, dilation, groups, bias = CONV_TRANSPOSE2D[name]
    conv = nn.ConvTranspose2d(cin, cout, kernel, stride, padding, output_padding, groups, bias, dilation)
    assert_matches(Conv(conv), torch.randn(2, cin, 9, 7))


def test_conv_transpose2d_non_contiguous_input():
    conv = nn.ConvTranspose2d(3, 5, 3, stride=2, padding=1)
    assert_matches(Conv(conv, lambda x: x.permute(0, 1, 3, 2)), torch.randn(1, 3, 7, 9))


def batch_norm(channels: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(channels))
        bn.running_var.copy_(torch.rand(channels) + 0.5)
        bn.weight.copy_(torch.randn(channels))
        bn.bias.copy_(torch.randn(channels))
    return bn


@pytest.mark.parametrize("bias", [True, False])
def test_batchnorm_folds_into_conv(bias):
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, bias=bias), batch_norm(6))
    compiled = assert_matches(model, torch.randn(2, 3, 13, 11))
    assert compiled.stats["dispatches"] == 1


def test_batchnorm_not_folded_when_conv_output_is_reused():
    # folding would change y itself, which the residual also reads
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(5, 5, 3, padding=1), batch_norm(5)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    assert_matches(Residual(), torch.randn(1, 5, 9, 7))


# (in, out, kernel, stride, padding, dilation, groups, bias): 1-D, compiled as 2-D of height 1
CONV1D = {
    "plain": (4, 6, 3, 1, 1, 1, 1, True),
    "strided_dilated": (3, 5, 5, 2, 3, 2, 1, False),
    "groups": (6, 9, 3, 1, 2, 1, 3, True),
    "depthwise": (5, 5, 7, 1, 3, 1, 5, True),
}


@pytest.mark.parametrize("name", sorted(CONV1D))
def test_conv1d(name, device_class):
    cin, cout, kernel, stride, padding, dilation, groups, bias = CONV1D[name]
    conv = nn.Conv1d(cin, cout, kernel, stride, padding, dilation, groups, bias)
    assert_matches(Conv(conv, lambda x: x[:, :cin]), torch.randn(2, cin + 1, 37), device=device_class)


def test_conv1d_batchnorm_and_transposed():
    model = nn.Sequential(nn.Conv1d(3, 8, 3, padding=1), nn.BatchNorm1d(8).eval(), nn.ReLU(), nn.ConvTranspose1d(8, 4, 4, stride=2, padding=1))
    with torch.no_grad():
        model[1].running_mean.copy_(torch.randn(8))
        model[1].running_var.copy_(torch.rand(8) + 0.5)
    assert_matches(model, torch.randn(2, 3, 29))
