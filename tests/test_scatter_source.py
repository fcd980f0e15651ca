"""A scatter computing the values it writes in place (passes/fuse_elementwise.py, kernels/scatter.py):
a KV cache write of a rotated key (a concatenation computing its pieces) or of an elementwise result
is one dispatch, at positions each run gives, with the token count a dim too; Llama's decode step
then takes one dispatch a layer less. A source something else reads, one the scatter reads twice or
one reading the state it is written into keeps its kernel. Each module is compiled once for both
device classes and stepped on lavapipe against PyTorch eager stepping a copy of it."""

import copy
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from kuma_build.compiler import compile_module
from kuma_build.config import InputSpec
from kuma_build.devices import DEVICE_CLASSES
from kuma_build.webgpu import GpuModel
from support import assert_outputs_match, model_config

sys.path.insert(0, str(Path(__file__).parent / "models"))
from llama import Llama, rotate  # noqa: E402

HEADS, CONTEXT, HEAD_DIM = 3, 11, 10


class RotatedKeys(nn.Module):
    """keys [1, heads, tokens, head_dim] rotated by angles [tokens, head_dim / 2] and written into
    the cache at positions [tokens]; `shared`: the rotated keys are an output too."""

    def __init__(self, shared: bool = False):
        super().__init__()
        self.shared = shared
        self.register_buffer("cache", torch.zeros(1, HEADS, CONTEXT, HEAD_DIM))

    def forward(self, k, pos, cos, sin):
        rotated = rotate(k, cos, sin)
        self.cache.index_copy_(2, pos, rotated)
        return (self.cache * 2.0, rotated.sum(-1)) if self.shared else self.cache * 2.0


class Rows(nn.Module):
    """Elementwise results assigned to a strided slice (GELU: a helper function, erf) and copied into
    a row at a position (values viewed in a shape other than their own: [1, 9] for [9])."""

    def __init__(self):
        super().__init__()
        self.register_buffer("cache", torch.zeros(7, 9))
        self.register_buffer("table", torch.zeros(4, 9))

    def forward(self, x, y, pos):
        self.cache[1:6:2] = (F.gelu(x) * y).view(3, 9)
        self.table.index_copy_(0, pos, (torch.tanh(y[:9]) - 1.0).unsqueeze(0))
        return self.cache + 1.0, self.table * 2.0


class OwnSlots(nn.Module):  # the values are the ids: the scatter reads its source twice
    def __init__(self):
        super().__init__()
        self.register_buffer("slots", torch.zeros(13, dtype=torch.int64))

    def forward(self, pos):
        ids = pos * 2 + 1
        self.slots.index_copy_(0, ids, ids)
        return self.slots * 3


class Window(nn.Module):  # the new value reads the state it replaces, an element apart (the output: the old value)
    def __init__(self):
        super().__init__()
        self.register_buffer("window", torch.randn(37))

    def forward(self, x):
        old = self.window * 1.0
        self.window.copy_(torch.cat([x, self.window[:-1]]))
        return old


