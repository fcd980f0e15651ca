"""Emitted models run in real headless Chromium (WebGPU on SwiftShader) against PyTorch.

This is the end-to-end check of what users ship: the written folder is served
over HTTP, index.js is imported by a page, weights stream in through fetch and
the runtime in templates/runtime.js runs the kernels. One Chromium serves the
whole session (see browser_support.py). Setup once: cd tests/browser && npm ci
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from browser_support import assert_matches_in_browser, run_in_browser, shared_browser
from support import TOLERANCE, rel_l2

pytestmark = pytest.mark.browser


@pytest.fixture(scope="session", autouse=True)
def chromium():
    browser = shared_browser()
    yield browser
    browser.close()


def assert_fully_loaded(compiled, facts):
    """onProgress counted up to exactly the bytes of all weight chunks."""
    total = sum(len(c.data) for c in compiled.chunks)
    progress = facts["progress"]
    assert progress["monotonic"], progress
    assert progress["first"] == [0, total] and progress["last"] == [total, total], progress


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(20, 67), nn.GELU(), nn.Linear(67, 33), nn.ReLU(), nn.Linear(33, 5))

    def forward(self, x):
        return self.layers(x)


class Mixer(nn.Module):
    """Token and channel mixing: linears on transposed views, broadcasting, batched matmul, cat, reshape."""

    def __init__(self):
        super().__init__()
        self.token = nn.Linear(7, 7)
        self.channel = nn.Linear(24, 24)
        self.gate = nn.Parameter(torch.randn(24))
        self.head = nn.Linear(48, 10)

    def forward(self, x, bias):
        mixed = self.token(x.transpose(1, 2)).transpose(1, 2)
        h = torch.tanh(mixed) * torch.sigmoid(self.gate) + bias
        scores = h @ h.transpose(1, 2) / 5
        context = scores @ x
        features = torch.cat([F.gelu(self.channel(context)), F.relu(h) * x], dim=-1)
        return self.head(features).reshape(2, 70), h[:, 0]


def test_mlp(tmp_path):
    compiled, facts = assert_matches_in_browser(Mlp(), torch.randn(3, 20), out_dir=tmp_path)
    assert_fully_loaded(compiled, facts)


def test_mixer_two_outputs(tmp_path):
    compiled, facts = assert_matches_in_browser(Mixer(), torch.randn(2, 7, 24), torch.randn(24), out_dir=tmp_path)
    assert_fully_loaded(compiled, facts)


def test_weights_split_over_chunks(tmp_path):
    # a 25600-byte weight over 4096-byte chunks: the runtime must stitch the pieces back together
    compiled, facts = assert_matches_in_browser(nn.Linear(64, 100), torch.randn(5, 64), out_dir=tmp_path, chunk_size=4096)
    assert len(compiled.chunks) >= 7
    assert_fully_loaded(compiled, facts)


class IntInputs(nn.Module):
    def forward(self, x, idx):
        return x * (idx * 2 - 3).float(), idx * 3 + 1


def test_int_inputs_and_outputs(tmp_path):
    compiled, facts = assert_matches_in_browser(IntInputs(), torch.randn(5, 9), torch.randint(-50, 50, (5, 9)), out_dir=tmp_path)
    assert facts["progress"]["last"] == [0, 0]


class Affine(nn.Module):
    """Weights but no matmul: SwiftShader compiles it in milliseconds, so harness tests stay fast."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.randn(20))
        self.shift = nn.Parameter(torch.randn(3, 1))

    def forward(self, x):
        return torch.tanh(x * self.scale) + self.shift


class Deep(nn.Module):
    """40 layers, a matmul dispatch each (one kernel: SwiftShader compiles it once)."""

    def __init__(self, layers: int = 40):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(16, 16) for _ in range(layers))

    def forward(self, x):
        for layer in self.layers:
            x = torch.tanh(layer(x))
        return x


def test_run_submits_as_it_encodes(tmp_path):
    # every dispatch, in order, over several command buffers: the output is PyTorch's (no cache: its
    # stores after load() would submit copies meanwhile)
    compiled, facts = assert_matches_in_browser(Deep(), torch.randn(4, 16), out_dir=tmp_path, options={"cache": False})
    # 40 dispatches: submitted after 8, then after 3 × 8 (templates/runtime.js: SUBMIT_FIRST,
    # SUBMIT_GROWTH), the rest with the readback
    assert len(compiled.programs[facts["deviceClass"]]["dispatches"]) == 40
    assert facts["submits"] == [8, 16, 16]


def test_model_folder_runs_again_with_new_inputs(tmp_path):
    module = Affine().eval()
    compiled, _ = assert_matches_in_browser(module, torch.randn(3, 20), out_dir=tmp_path)
    x = torch.randn(3, 20)
    (actual,) = run_in_browser(tmp_path / compiled.name, {"x": x.numpy()}).values()
    with torch.no_grad():
        assert rel_l2(actual, module(x).numpy()) <= TOLERANCE


def test_load_failure_is_reported(tmp_path):
    compiled, _ = assert_matches_in_browser(Affine(), torch.randn(3, 20), out_dir=tmp_path)
    folder = tmp_path / compiled.name
    (folder / compiled.chunks[0].file).unlink()
    with pytest.raises(AssertionError, match="weight chunk .* is not on the server \\(HTTP 404.*the deployed files differ from this build"):
        run_in_browser(folder, {"x": torch.randn(3, 20).numpy()})
    # the shared browser is still usable afterwards
    assert_matches_in_browser(Affine(), torch.randn(3, 20), out_dir=tmp_path / "again")
