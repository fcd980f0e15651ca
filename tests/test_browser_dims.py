"""Models with dims (one build for a range of sizes) in headless Chromium: one load runs at several
sizes in turn (tests/browser/dims.mjs), compared with PyTorch, and run() rejects inconsistent or
out-of-range lengths naming the input, the dim and its range. test_bert_with_a_dynamic_sequence_length
is the whole path: kuma.toml, `kuma build`, `kuma verify` at min, middle and max, and Chromium; the
Llama-style step model prefills its KV cache with the whole prompt in one run, then decodes.

test_runtime_dims runs a program written here to the program format (docs/design.md, "Dimensions"),
with four small WGSL kernels, so that the runtime's part is checked on its own and on what a
compiled model may not show yet: two dims, one inferred after the other, sizes that are sums of
products, a dispatch with no workgroups at the min (left out), an output of length 0, and two
kernels for one output, each run only in its range of a dim.
"""

import base64
import copy
import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch

from browser_support import NUMPY_DTYPES, Browser, encode
from kuma_build.compiler import compile_module
from kuma_build.compiler.export import build_module
from kuma_build.config import InputSpec, load_project
from kuma_build.jsmodule import render_class_js, render_dts, render_js
from support import TOLERANCE, model_config, rel_l2
from test_state import PROMPT, STEPS, Llama

pytestmark = pytest.mark.browser

SCALE = """\
struct Dims { b: u32, n: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> scale: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<uniform> dims: Dims;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  if (id.x >= dims.b * dims.n) { return; }
  y[id.x] = x[id.x] * scale[id.x / dims.n] + bias[id.x % dims.n];
}
"""
RAMP = """\
struct Dims { b: u32, n: u32 }
@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read_write> z: array<f32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  if (id.x >= 2u * dims.n + 1u) { return; }
  z[id.x] = f32(id.x) * f32(dims.b);
}
"""
RAMP_ONE = """\
struct Dims { b: u32, n: u32 }
@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read_write> z: array<f32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  if (id.x >= 2u * dims.n + 1u) { return; }
  z[id.x] = f32(id.x);
}
"""
DIFF = """\
struct Dims { b: u32, n: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> w: array<f32>;
@group(0) @binding(2) var<uniform> dims: Dims;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  if (id.x + 1u >= dims.n) { return; }
  w[id.x] = x[id.x + 1u] - x[id.x];
}
"""
B, N = (1, 3), (1, 300)


def runtime_fixture(folder):
    """The folder of a model with dims b (1 to 3) and n (1 to 300), inputs scale [b], x [b, n] and
    bias [n] (so b comes from scale, then n from x, and bias is checked against n), outputs
    y = x * scale[:, None] + bias of shape [b, n], z = arange(2n + 1) * b, w = diff(x[0]) of length n - 1.
    Buffers: scale, x, bias, y, z, w, dims."""
    n_terms, b_n = [[1, "n"]], [[1, "b", "n"]]
    shared = {"format": 4, "model": "dimsfixture", "classes": ["cpu"], "dims": {"b": {"min": B[0], "max": B[1]}, "n": {"min": N[0], "max": N[1]}},
              "inputs": [{"name": "scale", "shape": ["b"], "dtype": "float32", "buffer": 0}, {"name": "x", "shape": ["b", "n"], "dtype": "float32", "buffer": 1},
                         {"name": "bias", "shape": ["n"], "dtype": "float32", "buffer": 2}],
              "outputs": [{"name": "y", "shape": [[[1, "b"]], n_terms], "dtype": "float32", "buffer": 3},
                          {"name": "z", "shape": [[[2, "n"], [1]]], "dtype": "float32", "buffer": 4},
                          {"name": "w", "shape": [[[1, "n"], [-1]]], "dtype": "float32", "buffer": 5}],
              "chunks": []}
    sizes = [B[1], B[1] * N[1], N[1], B[1] * N[1], 2 * N[1] + 1, N[1] - 1]
    part = {
        "buffers": [4 * s for s in sizes] + [[16, "dims"]],  # as a class module ships them (outfolder.ship_buffers)
        "kernels": [{"name": "scale", "code": SCALE}, {"name": "ramp", "code": RAMP}, {"name": "diff", "code": DIFF},
                    {"name": "ramp_one", "code": RAMP_ONE}],
        # z by ramp for b from 2, by ramp_one (right only for b = 1) after it for b = 1
        "dispatches": [[0, [1, 0, 2, 3, 6], [{"size": b_n, "per": 64}, 1, 1]],
                       [1, [6, 4], [{"size": [[2, "n"], [1]], "per": 64}, 1, 1], {"b": [2, 3]}],
                       [2, [1, 5, 6], [{"size": [[1, "n"], [-1]], "per": 64}, 1, 1]],
                       [3, [6, 4], [{"size": [[2, "n"], [1]], "per": 64}, 1, 1], {"b": [1, 1]}]],
        "copies": [], "state": [], "dims": ["b", "n"],
    }
    folder.mkdir(parents=True)
    (folder / "index.js").write_text(render_js(shared))  # the whole runtime
    (folder / "cpu.js").write_text(render_class_js(part))
    (folder / "index.d.ts").write_text(render_dts(shared))
    return folder


