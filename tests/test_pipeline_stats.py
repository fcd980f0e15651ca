"""The pipeline-statistics layer (bench/gpu/vulkan/pipeline_stats.c), the tool that asks a GPU's
driver what it made of each kernel (registers, machine code: docs/performance.md): built with gcc,
loaded by the Vulkan loader under wgpu-py on lavapipe, where it passes everything through, writes
each shader's SPIR-V and a line per pipeline (no statistics: lavapipe lacks the extension)."""

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# a product of a compiled model run through kuma's wgpu-py runner, in a process of its own: the
# loader reads the layer's variables when wgpu creates its instance
PROGRAM = """
import numpy as np, torch
from kuma_build.compiler import compile_module
from support import Fn, model_config, run_compiled
x, w = torch.randn(37, 50), torch.randn(50, 29)
net = Fn(lambda x, w: torch.relu(x @ w))
config = model_config(net, [x, w], device="gpu")
[out] = run_compiled(compile_module(net, config), config, [x, w])
print(float(np.abs(out - torch.relu(x @ w).numpy()).max()))
"""


def test_layer_records_each_pipeline_and_changes_nothing(tmp_path):
    subprocess.run(["bash", str(ROOT / "bench/gpu/vulkan/build.sh"), str(tmp_path / "layer")], check=True, capture_output=True)
    stats = tmp_path / "stats"
    env = {**os.environ, "VK_LAYER_PATH": str(tmp_path / "layer"), "VK_INSTANCE_LAYERS": "VK_LAYER_KUMA_pipeline_stats",
           "KUMA_PIPELINE_STATS": str(stats), "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    run = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert float(run.stdout.split()[-1]) < 1e-3  # the kernels ran as without the layer
    assert "[VK_LAYER_KUMA_pipeline_stats] device created" in run.stderr
    lines = [json.loads(line) for line in (stats / "pipelines.jsonl").read_text().splitlines()]
    assert lines and all(line["entry"] == "main" and line["executables"] is None for line in lines)  # lavapipe: no statistics
    for line in lines:  # each pipeline's module, as SPIR-V (its magic number first)
        spirv = (stats / f"shader-{line['shader']}.spv").read_bytes()
        assert len(spirv) == 4 * line["words"] and struct.unpack("<I", spirv[:4])[0] == 0x07230203
