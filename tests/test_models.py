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
from kuma_build.compiler.export import build_module, example_inputs
from kuma_build.config import load_project
from kuma_build.verify import reference_outputs
from kuma_build.webgpu import run_program
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


def model_inputs(model, name: str, seed: int) -> dict[str, torch.Tensor]:
    inputs = example_inputs(model, torch.Generator().manual_seed(seed))
    if name == "gpt":  # real token ids over the whole vocabulary
        inputs["tokens"] = torch.randint(0, 211, model.inputs[0].shape, generator=torch.Generator().manual_seed(seed + 1))
    return inputs


def assert_runs_like_pytorch(net, model, inputs, program, folder=None, chunks=None):
    actual = run_program(program, {k: v.numpy() for k, v in inputs.items()}, folder, chunks)
    for (_, got), want in zip(actual.items(), reference_outputs(net, model, inputs)):
        assert got.shape == want.shape
        assert rel_l2(got, want) <= TOLERANCE


@pytest.mark.parametrize("name", MODELS)
def test_emitted_program_matches_pytorch(project, name):
    model = project.models[name]
    folder = project.out_dir / name
    assert_runs_like_pytorch(build_module(model, project.root), model, model_inputs(model, name, 1234), read_program(folder), folder)


@pytest.mark.parametrize("name", ["resnet", "mobilenet", "gpt", "unet"])
def test_gpu_class_model_matches_pytorch(project, name, tmp_path):
    """The same models compiled for the "gpu" device class (implicit-GEMM convolutions, 8x8 tiles,
    split-K, a workgroup per row), which the op tests cover op by op, as whole graphs, run as their
    output folder ships them (the kernels with short names, shortnames.py)."""
    model = dataclasses.replace(project.models[name], target="gpu")
    net = build_module(model, project.root)
    folder = compile_module(net, model).write(tmp_path)
    assert_runs_like_pytorch(net, model, model_inputs(model, name, 99), read_program(folder), folder)