def expected(scale: np.ndarray, x: np.ndarray, bias: np.ndarray) -> dict[str, np.ndarray]:
    x_, s_ = torch.from_numpy(x), torch.from_numpy(scale)
    b, n = x.shape
    return {"y": (x_ * s_[:, None] + torch.from_numpy(bias)).numpy(), "z": (torch.arange(2 * n + 1) * b).float().numpy(), "w": torch.diff(x_[0]).numpy()}


def decode(spec: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(spec["data"]), dtype=NUMPY_DTYPES[spec["dtype"]])


def run_dims(folder, runs: list[dict], bad: list[dict], gpu: list[str] = ()) -> dict:
    """One load of the model in folder running each input set of runs in turn, then each of bad
    (whose errors the reply lists); the inputs of runs named in gpu go in as GPUBuffers."""
    browser = Browser("dims.mjs", "--serve")
    try:
        request = {"root": str(folder.parent), "model": folder.name, "runs": [{k: encode(v) for k, v in r.items()} for r in runs],
                   "bad": [{k: encode(v) for k, v in r.items()} for r in bad], "gpu": list(gpu)}
        reply = browser.request(request, f"running {folder.name}")
    finally:
        browser.close()
    assert reply["ok"], reply.get("error")
    return reply


def test_runtime_dims(tmp_path):
    folder = runtime_fixture(tmp_path / "dimsfixture")
    rng = np.random.default_rng(0)
    sizes = [(1, 1), (3, 300), (2, 77), (3, 300), (1, 1)]  # min, max, between, and the same values again
    runs = [{"scale": rng.standard_normal(b, dtype=np.float32), "x": rng.standard_normal((b, n), dtype=np.float32),
             "bias": rng.standard_normal(n, dtype=np.float32)} for b, n in sizes]

    def zeros(scale, x, bias):
        return {"scale": np.zeros(scale, np.float32), "x": np.zeros(x, np.float32), "bias": np.zeros(bias, np.float32)}

    # b from scale, then n from x (b known), then bias checked against n
    bad = [zeros(3, 10, 5), zeros(4, 20, 5), zeros(1, 301, 301), zeros(1, 0, 0), zeros(2, 6, 5)]
    reply = run_dims(folder, runs, bad, gpu=["scale"])  # b from a GPUBuffer: its size is its length
    for run, got in zip(runs, reply["outputs"]):
        for name, want in expected(**run).items():
            actual = decode(got[name])
            assert got[name]["length"] == want.size, (name, got[name]["length"], want.shape)
            assert rel_l2(actual, want.ravel()) <= TOLERANCE if want.size else actual.size == 0
    assert reply["errors"] == [
        'RangeError: kuma: input "x" has 10 values; its shape [b,n] with b = 3 takes n from 1 to 300, so it needs 3 to 900 values, a multiple of 3',
        'RangeError: kuma: input "scale" has 4 values; its shape [b] takes b from 1 to 3, so it needs 1 to 3 values',
        'RangeError: kuma: input "x" has 301 values; its shape [b,n] with b = 1 takes n from 1 to 300, so it needs 1 to 300 values',
        'RangeError: kuma: input "x" has 0 values; its shape [b,n] with b = 1 takes n from 1 to 300, so it needs 1 to 300 values',
        'RangeError: kuma: input "bias" needs 3 values (shape [n] with n = 3), got 5',
    ]
    info = reply["info"]
    assert info["inputs"] == info["modelInputs"] == [{"name": "scale", "shape": ["b"], "dtype": "float32"},
                                                     {"name": "x", "shape": ["b", "n"], "dtype": "float32"},
                                                     {"name": "bias", "shape": ["n"], "dtype": "float32"}]
    assert [o["shape"] for o in info["outputs"]] == [o["shape"] for o in info["modelOutputs"]] == [["b", "n"], ["2*n + 1"], ["n - 1"]]
    dts = (folder / "index.d.ts").read_text()
    assert "- `b`: from 1 to 3, in input scale, x" in dts and "- `n`: from 1 to 300, in input x, bias" in dts
    assert '/** shape [n - 1], float32; n from 1 to 300 */' in dts and 'readonly shape: readonly ["b", "n"]' in dts


