"""Whole models, built with `kuma build` from tests/models/kuma.toml, checked with `kuma verify`
and directly: the emitted program runs on real WebGPU against PyTorch eager on fresh random inputs."""

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kuma_build.compiler import compile_module
from kuma_build.outfolder import read_program
from kuma_build.compiler.export import build_module, call_order, example_inputs
from kuma_build.config import load_project
from kuma_build.webgpu import GpuModel
from support import TOLERANCE, rel_l2

MODELS = ["mlp", "convnet", "resnet", "mobilenet", "transformer", "gpt", "unet"]


def kuma(*args, cwd):
    return subprocess.run([sys.executable, "-m", "kuma_build", *args], cwd=cwd, capture_output=True, text=True)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    shutil.copytree(Path(__file__).parent / "models", root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("out", "__pycache__"))
    result = kuma("build", cwd=root)
    assert result.returncode == 0, result.stderr
    for name in MODELS:
        assert f"[kuma] built {name} in" in result.stdout
    return load_project(root / "kuma.toml")


@pytest.mark.parametrize("name", MODELS)
def test_kuma_verify(project, name):
    result = kuma("verify", name, "--seed", "7", cwd=project.root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"[kuma] verify {name}." in result.stdout and "FAILED" not in result.stdout


@pytest.mark.parametrize("name", MODELS)
def test_emitted_program_matches_pytorch(project, name):
    model = project.models[name]
    folder = project.out_dir / name
    net = build_module(model, project.root)
    inputs = example_inputs(model, torch.Generator().manual_seed(1234))
    if name == "gpt":  # real token ids over the whole vocabulary
        inputs["tokens"] = torch.randint(0, 211, model.inputs[0].shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = torch.utils._pytree.tree_leaves(net(*[inputs[n] for n in call_order(net, model)]))
    gpu = GpuModel(read_program(folder), folder)
    try:
        actual = gpu.run({k: v.numpy() for k, v in inputs.items()})
    finally:
        gpu.release()
    for got, want in zip(actual.values(), expected):
        assert got.shape == tuple(want.shape)
        assert rel_l2(got, want.numpy()) <= TOLERANCE


@pytest.mark.parametrize("name", ["resnet", "mobilenet", "gpt", "unet"])
def test_gpu_class_model_matches_pytorch(project, name):
    """The same models compiled for the "gpu" device class (implicit-GEMM convolutions, 8x8 tiles,
    split-K, a workgroup per row), which the op tests cover op by op, as whole graphs."""
    model = dataclasses.replace(project.models[name], target="gpu")
    net = build_module(model, project.root)
    inputs = example_inputs(model, torch.Generator().manual_seed(99))
    if name == "gpt":
        inputs["tokens"] = torch.randint(0, 211, model.inputs[0].shape, generator=torch.Generator().manual_seed(6))
    compiled = compile_module(net, model)
    with torch.no_grad():
        expected = torch.utils._pytree.tree_leaves(net(*[inputs[n] for n in call_order(net, model)]))
    gpu = GpuModel(compiled.program, chunks=[c.data for c in compiled.chunks])
    try:
        actual = gpu.run({k: v.numpy() for k, v in inputs.items()})
    finally:
        gpu.release()
    for got, want in zip(actual.values(), expected):
        assert rel_l2(got, want.numpy()) <= TOLERANCE
