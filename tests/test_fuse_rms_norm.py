"""RMSNorm written out in PyTorch becomes one normalize kernel (passes/fuse_rms_norm.py), on lavapipe
against PyTorch: the ways models write it (x * x or x ** 2, weight first or last, no weight, nn.RMSNorm), rows
in registers and rows too long for them, each device class; what is not an RMSNorm keeps its kernels."""

import dataclasses
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from kuma_build.compiler import compile_module
from kuma_build.config import InputSpec
from support import assert_matches, model_config

sys.path.insert(0, str(Path(__file__).parent / "models"))
from llama import Llama, RMSNorm  # noqa: E402


class HFStyle(nn.Module):  # as transformers' LlamaRMSNorm and Qwen2RMSNorm write it
    def __init__(self, dim: int, weight: bool = True):
        super().__init__()
        self.weight = nn.Parameter(1 + 0.1 * torch.randn(dim)) if weight else None

    def forward(self, x):
        variance = x.pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(variance + 1e-6)
        return self.weight * x if self.weight is not None else x


class NotRms(nn.Module):  # the mean of other values than those it scales: no RMSNorm
    def forward(self, x, y):
        return x * torch.rsqrt((y * y).mean(-1, keepdim=True) + 1e-5)


def kernel_names(compiled) -> list[str]:
    p = compiled.program
    return [p["kernels"][d[0]]["name"] for d in p["dispatches"]]


@pytest.mark.parametrize("module, shape, device", [
    (RMSNorm(200), (1, 5, 200), "gpu"),  # tests/models/llama.py's: x * rsqrt(mean(x ** 2) + eps) * weight
    (HFStyle(96), (2, 3, 96), "cpu"),  # weight * (x * rsqrt(...)), x ** 2 as pow
    (HFStyle(3000), (3, 3000), "gpu"),  # rows longer than a workgroup's registers hold: passes over memory
    (HFStyle(77, weight=False), (4, 77), "gpu"),
    (nn.RMSNorm(64, eps=1e-5), (2, 6, 64), "gpu"),  # torch's own, which torch.export decomposes the same way
])
def test_rms_norm_is_one_kernel(module, shape, device):
    torch.manual_seed(0)
    compiled = assert_matches(module.eval(), torch.randn(*shape), device=device)
    assert kernel_names(compiled) == ["normalize"]


def test_other_reductions_keep_their_kernels():
    torch.manual_seed(0)
    compiled = assert_matches(NotRms(), torch.randn(3, 40), torch.randn(3, 40), device="gpu")
    assert "normalize" not in kernel_names(compiled) and "reduce_mean" in kernel_names(compiled)


def test_llama_decode_step_norms_are_one_kernel_each():
    """The step model's 2 norms a block and the final one: a normalize dispatch each, 3 fewer each."""
    torch.manual_seed(0)
    model = Llama(vocab=67, dim=48, layers=2, heads=4, kv_heads=2, hidden=100, context=40).eval()
    compiled = assert_matches(model, torch.tensor([[5]]), torch.tensor([3]), device="gpu")
    names = kernel_names(compiled)
    assert names.count("normalize") == 5 and "reduce_mean" not in names


def test_norms_of_a_dynamic_token_count_are_one_kernel_each():
    """Rows a dim sets (prefill's tokens; tests/test_dims.py runs this build against PyTorch)."""
    net = Llama().eval()
    inputs = [InputSpec("token", (1, "seq"), "int64"), InputSpec("pos", ("seq",), "int64")]
    example = [torch.zeros(1, 1, dtype=torch.int64), torch.zeros(1, dtype=torch.int64)]
    config = dataclasses.replace(model_config(net, example), inputs=inputs, dims={"seq": (1, 40)}, target="gpu")
    names = kernel_names(compile_module(net, config))
    assert names.count("normalize") == 5 and "reduce_mean" not in names
