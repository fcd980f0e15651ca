"""The Dawn benchmark's Node side (bench/gpu/dawn/run.mjs) on Dawn itself: dawn.node from the npm
package webgpu, here on Chromium's SwiftShader (Vulkan on the CPU). The emitted index.js of a small
GPT-style decoder loads and runs in Node as a page would run it, its output matches PyTorch, the
per-dispatch profile from timestamp queries covers every dispatch, an f16 build runs the kernel
variant the runtime picks (SwiftShader has no subgroup matrices), and the dispatch-cost probe ran
every one of its dispatches. The decode benchmark's loop (decode.py) gives PyTorch eager's greedy
tokens and logits, its copy probe copies and its read probe reads each word once; bench.py's --gemm-knob names a kernels module's
constant. scripts/setup.sh installs bench/gpu/dawn's node_modules."""

import argparse
import copy
import importlib.util
import json
import math
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from kuma_build.compiler import compile_module
from kuma_build.outfolder import program_classes
from support import model_config

REPO = Path(__file__).resolve().parents[1]
DAWN = REPO / "bench" / "gpu" / "dawn"
SWIFTSHADER = Path("/usr/lib/chromium/vk_swiftshader_icd.json")


def load(name: str, path: Path):
    """A module from its file, under a name no other test uses (tests/models and bench/ are folders too)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = sys.modules[name] = importlib.util.module_from_spec(spec)  # inspect finds its source through sys.modules
    spec.loader.exec_module(module)
    return module


bench = load("kuma_dawn_bench", DAWN / "bench.py")
decode = load("kuma_dawn_decode", DAWN / "decode.py")
GPT = load("kuma_dawn_test_gpt", REPO / "tests" / "models" / "gpt.py").GPT


@pytest.fixture(scope="module")
def dawn(monkeypatch_module):
    assert (DAWN / "node_modules" / "webgpu").is_dir(), "dawn.node is missing: run scripts/setup.sh (npm ci in bench/gpu/dawn)"
    assert SWIFTSHADER.is_file(), f"{SWIFTSHADER} is missing: run scripts/setup.sh (Debian's chromium ships SwiftShader)"
    monkeypatch_module.setenv("VK_ICD_FILENAMES", str(SWIFTSHADER))
    monkeypatch_module.delenv("VK_DRIVER_FILES", raising=False)
    return types.SimpleNamespace(node="node", precision="f32", timing={"warmup": 1, "minRuns": 3, "budgetMs": 0})


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch



def kuma_job(folder, input_name: str, array, expected, tmp_path, profile_runs: int) -> dict:
    """run.mjs's job for the kuma engine: the model folder's run() and profile on one input, checked
    against PyTorch's output (both written as raw files, as bench.py writes them)."""
    array.tofile(tmp_path / "input.bin")
    expected.tofile(tmp_path / "expected.bin")
    return {"engine": "kuma", "path": str(folder), "profile": True, "profileRuns": profile_runs,
            "inputs": {input_name: {"file": str(tmp_path / "input.bin"), "dtype": str(array.dtype), "shape": list(array.shape)}},
            "expected": {"file": str(tmp_path / "expected.bin"), "shape": list(expected.shape)}}

def test_kuma_run_and_profile_on_dawn(dawn, tmp_path):
    torch.manual_seed(0)
    net = GPT(vocab=211, context=32, dim=64, heads=4, layers=1).eval()
    tokens = torch.randint(0, 211, (1, 16), generator=torch.Generator().manual_seed(3))
    config = model_config(net, (tokens,), name="gpt", device="gpu")
    folder = compile_module(net, config).write(tmp_path / "kuma")
    with torch.no_grad():
        expected = net(tokens).numpy()
    job = kuma_job(folder, config.inputs[0].name, tokens.numpy(), expected, tmp_path, profile_runs=2)
    result = bench.node_job(dawn, job, tmp_path, "kuma", timeout=120)
    assert result["ok"], result["error"]
    assert result["adapter"]["architecture"] == "swiftshader"
    assert result["relL2"] <= 1e-5
    assert result["runs"] >= 3 and 0 < result["minMs"] <= result["medianMs"]
    profile = result["profile"]
    assert len(profile["dispatches"]) == result["dispatches"] > 8  # run() submitted two command buffers (runtime.js SUBMIT_FIRST)
    assert all(d["us"] > 0 for d in profile["dispatches"])
    assert sum(k["calls"] for k in profile["kernels"]) == result["dispatches"]
    # each kernel's share of the back-to-back time was measured (a difference of two timings: any sign)
    assert all(math.isfinite(k["backToBackUs"]) for k in profile["kernels"])
    assert profile["passMs"] > 0 and profile["backToBackMs"] > 0


