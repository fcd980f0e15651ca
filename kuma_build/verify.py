"""`kuma verify`: run the emitted artifact on the local WebGPU adapter and compare with PyTorch eager."""

import numpy as np
import torch

from kuma_build.outfolder import read_program
from kuma_build.compiler.export import build_module, call_order, example_inputs, user_code
from kuma_build.errors import KumaError
from kuma_build.webgpu import GpuModel

# default largest relative L2 error per precision: f16 and int8 weights round (docs/precision.md)
DEFAULT_TOLERANCE = {"f32": 1e-5, "f16": 1e-2, "int8": 5e-2}


def verify_model(project, model, seed: int) -> dict[str, tuple[float, float]]:
    """{output name: (max abs error, relative L2 error)} on seeded random inputs."""
    folder = project.out_dir / model.name
    if not (folder / "index.js").is_file():
        raise KumaError(f"model {model.name} has not been built; run `kuma build {model.name}` first.", folder)
    program = read_program(folder)
    expected_inputs = [{"name": s.name, "shape": list(s.shape)} for s in model.inputs]
    if [{"name": i["name"], "shape": i["shape"]} for i in program["inputs"]] != expected_inputs:
        raise KumaError(f"the built model {model.name} does not match kuma.toml's inputs; run `kuma build {model.name}` again.", folder)

    net = build_module(model, project.root)
    inputs = example_inputs(model, torch.Generator().manual_seed(seed))
    order = call_order(net, model)
    with user_code(model, "running forward()", lambda e: f"the model fails in PyTorch: {type(e).__name__}: {e}."), torch.no_grad():
        expected = torch.utils._pytree.tree_leaves(net(*[inputs[n] for n in order]))
    gpu = GpuModel(program, folder)
    try:
        actual = gpu.run({name: t.numpy() for name, t in inputs.items()})
    finally:
        gpu.release()
    report = {}
    for (name, got), want in zip(actual.items(), expected):
        want = want.detach().numpy().astype(np.float64)  # a parameter returned as an output requires grad
        diff = got.astype(np.float64) - want
        max_abs = float(np.abs(diff).max()) if diff.size else 0.0
        scale = np.linalg.norm(want)
        report[name] = (max_abs, float(np.linalg.norm(diff) / scale) if scale > 0 else float(np.linalg.norm(diff)))
    return report
