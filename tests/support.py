"""Compile a module in memory, run it on the real WebGPU adapter, compare with PyTorch."""

import difflib
import inspect
import json
import subprocess
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kuma_build.compiler import compile_module
from kuma_build.config import InputSpec, ModelConfig
from kuma_build.jsmodule import shipped_runtime
from kuma_build.shortnames import short_kernels
from kuma_build.verify import reference_outputs, rel_l2  # noqa: F401  (rel_l2: for the tests)
from kuma_build.webgpu import run_program

TOLERANCE = 1e-5  # relative L2 error, float32
# one product of an f16 build's "-f16" program (f16 operands, f16 sums of each K step) against PyTorch
# on the same f16 weights (docs/precision.md: 4.7e-4 to 6.9e-4 measured)
F16_MATH_LAYER_BOUND = 3e-3


def model_config(module: torch.nn.Module, inputs, name: str = "test", device: str = "cpu") -> ModelConfig:
    """A kuma.toml model section for module(*inputs), compiled for the device class `device`."""
    params = list(inspect.signature(module.forward).parameters)
    specs = [InputSpec(p, tuple(t.shape), {torch.float32: "float32", torch.int64: "int64", torch.int32: "int32"}[t.dtype])
             for p, t in zip(params, inputs)]
    source = Path(inspect.getsourcefile(type(module)))
    return ModelConfig(name, source, "", None, "f32", specs, None, {}, device)


def run_compiled(compiled, config: ModelConfig, inputs, program: str | None = None, matrix: bool = False) -> list[np.ndarray]:
    """The outputs of a compiled module's program (default: its first) on real WebGPU, for inputs in
    kuma.toml order, its kernels with the short names a class module ships (shortnames.py). matrix:
    the kernels' subgroup-matrix variants (an f16 build's "-f16" program built on
    gemm_matrix.EMULATED), where the browser would pick them."""
    feed = {s.name: t.numpy() for s, t in zip(config.inputs, inputs)}
    chosen = compiled.programs[program] if program else compiled.program
    program = {**chosen, "kernels": short_kernels(chosen["kernels"])}
    return list(run_program(program, feed, chunks=[c.data for c in compiled.chunks], matrix=matrix).values())


def run_on_gpu(module: torch.nn.Module, *inputs: torch.Tensor, chunk_size: int = 4 << 20, device: str = "cpu"):
    """(gpu outputs, torch outputs, compiled) for module(*inputs)."""
    module = module.eval()
    config = model_config(module, inputs, device=device)
    compiled = compile_module(module, config, chunk_size)
    expected = reference_outputs(module, config, {s.name: t for s, t in zip(config.inputs, inputs)})
    return run_compiled(compiled, config, inputs), expected, compiled


def assert_matches(module: torch.nn.Module, *inputs: torch.Tensor, tolerance: float = TOLERANCE, device: str = "cpu"):
    actual, expected, compiled = run_on_gpu(module, *inputs, device=device)
    assert_outputs_match(actual, expected, tolerance)
    return compiled


def assert_outputs_match(actual, expected, tolerance: float = TOLERANCE):
    """Integer outputs exactly, float outputs within `tolerance` relative L2."""
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.shape == e.shape, f"shape {a.shape} != {e.shape}"
        if e.dtype == np.bool_ or np.issubdtype(e.dtype, np.integer):
            np.testing.assert_array_equal(a, e.astype(a.dtype))
        else:
            assert np.isfinite(a).all() == np.isfinite(e).all()
            err = rel_l2(a, e)
            assert err <= tolerance, f"relative L2 error {err:.3g} > {tolerance}"


class Fn(nn.Module):
    """Wraps a function of two tensors so each test case is one line."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x, y):
        return self.fn(x, y)


class Fn1(Fn):
    """Wraps a function of one tensor."""

    def forward(self, x):
        return self.fn(x)


def assert_only_primitives_differ(real: str, emulated: str, arrays: tuple[str, str, str]) -> None:
    """A subgroup-matrix kernel as builds ship it (gemm_matrix.SUBGROUP_MATRIX) differs from the one
    built on the emulation (EMULATED, which the tests run) only in the lines calling a primitive, so
    the indexing tested is the indexing shipped. arrays: where its left and right matrices come from
    and its results go ("&tile_a,": the argument as the builtins take it)."""
    directives = "enable f16;\nenable chromium_experimental_subgroup_matrix;\ndiagnostic(off,chromium.subgroup_matrix_uniformity);\n"
    assert real.startswith(directives) and emulated.startswith("enable f16;\n")
    real_lines = real.removeprefix(directives).splitlines()
    emulated_lines = without_emulation_helpers(emulated.removeprefix("enable f16;\n").splitlines())
    left, right, result = arrays
    primitive = (f"subgroupMatrixLoad<subgroup_matrix_left<f16,16,16>>({left}", f"subgroupMatrixLoad<subgroup_matrix_right<f16,16,16>>({right}",
                 "subgroupMatrixMultiplyAccumulate(", f"subgroupMatrixStore({result}", "subgroup_matrix_result<f32,16,16>()")
    emulation = ("EmulatedMatrix(", "emulated_multiply_add(", "emulated_store(", "EmulatedResult()")
    used = set()
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=real_lines, b=emulated_lines, autojunk=False).get_opcodes():
        ours, theirs = real_lines[i1:i2], emulated_lines[j1:j2]
        if op == "equal":
            continue
        assert op == "replace" and len(ours) == len(theirs), (ours, theirs)
        for line, other in zip(ours, theirs):
            used |= {p for p in primitive if p in line}
            assert any(p in line for p in primitive) and any(e in other for e in emulation), (line, other)
            assert line.split("=")[0] == other.split("=")[0] or "=" not in line + other  # the same variable, or a store
    assert used == set(primitive)


def without_emulation_helpers(lines: list[str]) -> list[str]:
    """The emulated kernel's lines less its helpers (a run of `struct Emulated..` and `fn emulated_..`)."""
    start = next(i for i, line in enumerate(lines) if line.startswith("struct EmulatedMatrix"))
    end, depth = start, 0
    while depth or lines[end].startswith(("struct Emulated", "fn emulated_")):
        assert "subgroup" not in lines[end]
        depth += lines[end].count("{") - lines[end].count("}")
        end += 1
    return lines[:start] + lines[end:]


def run_runtime_script(folder: Path, script: str):
    """What a Node script that imports the whole runtime's loadModel (from "./runtime.mjs") prints, as JSON."""
    (folder / "runtime.mjs").write_text(shipped_runtime(needs=None) + "export { loadModel };\n")
    (folder / "script.mjs").write_text(script)
    result = subprocess.run(["node", str(folder / "script.mjs")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
