"""Reductions and softmax, each run on real WebGPU against PyTorch."""

import pytest
import torch
import torch.nn.functional as F

from support import Fn1, assert_matches

# each test runs for both device classes: a workgroup per row (gpu) or, with 8 rows or more, a
# thread per row (cpu)


REDUCTIONS = {
    "sum": lambda x, **kw: x.sum(**kw), "mean": lambda x, **kw: x.mean(**kw),
    "amax": lambda x, **kw: x.amax(**kw), "amin": lambda x, **kw: x.amin(**kw),
}
DIMS = {"last": {"dim": -1}, "middle": {"dim": 1}, "first_and_last": {"dim": (0, 2)}, "all": {}}


@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("dims", sorted(DIMS))
@pytest.mark.parametrize("name", sorted(REDUCTIONS))
def test_reduce_dims(name, dims, keepdim, device_class):
    fn, kwargs = REDUCTIONS[name], dict(DIMS[dims])
    if kwargs:
        kwargs["keepdim"] = keepdim
    elif keepdim:
        kwargs = {"dim": (0, 1, 2), "keepdim": True}
    # values around 1, not 0: the sum or mean of all 555 is one number, and one of zero-mean values can
    # land near zero, where f32 rounding (PyTorch's as well as ours) is a large relative error (4.9e-5
    # in a CI run of "mean", "all")
    assert_matches(Fn1(lambda x: fn(x, **kwargs)), torch.randn(3, 37, 5) + 1.0, device=device_class)


@pytest.mark.parametrize("length", [37, 300, 1000])
def test_row_lengths_off_the_workgroup_size(length, device_class):
    fn = lambda x: torch.cat([x.sum(-1), x.mean(-1), x.amax(-1), x.amin(-1)])
    assert_matches(Fn1(fn), torch.randn(3, length), device=device_class)


@pytest.mark.parametrize("length", [4500, 70001])
def test_rows_through_memory(length, device_class):
    # longer than a workgroup's registers hold (16 values a thread): each pass loops through memory,
    # 8 rounds of the workgroup an iteration, the last one partial; a tie for the maximum (the
    # first position wins) and a softmax sampled across the row
    x = torch.randn(2, length)
    x[1, length // 3] = x[1, -5] = 10.0
    fn = lambda x: torch.cat([x.sum(-1), x.amax(-1), x.argmax(-1).float(), x.softmax(-1)[:, ::997].flatten() * 100])
    assert_matches(Fn1(fn), x, device=device_class)


def test_non_contiguous_and_broadcast_inputs(device_class):
    fn = lambda x: (x.transpose(0, 2).sum(1) + x[:, ::2].mean(1).t() + x.permute(1, 2, 0).amax(0)
                    + x[:1].expand(3, 9, 5).sum(1).t())
    assert_matches(Fn1(fn), torch.randn(3, 9, 5), device=device_class)


def test_more_rows_than_one_grid_dimension(device_class):
    assert_matches(Fn1(lambda x: x.sum(-1)), torch.randn(70000, 3), device=device_class)


OTHERS = {
    "max_dim": lambda x: x.max(1).values, "min_dim_keepdim": lambda x: x.min(-1, keepdim=True)[0],
    "max_all": lambda x: x.max(), "min_all": lambda x: x.min(),
    "max_dim_indices": lambda x: x.max(1).indices, "min_dim_indices": lambda x: x.min(2).indices,
    "argmax": lambda x: x.argmax(-1), "argmin_middle": lambda x: x.argmin(1, keepdim=True),
    "argmax_all": lambda x: x.argmax(), "argmax_transposed": lambda x: x.transpose(1, 2).argmax(1),
    "prod": lambda x: (1 + x / 10).prod(1), "var": lambda x: x.var(-1), "var_biased": lambda x: x.var((0, 1), unbiased=False),
    "std": lambda x: x.std(1), "var_mean": lambda x: torch.var_mean(x * 3 + 10, -1),
    "norm": lambda x: x.norm(dim=-1), "norm1": lambda x: x.norm(p=1, dim=1), "norm_inf": lambda x: x.norm(p=float("inf"), dim=-1),
    "normalize": lambda x: F.normalize(x, dim=1),
    "any": lambda x: (x > 1).any(-1), "any_dims": lambda x: (x > 1.5).any(), "all": lambda x: (x > -1.5).all(1),
    "count": lambda x: (x > 0).sum(-1), "logsumexp": lambda x: (x * 20).logsumexp(1),
}


@pytest.mark.parametrize("name", sorted(OTHERS))
def test_other_reductions(name, device_class):
    assert_matches(Fn1(OTHERS[name]), torch.randn(4, 37, 6), device=device_class)


SOFTMAX = {
    "softmax_last": lambda x: x.softmax(-1), "softmax_middle": lambda x: x.softmax(1), "softmax_first": lambda x: x.softmax(0),
    "log_softmax_last": lambda x: F.log_softmax(x, -1), "log_softmax_middle": lambda x: F.log_softmax(x, 1),
    "softmax_transposed": lambda x: x.transpose(1, 2).softmax(-1),
    "masked": lambda x: x.masked_fill(x[:, :, :1] > x, float("-inf")).softmax(-1),
}


@pytest.mark.parametrize("name", sorted(SOFTMAX))
def test_softmax(name, device_class):
    # large logits: only the max-subtracting form stays finite and accurate
    fn = SOFTMAX[name]
    assert_matches(Fn1(lambda x: fn(x * 20)), torch.randn(3, 37, 300 if name.endswith("last") else 7), device=device_class)
