"""The model tests' conv net, transformer layer, GPT decoder and UNet, built with `kuma build`,
imported by a page served from 127.0.0.1 in headless Chromium (WebGPU on SwiftShader)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from browser_support import run_folder
from kuma_build.compiler.export import build_module, call_order, example_inputs
from kuma_build.config import load_project
from support import assert_outputs_match

MODELS = ["convnet", "transformer", "gpt", "unet"]
pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser-models")
    shutil.copytree(Path(__file__).parent / "models", root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("out", "__pycache__"))
    result = subprocess.run([sys.executable, "-m", "kuma_build", "build", *MODELS], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return load_project(root / "kuma.toml")


@pytest.mark.parametrize("name", MODELS)
def test_built_model_runs_in_chromium(project, name):
    model = project.models[name]
    net = build_module(model, project.root)
    inputs = example_inputs(model, torch.Generator().manual_seed(99))
    if name == "gpt":
        inputs["tokens"] = torch.randint(0, 211, model.inputs[0].shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = [t.numpy() for t in torch.utils._pytree.tree_leaves(net(*[inputs[n] for n in call_order(net, model)]))]
    run = run_folder(project.out_dir / name, {k: v.numpy() for k, v in inputs.items()})
    assert run.facts["progress"]["last"][0] == run.facts["progress"]["last"][1] > 0
    assert_outputs_match(list(run.outputs.values()), expected)
