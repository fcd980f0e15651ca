"""State on the GPU: buffers forward() mutates in place keep their values from one run to the
next, reset() restores them, and outputs and inputs can stay on the GPU. On real WebGPU
(lavapipe) against PyTorch eager stepping the same module."""

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kuma_build.compiler import compile_module
from kuma_build.errors import KumaError
from kuma_build.webgpu import GpuModel
from support import TOLERANCE, model_config, rel_l2

sys.path.insert(0, str(Path(__file__).parent / "models"))
from llama import Llama  # noqa: E402

PROMPT = [5, 9, 2, 33, 17]
STEPS = 20


def load(module, *inputs, device="cpu"):
    """The module compiled for these example inputs, loaded on the WebGPU adapter."""
    compiled = compile_module(module, model_config(module, inputs, device=device))
    return GpuModel(compiled.program, chunks=[c.data for c in compiled.chunks]), compiled


def eager_generate(module) -> tuple[list[int], np.ndarray]:
    """Greedy tokens after the prompt, stepping the module one token per call; the last logits."""
    tokens = []
    with torch.no_grad():
        for pos in range(len(PROMPT) + STEPS - 1):
            token = PROMPT[pos] if pos < len(PROMPT) else tokens[-1]
            next_token, logits = module(torch.tensor([[token]]), torch.tensor([pos]))
            if pos >= len(PROMPT) - 1:
                tokens.append(int(next_token))
    return tokens, logits.numpy()


def gpu_generate(gpu) -> tuple[list[int], np.ndarray]:
    """The same on the GPU: the prompt fed token by token, then each step's token output fed back
    as the next input without leaving the GPU, reading back 4 bytes a step."""
    tokens = []
    for pos in range(len(PROMPT) + STEPS - 1):
        token = np.array([[PROMPT[pos]]]) if pos < len(PROMPT) else gpu.output_buffer("output0")
        last = pos == len(PROMPT) + STEPS - 2
        out = gpu.run({"token": token, "pos": np.array([pos])}, read=None if last else ["output0"])
        assert last or list(out) == ["output0"]
        if pos >= len(PROMPT) - 1:
            tokens.append(int(out["output0"][0, 0]))
    return tokens, out["output1"]


@pytest.fixture(scope="module")
def llama():
    torch.manual_seed(0)
    module = Llama().eval()
    reference = copy.deepcopy(module)  # stepped in eager; compiling must not change the module's caches
    gpu, compiled = load(module, torch.tensor([[3]]), torch.tensor([0]))
    yield gpu, compiled, reference
    gpu.release()


def test_llama_greedy_decode_matches_eager(llama):
    gpu, compiled, reference = llama
    expected, expected_logits = eager_generate(reference)
    tokens, logits = gpu_generate(gpu)
    assert tokens == expected
    assert rel_l2(logits, expected_logits) <= TOLERANCE
    # the KV caches are state with zeros to start: no bytes shipped for them, and written in place
    assert [s["name"] for s in compiled.program["state"]] == [f"blocks.{i}.{kv}_cache" for i in range(2) for kv in "kv"]
    assert all(s["init"] is None for s in compiled.program["state"])
    kernels = [compiled.program["kernels"][k]["name"] for k, _, _ in compiled.program["dispatches"]]
    assert kernels.count("scatter") == 4 and "index_put" not in kernels


def test_llama_reset_reproduces_the_generation(llama):
    gpu, _, reference = llama
    gpu.reset()
    first, _ = gpu_generate(gpu)
    gpu.reset()
    assert gpu_generate(gpu)[0] == first == eager_generate(copy.deepcopy(reference).apply(_zero_caches))[0]


def test_llama_greedy_decode_on_the_gpu_class():
    """The same decode compiled for the "gpu" device class: thin products, and attention with its
    keys split over workgroups then combined (kernels/attention_decode.py)."""
    torch.manual_seed(1)
    module = Llama(context=600).eval()  # long enough a cache to split
    reference = copy.deepcopy(module)
    gpu, compiled = load(module, torch.tensor([[3]]), torch.tensor([0]), device="gpu")
    try:
        expected, expected_logits = eager_generate(reference)
        tokens, logits = gpu_generate(gpu)
    finally:
        gpu.release()
    assert tokens == expected
    assert rel_l2(logits, expected_logits) <= TOLERANCE
    kernels = [compiled.program["kernels"][k]["name"] for k, _, _ in compiled.program["dispatches"]]
    assert kernels.count("attention_combine") == 2


def _zero_caches(module):
    for name, buffer in module.named_buffers(recurse=False):
        if name.endswith("_cache"):
            buffer.zero_()


class Accumulator(nn.Module):
    """State with a non-zero start, updated by whole-buffer ops (copy_, +=), an int counter,
    and a slice assignment; forward returns values read before and after the updates."""

    def __init__(self):
        super().__init__()
        self.register_buffer("total", torch.linspace(-1, 1, 37))
        self.register_buffer("steps", torch.tensor([3], dtype=torch.int64))
        self.register_buffer("window", torch.randn(4, 11))

    def forward(self, x):
        before = self.total * 2
        self.total.copy_(self.total + x)
        self.steps += 1
        self.window[1:3, 2:9] = x[:14].view(2, 7)
        self.window[0] = self.window[0] * 0.5
        return before + self.total, self.steps * 10, self.window.sum(0)


