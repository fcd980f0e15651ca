"""Pooling (max, avg, adaptive avg) and upsampling (nearest, bilinear), on real WebGPU against PyTorch."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kuma_build.errors import KumaError
from support import Fn1, assert_matches


MAX_POOL = {
    "k2": dict(kernel_size=2),
    "k3_s2": dict(kernel_size=3, stride=2),
    "k3_s2_pad1": dict(kernel_size=3, stride=2, padding=1),
    "k3_s2_ceil": dict(kernel_size=3, stride=2, ceil_mode=True),
    "k2_ceil_pad1": dict(kernel_size=2, stride=2, padding=1, ceil_mode=True),
    "k3x2_s1x2": dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 0)),
    "dilation2": dict(kernel_size=3, stride=1, padding=1, dilation=2),
    "dilation3_ceil": dict(kernel_size=2, stride=2, padding=1, dilation=3, ceil_mode=True),
}


@pytest.mark.parametrize("name", sorted(MAX_POOL))
def test_max_pool2d(name):
    # negative values everywhere check that padding never wins the max
    assert_matches(Fn1(lambda x: F.max_pool2d(x - 5, **MAX_POOL[name])), torch.randn(2, 5, 13, 11))


AVG_POOL = {
    "k2": dict(kernel_size=2),
    "k3_s2_pad1_include": dict(kernel_size=3, stride=2, padding=1, count_include_pad=True),
    "k3_s2_pad1_exclude": dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
    "k3_s2_ceil_include": dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=True),
    "k3_s2_ceil_exclude": dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    "k2_ceil_no_pad": dict(kernel_size=2, ceil_mode=True),
    "divisor_override": dict(kernel_size=3, stride=2, padding=1, divisor_override=5),
    "k3x2_asym": dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 1), count_include_pad=False),
}


@pytest.mark.parametrize("name", sorted(AVG_POOL))
def test_avg_pool2d(name):
    assert_matches(Fn1(lambda x: F.avg_pool2d(x, **AVG_POOL[name])), torch.randn(2, 5, 13, 11))


@pytest.mark.parametrize("size", [1, (5, 3), (13, 4), (6, 11), (7, 7)])
def test_adaptive_avg_pool2d(size):
    assert_matches(Fn1(lambda x: F.adaptive_avg_pool2d(x, size)), torch.randn(2, 7, 13, 11))


def test_pooling_non_contiguous_and_unbatched_input():
    fn = lambda x: (F.max_pool2d(x.transpose(2, 3), 3, 2, 1), F.avg_pool2d(x[0, 1:], 2, 2), F.adaptive_avg_pool2d(x[:, :, 1:, ::2], 5))
    assert_matches(Fn1(fn), torch.randn(2, 5, 13, 11))


def test_max_pool2d_indices_are_unsupported():
    with pytest.raises(KumaError, match="indices"):
        assert_matches(Fn1(lambda x: F.max_pool2d(x, 2, return_indices=True)[1].float()), torch.randn(1, 3, 8, 8))


INTERPOLATE = {
    "nearest_x2": dict(scale_factor=2, mode="nearest"),
    "nearest_x1.5": dict(scale_factor=1.5, mode="nearest"),
    "nearest_size": dict(size=(7, 17), mode="nearest"),
    "nearest_down": dict(scale_factor=0.6, mode="nearest"),
    "nearest_torch_special_cases": dict(scale_factor=(1.05, 2.05), mode="nearest"),
    "bilinear_x2": dict(scale_factor=2, mode="bilinear", align_corners=False),
    "bilinear_x2_align": dict(scale_factor=2, mode="bilinear", align_corners=True),
    "bilinear_x1.5": dict(scale_factor=1.5, mode="bilinear", align_corners=False),
    "bilinear_x1.5_align": dict(scale_factor=1.5, mode="bilinear", align_corners=True),
    "bilinear_size": dict(size=(20, 5), mode="bilinear", align_corners=False),
    "bilinear_size_align": dict(size=(20, 5), mode="bilinear", align_corners=True),
    "bilinear_to_1": dict(size=(1, 4), mode="bilinear", align_corners=True),
}


@pytest.mark.parametrize("name", sorted(INTERPOLATE))
def test_interpolate(name):
    assert_matches(Fn1(lambda x: F.interpolate(x, **INTERPOLATE[name])), torch.randn(2, 3, 13, 11))


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_interpolate_non_contiguous_input(mode):
    fn = lambda x: F.interpolate(x.permute(0, 1, 3, 2)[:, 1:], scale_factor=1.5, mode=mode)
    assert_matches(Fn1(fn), torch.randn(1, 4, 9, 7))


def test_upsample_module():
    assert_matches(nn.Sequential(nn.Upsample(scale_factor=2), nn.UpsamplingBilinear2d(size=(19, 25))), torch.randn(1, 3, 9, 7))
