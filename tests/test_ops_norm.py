"""Layer, group and instance norm (statistics at run time), each run on real WebGPU against PyTorch."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from support import assert_matches

# each test runs for both device classes: a workgroup per row (gpu) or, with 8 rows or more, a
# thread per row (cpu)


class Norm(nn.Module):
    """A norm layer with random affine parameters (the defaults 1 and 0 would hide indexing mistakes)."""

    def __init__(self, norm, prepare=lambda x: x):
        super().__init__()
        self.norm, self.prepare = norm, prepare
        with torch.no_grad():
            for p in norm.parameters():
                p.copy_(torch.randn_like(p))

    def forward(self, x):
        return self.norm(self.prepare(x))


LAYER_NORMS = {
    "last_dim": lambda: nn.LayerNorm(77), "no_affine": lambda: nn.LayerNorm(77, elementwise_affine=False),
    "no_bias": lambda: nn.LayerNorm(77, bias=False), "last_two_dims": lambda: nn.LayerNorm([5, 77]),
    "eps": lambda: nn.LayerNorm(77, eps=1e-2),
}


@pytest.mark.parametrize("name", sorted(LAYER_NORMS))
def test_layer_norm(name, device_class):
    # an offset and scale far from 0 and 1: a one-pass E[x^2] - E[x]^2 variance would lose digits
    assert_matches(Norm(LAYER_NORMS[name](), lambda x: x * 3 + 10), torch.randn(2, 5, 77), device=device_class)


@pytest.mark.parametrize("length", [700, 768, 1000, 4500])
def test_layer_norm_long_rows(length, device_class):
    # a workgroup per row (3 rows): up to 16 values a thread stay in registers, in rounds of 256 of
    # which the last is partial but for 768; 4500 loops through memory in each pass
    assert_matches(Norm(nn.LayerNorm(length), lambda x: x * 3 + 10), torch.randn(3, length), device=device_class)


def test_layer_norm_of_non_contiguous_view(device_class):
    weight, bias = torch.randn(6), torch.randn(6)
    fn = Norm(nn.Identity(), lambda x: F.layer_norm(x.transpose(1, 2)[:, ::2], (6,), weight, bias))
    assert assert_matches(fn, torch.randn(2, 6, 9), device=device_class).stats["dispatches"] == 1  # read through strides, no copy


GROUP_NORMS = {
    "one_group": (1, True), "two_groups": (2, True), "group_per_channel": (6, True), "no_affine": (3, False),
}


@pytest.mark.parametrize("name", sorted(GROUP_NORMS))
def test_group_norm(name, device_class):
    groups, affine = GROUP_NORMS[name]
    assert_matches(Norm(nn.GroupNorm(groups, 6, affine=affine)), torch.randn(2, 6, 5, 7), device=device_class)


def test_group_norm_1d_non_contiguous(device_class):
    assert_matches(Norm(nn.GroupNorm(2, 4), lambda x: x.transpose(1, 2)), torch.randn(3, 37, 4), device=device_class)


@pytest.mark.parametrize("affine", [False, True])
def test_instance_norm(affine, device_class):
    assert_matches(Norm(nn.InstanceNorm2d(6, affine=affine), lambda x: x[:, :, 1:]), torch.randn(2, 6, 6, 7), device=device_class)