BERT = """\
from torch import nn
from transformers import BertConfig, BertModel


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=100,
                            max_position_embeddings=64)
        self.bert = BertModel(config, add_pooling_layer=False)

    def forward(self, input_ids):
        return self.bert(input_ids=input_ids).last_hidden_state


def build_model():
    return Encoder().eval()
"""
BERT_TOML = """\
[build]
out_dir = "out"

[models.bert]
source = "bert.py"
factory = "build_model"
outputs = ["hidden"]
target = "cpu"
[models.bert.dims]
seq = { min = 1, max = 64 }
[models.bert.inputs]
input_ids = { shape = [1, "seq"], dtype = "int64" }
"""


def kuma(root, *args):
    result = subprocess.run([sys.executable, "-m", "kuma_build", *args], cwd=root, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stdout + result.stderr
    return result


def test_bert_with_a_dynamic_sequence_length(tmp_path):
    """A Hugging Face BertModel (a tiny config) built once for seq from 1 to 64: `kuma verify` checks
    seq = 1, 33 and 64, and one load in Chromium runs seq = 1, 64, 33, 7, 64 in turn like PyTorch,
    then rejects 65 tokens."""
    (tmp_path / "bert.py").write_text(BERT)
    (tmp_path / "kuma.toml").write_text(BERT_TOML)
    built = kuma(tmp_path, "build")
    assert "warning" not in built.stderr, built.stderr
    verified = kuma(tmp_path, "verify").stdout.splitlines()
    assert [line.split(":")[0] for line in verified] == [f"[kuma] verify bert.hidden (cpu kernels, seq = {n})" for n in (1, 33, 64)]
    assert all(line.endswith(" ok") for line in verified), verified

    project = load_project(tmp_path / "kuma.toml")
    net = build_module(project.models["bert"], project.root)
    generator = torch.Generator().manual_seed(5)
    ids = [torch.randint(0, 100, (1, n), generator=generator) for n in (1, 64, 33, 7, 64)]
    reply = run_dims(project.out_dir / "bert", [{"input_ids": t.numpy()} for t in ids], [{"input_ids": np.zeros((1, 65), np.int32)}])
    for tokens, got in zip(ids, reply["outputs"]):
        with torch.no_grad():
            want = net(tokens).numpy()
        assert got["hidden"]["length"] == want.size == tokens.shape[1] * 32
        assert rel_l2(decode(got["hidden"]), want.ravel()) <= TOLERANCE, tokens.shape
    assert reply["errors"] == ['RangeError: kuma: input "input_ids" has 65 values; its shape [1,seq] takes seq from 1 to 64, '
                               "so it needs 1 to 64 values"]
    assert reply["info"]["modelOutputs"] == [{"name": "hidden", "shape": [1, "seq", 32], "dtype": "float32"}]


def test_llama_prefill_in_one_run_then_decode_in_chromium(tmp_path):
    """The Llama-style step model with token [1, seq] and pos [seq] (seq from 1 to its context of 40):
    the prompt goes in as one run, then greedy steps of one token, each fed back as a GPUBuffer (the
    model's own output buffer, longer than one token: the typed-array pos gives seq = 1). Token-identical
    to PyTorch eager doing the same, again after reset() with the runs queued at once, with the
    kernels of each device class."""
    torch.manual_seed(0)
    module = Llama().eval()
    reference = copy.deepcopy(module)
    example = (torch.tensor([[3, 4]]), torch.tensor([0, 1]))
    config = dataclasses.replace(model_config(module, example, name="llama", device="auto"), dims={"seq": (1, 40)},
                                 inputs=[InputSpec("token", (1, "seq"), "int64"), InputSpec("pos", ("seq",), "int64")])
    folder = compile_module(module, config).write(tmp_path)
    with torch.no_grad():
        token, _ = reference(torch.tensor([PROMPT]), torch.arange(len(PROMPT)))
        expected = [int(token[0, -1])]
        for pos in range(len(PROMPT), len(PROMPT) + STEPS - 1):
            token, _ = reference(torch.tensor([[expected[-1]]]), torch.tensor([pos]))
            expected.append(int(token[0, 0]))
    browser = Browser("decode.mjs", "--serve")
    try:
        for device_class in ("cpu", "gpu"):
            request = {"root": str(folder.parent), "model": folder.name, "prompt": PROMPT, "steps": STEPS, "prefill": True,
                       "options": {"deviceClass": device_class}}
            reply = browser.request(request, "decoding")
            assert reply["ok"], reply.get("error")
            assert reply["deviceClass"] == device_class
            assert reply["first"] == reply["again"] == expected, device_class
    finally:
        browser.close()
