"""`kuma bench` on lavapipe: the per-kernel table is printed and its totals add up, and the
compiler's per-dispatch costs in manifest.json are right. Timings themselves are never asserted."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kuma_build.outfolder import read_program

MODELS = Path(__file__).parent / "models"
MODEL_TOML = """
[build]
out_dir = "out"
[models.mlp]
source = "mlp.py"
factory = "build_model"
target = "cpu"  # one device class: one report
inputs = { x = { shape = [3, 50], dtype = "float32" } }
[models.gpt]
source = "gpt.py"
factory = "build_model"
inputs = { tokens = { shape = [1, 37], dtype = "int64" } }
"""


def kuma(*args, cwd):
    return subprocess.run([sys.executable, "-m", "kuma_build", *args], cwd=cwd, capture_output=True, text=True)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    for name in ("mlp.py", "gpt.py"):
        shutil.copy(MODELS / name, root / name)
    (root / "kuma.toml").write_text(MODEL_TOML)
    result = kuma("build", "mlp", cwd=root)
    assert result.returncode == 0, result.stderr
    return root


def test_manifest_records_bytes_and_flops_per_dispatch(project):
    manifest = json.loads((project / "out" / "mlp" / "manifest.json").read_text())
    costs = manifest["classes"]["cpu"]["dispatch_costs"]
    assert len(costs) == manifest["classes"]["cpu"]["dispatches"]
    # Linear(50, 129) on [3, 50]: x, the transposed weight, the broadcast bias once, the output
    assert costs[0] == [4 * (3 * 50 + 50 * 129 + 129 + 3 * 129), 2 * 3 * 129 * 50]


def test_markdown_table_has_kernel_rows_and_totals_add_up(project):
    result = kuma("bench", "mlp", "--runs", "2", "--warmup", "1", cwd=project)
    assert result.returncode == 0, result.stderr
    assert re.search(r"\[kuma\] bench mlp \(cpu kernels\) on .*\(Vulkan\): 2 runs, end-to-end [\d.]+ ms", result.stdout)
    rows = [line.split("|")[1:-1] for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    header, *kernels, total = [[cell.strip() for cell in row] for row in rows]
    assert header == ["kernel", "calls", "total µs", "share", "GB/s", "GFLOP/s"]
    program = read_program(project / "out" / "mlp")
    assert {row[0] for row in kernels} == {k["name"] for k in program["kernels"]} and total[0] == "**total**"
    assert sum(int(row[1]) for row in kernels) == int(total[1]) == len(program["dispatches"])
    assert sum(float(row[2]) for row in kernels) == pytest.approx(float(total[2]), abs=0.05 * len(kernels))
    assert sum(float(row[3].rstrip("%")) for row in kernels) == pytest.approx(100.0, abs=0.05 * len(kernels))


def test_json_event_per_model(project):
    result = kuma("bench", "--json", "--runs", "2", "--warmup", "0", "mlp", cwd=project)
    assert result.returncode == 0, result.stderr
    event = json.loads(result.stdout.splitlines()[-1])
    assert event["event"] == "bench" and event["model"] == "mlp" and event["timing"] == "dispatch"
    assert event["e2e_ms"] > 0 and event["gpu_ms"] > 0
    assert sum(row["calls"] for row in event["kernels"]) == event["dispatches"] == len(read_program(project / "out" / "mlp")["dispatches"])
    assert sum(row["us"] for row in event["kernels"]) == pytest.approx(event["kernels_ms"] * 1e3)
    assert sum(row["share"] for row in event["kernels"]) == pytest.approx(1.0)
    assert all(row["gbps"] >= 0 and row["gflops"] >= 0 for row in event["kernels"])


def test_unbuilt_model_is_an_error(project):
    result = kuma("bench", "gpt", cwd=project)
    assert result.returncode == 1
    assert "has not been built; run `kuma build gpt` first" in result.stderr


def test_a_program_the_adapter_cannot_run_is_reported_as_not_run(project, monkeypatch, capsys):
    """As kuma verify does (webgpu.why_not_here: an f16 build's tensor-core program without shader-f16,
    or over the adapter's workgroup memory, which tests/test_attention_matrix.py builds)."""
    from kuma_build import bench
    from kuma_build.config import load_project
    monkeypatch.setattr(bench, "why_not_here", lambda program: "this adapter has too little of something")
    for as_json, expected in ((False, "[kuma] bench mlp (cpu kernels): not run: this adapter has too little of something"),
                              (True, '{"event": "bench", "model": "mlp", "device_class": "cpu", "not_run": "this adapter has too little of something"}')):
        assert bench.run_bench(load_project(project / "kuma.toml"), ["mlp"], 2, 0, as_json) == 0
        assert capsys.readouterr().out.splitlines() == [expected]