@pytest.mark.usefixtures("tiles_as_written", "matrices_everywhere")  # conftest.py: a product with a subgroup-matrix variant
def test_f16_build_runs_the_variant_the_runtime_picks(dawn, tmp_path):
    torch.manual_seed(0)
    net, x = torch.nn.Linear(260, 200).eval(), torch.randn(300, 260)
    config = model_config(net, (x,), name="linear", device="gpu")
    config.precision = "f16"
    folder = compile_module(net, config).write(tmp_path / "kuma")
    net.weight.data = net.weight.data.half().float()  # as stored
    with torch.no_grad():
        expected = net(x).numpy()
    job = kuma_job(folder, config.inputs[0].name, x.numpy(), expected, tmp_path, profile_runs=1)
    toggled = types.SimpleNamespace(**vars(dawn), dawn_toggles="vulkan_enable_f16_on_nvidia")
    assert bench.dawn_flags(toggled)[1] == "enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia"
    result = bench.node_job(toggled, job, tmp_path, "kuma", timeout=120)
    assert result["ok"], result["error"]
    # the build has a "-f16" program (its product has a subgroup-matrix variant), but the runtime takes
    # it only where the adapter offers subgroup matrices, which SwiftShader does not: the f32 kernels
    # on weights widened at load (devices.F16_PROGRAM), f32 accuracy on the rounded weights
    assert program_classes(folder) == ["gpu-f16", "gpu"] and result["adapter"]["subgroupMatrixConfigs"] == []
    assert result["program"] == "gpu" and result["matrixKernels"] == 0
    assert result["variant"] == result["profile"]["variant"] == "code"
    assert result["relL2"] <= 1e-5


def test_dispatch_probe_on_dawn(dawn, tmp_path):
    result = bench.node_job(dawn, {"engine": "probe"}, tmp_path, "probe", timeout=120)
    assert result["ok"], result["error"]
    assert result["counted"] == result["countedExpected"]  # every one of the tiny dispatches ran
    assert result["dispatches1000"]["gpuMs"] > result["submit1"]["gpuMs"] > 0
    assert np.isfinite(result["usPerDispatchWall"])


def test_decode_loop_on_dawn(dawn, tmp_path):
    torch.manual_seed(0)
    net = decode.Llama(vocab=67, dim=48, layers=2, heads=4, kv_heads=2, hidden=100, context=16).eval()
    config = model_config(net, (torch.tensor([[3]]), torch.tensor([0])), name="llama", device="gpu")
    config.outputs = ["token", "logits"]
    folder = compile_module(copy.deepcopy(net), config).write(tmp_path / "kuma")
    prompt, steps = [5, 9, 2], 8
    job = {"engine": "decode", "path": str(folder), "prompt": prompt, "steps": steps, "rounds": 2}
    result = bench.node_job(dawn, job, tmp_path, "decode", timeout=120)
    assert result["ok"], result["error"]
    expected = decode.generate(net, net, prompt, steps)  # PyTorch eager, greedy, the same loop
    assert result["tokens"] == expected["tokens"]
    assert bench.rel_l2(result["lastLogits"], expected["last_logits"].numpy()) <= 1e-5
    assert result["repeatable"]  # reset() gave the timed generation the warm-up's tokens
    assert result["decodeSteps"] == steps - 1 and result["decodeTokensPerS"] > 0 and result["prefillTokensPerS"] > 0


