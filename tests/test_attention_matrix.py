"""Attention on subgroup matrices (kernels/attention_matrix.py), an f16 build's "-f16" program's
attention where the keys are many.

No local WebGPU offers subgroup matrices, so the kernel built on gemm_matrix.py's emulation of the
builtins runs on lavapipe against PyTorch's scaled_dot_product_attention (queries, keys, values and
the probabilities rounded to f16, every sum f32): float and boolean masks, a row with every key
masked, causal, key tiles past the keys, the last query tile shifted back, 4 subgroups or 2 (a
query shorter than 4 subgroups' rows), head dims 32 to 64. The shipped kernel differs from the
emulated one only in the primitives; the program asks for the workgroup memory it takes, and the
runtime takes the plain program where the device has less.
"""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kuma_build import webgpu
from kuma_build.compiler import compile_module
from kuma_build.compiler.kernels import attention_matrix, gemm_matrix
from support import F16_MATH_LAYER_BOUND, assert_only_primitives_differ, assert_outputs_match, model_config, run_compiled, run_runtime_script


class Attention(nn.Module):
    def __init__(self, mask: str):
        super().__init__()
        self.mask = mask

    def forward(self, q, k, v, m):
        if self.mask == "float":
            return F.scaled_dot_product_attention(q, k, v, attn_mask=m)
        if self.mask == "bool":
            return F.scaled_dot_product_attention(q, k, v, attn_mask=m > 0)
        return F.scaled_dot_product_attention(q, k, v, is_causal=self.mask == "causal") + m.sum() * 0


# mask, query rows, keys, head dim, value dim, heads; the subgroups a workgroup takes
CASES = {
    "float": (("float", 150, 300, 32, 64, 2), 4),  # 3 query tiles (the last shifted), 5 key tiles (the last partial)
    "bool": (("bool", 40, 260, 64, 32, 3), 2),  # 40 rows: 2 subgroups, a row with every key masked
    "causal": (("causal", 270, 270, 48, 64, 1), 4),  # key tiles past a tile's last row skipped
    "bert": (("none", 300, 300, 64, 64, 2), 4),  # BERT's heads: 45 KB of workgroup memory
}


def compiled_case(name: str):
    (mask, rows, keys, head_dim, value_dim, heads), _ = CASES[name]
    torch.manual_seed(0)
    m = torch.randn(1, heads, rows, keys) * 3
    if mask == "bool":
        m[..., 5, :] = -1  # every key of row 5 masked: it writes zeros
    inputs = [torch.randn(1, heads, rows, head_dim) * 2, torch.randn(1, heads, keys, head_dim) * 2, torch.randn(1, heads, keys, value_dim), m]
    net = Attention(mask).eval()
    config = dataclasses.replace(model_config(net, inputs), precision="f16", target="gpu")
    return compile_module(net, config), config, net, inputs


def attention_kernel(compiled) -> dict:
    return next(k for k in compiled.programs["gpu-f16"]["kernels"] if k["name"] == "attention")


@pytest.mark.parametrize("name", CASES)
def test_emulated_kernel_matches_pytorch(name, monkeypatch):
    monkeypatch.setattr(gemm_matrix, "BACKEND", gemm_matrix.EMULATED)
    compiled, config, net, inputs = compiled_case(name)
    (_, _, _, head_dim, value_dim, _), subgroups = CASES[name]
    assert "emulated_multiply_add" in attention_kernel(compiled)["f16m"]
    assert f"@workgroup_size({32 * subgroups})" in attention_kernel(compiled)["f16m"]
    assert compiled.programs["gpu-f16"]["workgroupBytes"] == attention_matrix.memory(subgroups, head_dim, value_dim) > 16384
    with torch.no_grad():
        expected = [net(*inputs).numpy()]
    # lavapipe runs more workgroup memory than the 32 KB it reports (webgpu.CHECK_WORKGROUP_BYTES)
    monkeypatch.setattr(webgpu, "CHECK_WORKGROUP_BYTES", False)
    got = run_compiled(compiled, config, inputs, "gpu-f16", matrix=True)
    assert_outputs_match(got, expected, F16_MATH_LAYER_BOUND)
    if name == "bool":
        assert not got[0][0, :, 5].any()


def test_shipped_kernel_differs_from_the_emulated_one_only_in_the_primitives(monkeypatch):
    real = attention_kernel(compiled_case("causal")[0])["f16m"]
    monkeypatch.setattr(gemm_matrix, "BACKEND", gemm_matrix.EMULATED)
    emulated = attention_kernel(compiled_case("causal")[0])["f16m"]
    assert_only_primitives_differ(real, emulated, ("&kv,", "&kv,", "&sc,"))


def test_only_attention_over_enough_keys_takes_it(monkeypatch):
    monkeypatch.setattr(attention_matrix, "MIN_KEYS", 301)
    compiled = compiled_case("bert")[0]
    # no kernel on subgroup matrices is left, so the build writes no "-f16" program
    assert list(compiled.programs) == ["gpu"] and "workgroupBytes" not in compiled.programs["gpu"]


def test_verify_reports_a_program_over_the_adapters_workgroup_memory_as_not_run():
    compiled = compiled_case("bert")[0]
    allowed = webgpu.adapter_and_device()[1].limits["max-compute-workgroup-storage-size"]
    assert webgpu.why_not_here(compiled.programs["gpu"]) is None
    assert webgpu.why_not_here(compiled.programs["gpu-f16"]) == (
        f"its kernels take 45568 bytes of workgroup memory and this adapter allows {allowed}; "
        "browsers take the model's plain program on such a device")


PICK = """
import { loadModel } from "./runtime.mjs";
const MATRIX = "chromium-experimental-subgroup-matrix";
const configs = [{ componentType: "f16", resultComponentType: "f32", M: 16, N: 16, K: 16 }];
const picked = {};
for (const memory of [16384, 32768, 49152]) {
  const device = { features: new Set(["shader-f16", MATRIX]), limits: { maxComputeWorkgroupStorageSize: memory },
    adapterInfo: { vendor: "nvidia", subgroupMinSize: 32, subgroupMaxSize: 32, subgroupMatrixConfigs: configs } };
  const modules = {
    "gpu-f16": async () => ({ program: { workgroupBytes: 45568 } }),
    gpu: async () => { picked[memory] = "gpu"; throw new Error("stop"); },
  };
  const shared = { model: "m", classes: ["gpu-f16", "gpu"], inputs: [], outputs: [], chunks: [] };
  // the "-f16" program's own module stops where it would ask the device for its buffers
  await loadModel(shared, modules, [], { device, cache: false }).catch((e) => { picked[memory] ??= e.message.includes("stop") ? "?" : "gpu-f16"; });
}
console.log(JSON.stringify(picked));
"""


def test_the_runtime_takes_the_plain_program_where_the_device_has_too_little_workgroup_memory(tmp_path):
    assert run_runtime_script(tmp_path, PICK) == {"16384": "gpu", "32768": "gpu", "49152": "gpu-f16"}