def test_state_persists_across_runs_and_resets():
    torch.manual_seed(1)
    module = Accumulator()
    reference = copy.deepcopy(module)
    gpu, compiled = load(module, torch.randn(37))
    try:
        assert {s["name"]: s["init"] is not None for s in compiled.program["state"]} == {"total": True, "steps": True, "window": True}
        for round in range(2):  # the second round after reset() sees the initial values again
            fresh = copy.deepcopy(reference)
            for _ in range(3):
                x = torch.randn(37)
                with torch.no_grad():
                    expected = fresh(x)
                actual = gpu.run({"x": x.numpy()})
                for a, e in zip(actual.values(), expected):
                    assert a.shape == tuple(e.shape)
                    if e.dtype == torch.int64:
                        np.testing.assert_array_equal(a, e.numpy())
                    else:
                        assert rel_l2(a, e.numpy()) <= TOLERANCE
            gpu.reset()
    finally:
        gpu.release()


class Cache(nn.Module):
    """index_copy_ into a cache whose old value is also read after the update: computed out of
    place (index_put) and copied into the state at the end of the run."""

    def __init__(self):
        super().__init__()
        self.register_buffer("cache", torch.zeros(2, 9, 5))

    def forward(self, x, pos):
        old = self.cache.clone()
        self.cache.index_copy_(1, pos, x)
        return self.cache - old * 0.5


def test_state_whose_old_value_is_read_after_the_update():
    module = Cache()
    reference = copy.deepcopy(module)
    gpu, compiled = load(module, torch.randn(2, 2, 5), torch.tensor([0, 1]))
    try:
        kernels = {compiled.program["kernels"][k]["name"] for k, _, _ in compiled.program["dispatches"]}
        assert "index_put" in kernels
        for step in range(4):
            x, pos = torch.randn(2, 2, 5), torch.tensor([step * 2, 8 - step])
            with torch.no_grad():
                expected = reference(x, pos)
            assert rel_l2(gpu.run({"x": x.numpy(), "pos": pos.numpy()})["output"], expected.numpy()) <= TOLERANCE
    finally:
        gpu.release()


class Ring(nn.Module):
    """A ring buffer that keeps its own write position as state: index_copy_ at that position
    (written in place), the position advanced and wrapped, and the buffer itself returned."""

    def __init__(self):
        super().__init__()
        self.register_buffer("slots", torch.zeros(5, 3))
        self.register_buffer("pos", torch.tensor([0]))

    def forward(self, x):
        self.slots.index_copy_(0, self.pos, x)
        self.pos.copy_((self.pos + 1) % 5)
        return self.slots, self.slots.sum(0) + self.pos


def test_state_indexed_by_state_and_returned_as_output():
    module = Ring()
    reference = copy.deepcopy(module)
    gpu, compiled = load(module, torch.randn(1, 3))
    try:
        kernels = [compiled.program["kernels"][k]["name"] for k, _, _ in compiled.program["dispatches"]]
        assert "index_put" not in kernels  # the slots are written in place
        for _ in range(7):  # past the wrap-around
            x = torch.randn(1, 3)
            with torch.no_grad():
                expected = reference(x)
            for actual, want in zip(gpu.run({"x": x.numpy()}).values(), expected):
                assert rel_l2(actual, want.numpy()) <= TOLERANCE
    finally:
        gpu.release()


COUNTER = '''
import torch
from torch import nn


class Counter(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("total", torch.arange(5.0))

    def forward(self, x):
        self.total.add_(x)
        return self.total * 2
'''


def test_kuma_build_and_verify_a_model_with_state(tmp_path):
    (tmp_path / "counter.py").write_text(COUNTER)
    (tmp_path / "kuma.toml").write_text('[models.counter]\nsource = "counter.py"\nfactory = "Counter"\n'
                                        '[models.counter.inputs]\nx = { shape = [5], dtype = "float32" }\n')
    kuma = lambda *args: subprocess.run([sys.executable, "-m", "kuma_build", *args], cwd=tmp_path, capture_output=True, text=True)
    built = kuma("build")
    assert built.returncode == 0, built.stderr
    verified = kuma("verify")  # two runs: the second sees the first's writes
    assert verified.returncode == 0 and verified.stdout.count("[kuma] verify counter.output (") == 2, verified.stdout + verified.stderr  # each class


class DecayParameter(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(7))

    def forward(self, x):
        with torch.no_grad():
            self.w.mul_(0.5)
        return x * self.w


def test_a_parameter_updated_in_place_is_a_clear_error():
    with pytest.raises(KumaError, match="updates the parameter w in place.*register_buffer"):
        load(DecayParameter(), torch.randn(7))


class StridedSlots(nn.Module):
    """Slice assignment with a step into state with a random start: written in place, by arithmetic."""

    def __init__(self):
        super().__init__()
        self.register_buffer("cache", torch.randn(4, 9))

    def forward(self, x):
        self.cache[:, 2:8:3] = x * 2
        return self.cache * 1.5


def test_slice_assignment_into_state_in_place():
    module = StridedSlots()
    reference = copy.deepcopy(module)
    gpu, compiled = load(module, torch.randn(4, 2))
    try:
        kernels = [compiled.program["kernels"][k]["name"] for k, _, _ in compiled.program["dispatches"]]
        assert "scatter" in kernels and "index_put" not in kernels
        for _ in range(2):
            x = torch.randn(4, 2)
            with torch.no_grad():
                expected = reference(x)
            assert rel_l2(gpu.run({"x": x.numpy()})["output"], expected.numpy()) <= TOLERANCE
    finally:
        gpu.release()