def rotated_keys(tokens: int, positions: list[int]) -> dict:
    return {"k": torch.randn(1, HEADS, tokens, HEAD_DIM), "pos": torch.tensor(positions),
            "cos": torch.randn(tokens, HEAD_DIM // 2), "sin": torch.randn(tokens, HEAD_DIM // 2)}


def stepped(module: nn.Module, specs: list[InputSpec], runs: list[dict], dims: dict | None = None) -> dict[str, list[str]]:
    """The module compiled for both device classes and run once per entry of runs (its inputs, in
    order) on each, every run's outputs matching eager's; each class's kernels, in dispatch order."""
    reference = copy.deepcopy(module.eval())
    config = model_config(module, [], "scatter")
    config.inputs, config.dims = specs, dims or {}
    compiled = compile_module(module, config, devices=list(DEVICE_CLASSES.values()))
    expected = []
    with torch.no_grad():
        for run in runs:
            out = reference(*run.values())
            expected.append([t.numpy() for t in (out if isinstance(out, tuple) else (out,))])
    kernels = {}
    for name, program in compiled.programs.items():
        gpu = GpuModel(program, chunks=[c.data for c in compiled.chunks])
        try:
            for run, want in zip(runs, expected):
                assert_outputs_match(list(gpu.run({k: v.numpy() for k, v in run.items()}).values()), want)
        finally:
            gpu.release()
        kernels[name] = [program["kernels"][k]["name"] for k, _, _ in program["dispatches"]]
    return kernels


def key_specs(tokens) -> list[InputSpec]:
    return [InputSpec("k", (1, HEADS, tokens, HEAD_DIM), "float32"), InputSpec("pos", (tokens,), "int64"),
            InputSpec("cos", (tokens, HEAD_DIM // 2), "float32"), InputSpec("sin", (tokens, HEAD_DIM // 2), "float32")]


def test_rotated_key_is_rotated_as_it_is_written():
    torch.manual_seed(0)
    runs = [rotated_keys(1, [p]) for p in (4, 0, 10, 4)]  # the last one writes a slot again
    kernels = stepped(RotatedKeys(), key_specs(1), runs)
    assert kernels == {name: ["scatter", "elementwise"] for name in DEVICE_CLASSES}


def test_rotated_keys_of_a_dynamic_count():
    torch.manual_seed(1)
    runs = [rotated_keys(4, [7, 2, 9, 0]), rotated_keys(1, [5]), rotated_keys(CONTEXT, torch.randperm(CONTEXT).tolist())]
    kernels = stepped(RotatedKeys(), key_specs("seq"), runs, {"seq": (1, CONTEXT)})
    assert kernels == {name: ["scatter", "elementwise"] for name in DEVICE_CLASSES}


def test_elementwise_values_into_a_slice_and_a_row():
    torch.manual_seed(2)
    runs = [{"x": torch.randn(27), "y": torch.randn(27), "pos": torch.tensor([p])} for p in (2, 0)]
    specs = [InputSpec("x", (27,), "float32"), InputSpec("y", (27,), "float32"), InputSpec("pos", (1,), "int64")]
    assert stepped(Rows(), specs, runs) == {name: ["scatter", "scatter", "elementwise", "elementwise"] for name in DEVICE_CLASSES}


def test_sources_that_keep_their_kernel():
    torch.manual_seed(3)
    shared = stepped(RotatedKeys(shared=True), key_specs(1), [rotated_keys(1, [p]) for p in (6, 1)])
    twice = stepped(OwnSlots(), [InputSpec("pos", (3,), "int64")], [{"pos": torch.tensor(p)} for p in ([0, 5, 2], [4, 1, 3])])
    window = stepped(Window(), [InputSpec("x", (1,), "float32")], [{"x": torch.randn(1)} for _ in range(4)])
    for name in DEVICE_CLASSES:
        assert "concat" in shared[name] and "concat" in window[name] and twice[name].count("elementwise") == 2


def test_llama_decode_rotates_keys_in_the_cache_write():
    """A block's keys are rotated by the scatter writing them; its queries by a concatenation on "cpu",
    by the attention reading them on "gpu" (tests/test_attention_query.py)."""
    torch.manual_seed(4)
    module = Llama(vocab=53, dim=36, layers=2, heads=3, kv_heads=1, hidden=70, context=13)
    specs = [InputSpec("token", (1, 1), "int64"), InputSpec("pos", (1,), "int64")]
    runs = [{"token": torch.randint(0, 53, (1, 1)), "pos": torch.tensor([p])} for p in range(5)]
    kernels = stepped(module, specs, runs)
    assert kernels["cpu"].count("concat") == 2 and kernels["gpu"].count("concat") == 0
    assert all(names.count("scatter") == 4 for names in kernels.values())
