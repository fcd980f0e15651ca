"""Incremental, content-addressed builds through the real CLI: no-op and restored builds never
import torch, edits recompile only what changed, chunk files of unchanged layers keep their bytes."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

MODEL = """
from torch import nn
from layers import width

def build_model():
    return nn.Sequential(nn.Linear(24, width), nn.ReLU(), nn.Linear(width, 40), nn.ReLU(),
                         nn.Linear(40, 40), nn.ReLU(), nn.Linear(40, 7))
"""

TOML = """
[build]
out_dir = "out"
chunk_size = "4KiB"

[models.net]
source = "models/net.py"
factory = "build_model"
weights = "net.safetensors"
[models.net.inputs]
x = { shape = [2, 24], dtype = "float32" }
"""


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "project"
    (root / "models").mkdir(parents=True)
    (root / "kuma.toml").write_text(TOML)
    (root / "models" / "net.py").write_text(MODEL)
    (root / "models" / "layers.py").write_text("width = 30\n")
    torch.manual_seed(3)
    sys.path.insert(0, str(root / "models"))
    try:
        namespace = {}
        exec(compile(MODEL, "net.py", "exec"), namespace)
        save_file(namespace["build_model"]().state_dict(), str(root / "net.safetensors"))
    finally:
        sys.path.remove(str(root / "models"))
        sys.modules.pop("layers", None)
    return root


def kuma(root, *args, no_torch=False, env=None):
    env = {**os.environ, **(env or {})}
    if no_torch:  # a fake torch that fails to import: proves the command never imports it
        fake = root.parent / "no-torch"
        (fake / "torch").mkdir(parents=True, exist_ok=True)
        (fake / "torch" / "__init__.py").write_text("raise ImportError('torch must not be imported here')\n")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(fake), env.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, "-m", "kuma_build", *args], cwd=root, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_cold_builds_are_byte_identical(project, tmp_path):
    twin = tmp_path / "twin"
    shutil.copytree(project, twin)
    kuma(project, "build")
    kuma(twin, "build")
    assert snapshot(project / "out") == snapshot(twin / "out")


def test_noop_and_restore_never_import_torch(project):
    assert "[kuma] built net in" in kuma(project, "build")
    built = snapshot(project / "out")
    assert "[kuma] net is up to date" in kuma(project, "build", no_torch=True)
    shutil.rmtree(project / "out")
    assert "[kuma] restored net from local cache" in kuma(project, "build", no_torch=True)
    assert snapshot(project / "out") == built


def test_force_recompiles(project):
    kuma(project, "build")
    out = kuma(project, "build", "--force")
    assert "[kuma] built net in" in out and "kernels 0 compiled" in out


def test_layer_edit_recompiles_only_changed_kernels(project):
    first = kuma(project, "build")
    kernels = int(first.split("kernels ")[1].split(" compiled")[0])
    (project / "models" / "layers.py").write_text("width = 31\n")
    save_file({k: torch.randn(31, *v.shape[1:]) if k == "0.weight" else torch.randn(31) if k == "0.bias"
               else torch.randn(v.shape[0], 31) if k == "2.weight" else v
               for k, v in load_file(str(project / "net.safetensors")).items()}, str(project / "net.safetensors"))
    assert "imports (models/layers.py)" in kuma(project, "cache", "explain", "net")
    second = kuma(project, "build")
    compiled = int(second.split("kernels ")[1].split(" compiled")[0])
    reused = int(second.split("compiled / ")[1].split(" reused")[0])
    assert 0 < compiled < kernels and reused > 0, second


def test_weight_change_rewrites_only_that_layers_chunks(project):
    kuma(project, "build")
    before = snapshot(project / "out" / "net")
    weights = load_file(str(project / "net.safetensors"))
    weights["4.weight"] = weights["4.weight"] + 1  # one layer retrained
    save_file(weights, str(project / "net.safetensors"))
    explained = kuma(project, "cache", "explain", "net")
    assert "changed since the last build:" in explained and explained.strip().endswith("weights")
    out = kuma(project, "build")
    after = snapshot(project / "out" / "net")
    old_chunks = {k for k in before if k.startswith("weights/")}
    new_chunks = {k for k in after if k.startswith("weights/")}
    manifest = json.loads(after["manifest.json"])
    layer_chunks = {p["chunk"] for w in manifest["weights"] if w["name"] == "4.weight" for p in w["pieces"]}
    assert len(old_chunks) >= 4
    assert new_chunks - old_chunks == layer_chunks and len(old_chunks - new_chunks) == len(layer_chunks)
    assert f"chunks {len(layer_chunks)} written / {len(new_chunks) - len(layer_chunks)} kept" in out
    for name in old_chunks & new_chunks:
        assert before[name] == after[name]


def test_corrupt_cache_is_discarded_and_rebuilt(project):
    kuma(project, "build")
    built = snapshot(project / "out")
    shutil.rmtree(project / "out")
    blobs = sorted((project / ".kuma" / "cache" / "blobs").rglob("*"), key=lambda p: p.stat().st_size if p.is_file() else 0)
    blobs[-1].write_bytes(b"garbage")
    out = kuma(project, "build")
    assert "[kuma] warning: discarded corrupt cache blob" in out and "[kuma] built net in" in out
    assert snapshot(project / "out") == built
    assert "[kuma] net is up to date" in kuma(project, "build")


def test_two_builds_at_once_are_safe(project):
    env = {**os.environ}
    runs = [subprocess.Popen([sys.executable, "-m", "kuma_build", "build"], cwd=project, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert all(run.returncode == 0 for run in runs), outputs
    lines = "".join(out for out, _ in outputs)
    assert lines.count("[kuma] built net in") == 1 and lines.count("[kuma] net is up to date") == 1
    assert "[kuma] verify net.output" in kuma(project, "verify")


def test_cache_commands(project):
    kuma(project, "build")
    assert "1 model builds" in kuma(project, "cache", "stats")
    assert "nothing changed since the last build" in kuma(project, "cache", "explain", "net")
    assert "pruned 0 builds" in kuma(project, "cache", "prune")
    assert "[kuma] cleared" in kuma(project, "cache", "clear")
    assert "0 model builds" in kuma(project, "cache", "stats")


def test_cache_dir_from_environment(project, tmp_path):
    kuma(project, "build", env={"KUMA_CACHE_DIR": str(tmp_path / "ci-cache")})
    assert (tmp_path / "ci-cache" / "models").is_dir() and not (project / ".kuma").exists()


def test_kernels_with_run_time_workgroup_counts_are_cached(tmp_path):
    """A dims model's kernel ({"size", "per"} workgroup counts) is read back from the cache; a count
    of another shape is a damaged entry, discarded."""
    from kuma_build.cache.store import LocalCache
    cache = LocalCache(tmp_path / "cache")
    cache.claim()
    kernel = {"name": "gelu", "code": "fn main() {}", "workgroups": [{"size": [[32, "seq"], [1]], "per": 256}, 2, 1], "code_f16": None}
    cache.write_kernel("dims", kernel)
    assert cache.read_kernel("dims") == kernel and not cache.problems
    cache.write_kernel("bad", {**kernel, "workgroups": [{"size": [[32, 7]], "per": 0}, 1, 1]})
    assert cache.read_kernel("bad") is None and len(cache.problems) == 1