def test_host_probe_on_dawn(dawn, tmp_path):
    """host.mjs (where run()'s time beyond the GPU goes) on an emitted module: the round trips, run()
    split into phases with stamps on its passes, and its recorded calls replayed, reading back run()'s outputs."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(*[layer for _ in range(12) for layer in (torch.nn.Linear(32, 32), torch.nn.ReLU())]).eval()
    config = model_config(net, (torch.randn(4, 32),), name="mlp")  # the "cpu" class, which SwiftShader gets: fast here
    compiled = compile_module(net, config)
    folder = compiled.write(tmp_path / "kuma")
    out = tmp_path / "host.json"
    flags = [arg for flag in bench.dawn_flags(dawn) for arg in ("--flag", flag)]
    subprocess.run([dawn.node, str(DAWN / "host.mjs"), "--runs", "3", "--warmup", "2", "--rounds", "1", "--stream", "2", *flags, "--out", str(out), str(folder)], capture_output=True, timeout=120)
    result = json.loads(out.read_text())
    assert result["ok"], result["error"]
    assert 0 < result["basics"]["emptySubmitDoneUs"] and 0 < result["basics"]["copyMapUs"] and result["basics"]["longJob"]["gpuUs"] > 0
    model = result["models"][0]
    phases = model["phases"]
    assert phases["stamps"] and phases["runs"] == 3 and len(phases["chunks"]) == 2  # SUBMIT_FIRST: two command buffers
    assert phases["totalUs"] > phases["waitUs"] > 0 and phases["gpuBusyUs"] > 0
    assert model["replays"]["dispatches"] == len(compiled.program["dispatches"]) and model["replays"]["matches"]
    assert all(us > 0 for us in model["replays"]["medianUs"].values())


def test_copy_probe_on_dawn(dawn, tmp_path):
    result = bench.node_job(dawn, {"engine": "copy", "bytes": 4 << 20, "repeats": 4, "runs": 3}, tmp_path, "copy", timeout=120)
    assert result["ok"], result["error"]
    assert result["same"] and result["bytes"] == 4 << 20  # the copy holds the source's bytes
    assert np.isfinite(result["gbps"])


def test_read_probe_on_dawn(dawn, tmp_path):
    # the XOR of the words the kernel read is the buffer's: each word read once, none skipped
    result = bench.node_job(dawn, {"engine": "read", "bytes": 1 << 20, "repeats": 3, "runs": 2}, tmp_path, "read", timeout=120)
    assert result["ok"], result.get("error")
    assert result["same"] and result["bytes"] == 1 << 20 and result["gbps"] > 0


def test_gemm_knobs_name_a_kernels_constant(capsys):
    """bench.py --gemm-knob: NAME sets kernels/gemm.py's constant, MODULE.NAME kernels/MODULE.py's
    (a string constant takes a bare word), GPU.field the "gpu" device class's field; anything else is
    a usage error naming the file."""
    from kuma_build.compiler.kernels import gemm, gemm_matrix
    from kuma_build.devices import GPU
    parser = argparse.ArgumentParser(prog="bench.py")
    knobs = bench.gemm_knobs(parser, ["SPLIT_TRAFFIC=0", "gemm_matrix.WEIGHT_LOADS=ahead", "gemm_matrix.STEPS=(16, 32)",
                                      "GPU.sliced_occupancy=2.0"])
    assert knobs == {"SPLIT_TRAFFIC": 0, "gemm_matrix.WEIGHT_LOADS": "ahead", "gemm_matrix.STEPS": (16, 32), "GPU.sliced_occupancy": 2.0}
    assert [bench.knob_target(name) for name in knobs] == [(gemm, "SPLIT_TRAFFIC"), (gemm_matrix, "WEIGHT_LOADS"), (gemm_matrix, "STEPS"),
                                                           (GPU, "sliced_occupancy")]
    for pair, says in (("NOPE=1", "kernels/gemm.py"), ("gemm_matrix.NOPE=1", "kernels/gemm_matrix.py"),
                       ("nowhere.X=1", "kernels/nowhere.py"), ("gemm_matrix.REGISTERS=many", "not a Python literal"),
                       ("GPU.nope=1", "DeviceClass")):
        with pytest.raises(SystemExit):
            bench.gemm_knobs(parser, [pair])
        assert says in capsys.readouterr().err, pair
