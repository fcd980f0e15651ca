"""Incremental-build benchmark: wall time of `kuma build` (a fresh process each time, as a user or
CI runs it) on the example project and on a ResNet-18-style model, in each cache situation.

    .venv/bin/python bench/incremental.py

Prints a Markdown table; docs/benchmarks.md keeps the committed results.
"""

import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from nginx_fixture import running_nginx  # noqa: E402

RESNET_TOML = """
[build]
out_dir = "out"

[models.resnet]
source = "models/resnet.py"
factory = "build_model"
weights = "weights/resnet.safetensors"
[models.resnet.inputs]
image = { shape = [1, 3, 224, 224], dtype = "float32" }
"""


def make_example(folder: Path) -> tuple[str, str]:
    shutil.copytree(ROOT / "example-site", folder, ignore=shutil.ignore_patterns("node_modules", "dist", "src", ".kuma"))
    return "models/classifier.py", "weights/classifier.safetensors"


def make_resnet(folder: Path) -> tuple[str, str]:
    (folder / "models").mkdir(parents=True)
    (folder / "weights").mkdir()
    for name in ("resnet.py", "convnet.py"):
        shutil.copy(ROOT / "tests" / "models" / name, folder / "models" / name)
    (folder / "kuma.toml").write_text(RESNET_TOML)
    sys.path.insert(0, str(folder / "models"))
    import resnet
    sys.path.pop(0)
    torch.manual_seed(0)
    save_file(resnet.build_model().state_dict(), str(folder / "weights" / "resnet.safetensors"))
    return "models/resnet.py", "weights/resnet.safetensors"


def kuma_build(folder: Path, env: dict) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "kuma_build", "build"], cwd=folder, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    return seconds, result.stdout.strip().splitlines()[-1]


def edit_one_layer(source: Path) -> None:
    """Change one layer's code without changing its weights' shapes: swap its activation."""
    text = source.read_text()
    edited = re.sub(r"nn\.ReLU\(\)", "nn.ReLU6()", text, count=1)
    assert edited != text, f"no nn.ReLU() to edit in {source}"
    source.write_text(edited)


def retrain_one_layer(weights: Path) -> None:
    state = load_file(str(weights))
    name = [k for k in state if k.endswith("weight") and state[k].dim() > 1][-1]
    state[name] = state[name] * 1.01
    save_file(state, str(weights))


def scenarios(name: str, make, work: Path, server) -> list[tuple[str, str, float, str]]:
    project = work / name.split()[0]
    source, weights = make(project)
    env = {**os.environ, "KUMA_CACHE_DIR": str(work / f"{project.name}-cache")}
    toml = project / "kuma.toml"
    toml.write_text(toml.read_text() + f'\n[cache]\nremote = "{server.url}/{name.split()[0]}"\n')
    rows = []

    def measure(label):
        seconds, line = kuma_build(project if label != "fresh clone, warm remote cache" else clone, env if label != "fresh clone, warm remote cache" else clone_env)
        rows.append((name, label, seconds, line))

    measure("cold build (empty caches)")
    measure("no-op build")
    edit_one_layer(project / source)
    measure("one-layer code edit")
    retrain_one_layer(project / weights)
    measure("weight-only change")
    clone = work / f"{project.name}-clone"
    shutil.copytree(project, clone, ignore=shutil.ignore_patterns("out", "src"))
    clone_env = {**os.environ, "KUMA_CACHE_DIR": str(work / f"{project.name}-clone-cache")}
    measure("fresh clone, warm remote cache")
    return rows


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with running_nginx(work / "nginx") as server:
            rows = scenarios("example-site", make_example, work, server) + scenarios("resnet18 (224x224)", make_resnet, work, server)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}; "
          f"python {platform.python_version()}\n")
    print("| project | scenario | wall time | kuma's report |")
    print("|---|---|---|---|")
    for project, label, seconds, line in rows:
        print(f"| {project} | {label} | {seconds:.2f} s | `{line}` |")


if __name__ == "__main__":
    main()
