"""`kuma verify`: run the emitted artifact on the local WebGPU adapter and compare with PyTorch eager."""

import numpy as np
import torch

from kuma_build.cache.entry import BadEntry, check_files, make_entry, parse_entry
from kuma_build.cache.keys import sha256_file
from kuma_build.outfolder import damaged_files, read_manifest, read_record, read_program
from kuma_build.compiler.export import build_module, call_order, example_inputs
from kuma_build.errors import KumaError
from kuma_build.webgpu import GpuModel

# default largest relative L2 error per precision: f16 and int8 weights round (docs/precision.md)
DEFAULT_TOLERANCE = {"f32": 1e-5, "f16": 1e-2, "int8": 5e-2}


def verify_model(project, model, seed: int) -> dict[str, tuple[float, float]]:
    """{output name: (max abs error, relative L2 error)} on seeded random inputs."""
    folder = project.out_dir / model.name
    if not (folder / "index.js").is_file():
        raise KumaError(f"model {model.name} has not been built; run `kuma build {model.name}` first.", folder)
    check_folder(folder, model)
    program = read_program(folder)
    expected_inputs = [{"name": s.name, "shape": list(s.shape)} for s in model.inputs]
    if [{"name": i["name"], "shape": i["shape"]} for i in program["inputs"]] != expected_inputs:
        raise KumaError(f"the built model {model.name} does not match kuma.toml's inputs; run `kuma build {model.name}` again.", folder)

    net = build_module(model, project.root)
    inputs = example_inputs(model, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = torch.utils._pytree.tree_leaves(net(*[inputs[n] for n in call_order(net, model)]))
    gpu = GpuModel(program, folder)
    try:
        actual = gpu.run({name: t.numpy() for name, t in inputs.items()})
    finally:
        gpu.release()
    report = {}
    for (name, got), want in zip(actual.items(), expected):
        want = want.numpy().astype(np.float64)
        diff = got.astype(np.float64) - want
        max_abs = float(np.abs(diff).max()) if diff.size else 0.0
        scale = np.linalg.norm(want)
        report[name] = (max_abs, float(np.linalg.norm(diff) / scale) if scale > 0 else float(np.linalg.norm(diff)))
    return report


def check_folder(folder, model) -> None:
    """Every file of the output folder as kuma build wrote it: each recorded hash, and the whole
    folder consistent as a cache entry must be (index.js rendered from its program, chunks named by hash)."""
    damaged = damaged_files(folder, sha256_file)
    if damaged is None:
        raise KumaError(f"model {model.name}'s output folder has no readable record of its files; run `kuma build {model.name}` to rebuild it.", folder)
    if damaged:
        raise KumaError(f"{', '.join(damaged)} of model {model.name} changed since kuma built it (missing, edited or damaged); "
                        f"run `kuma build {model.name}` to restore the folder.", folder)
    record = read_record(folder)
    files = {path: (folder / path).read_bytes() for path in record["files"]}
    manifest = read_manifest(folder)
    key = manifest.get("key") if isinstance(manifest, dict) and isinstance(manifest.get("key"), str) else ""
    try:
        entry = parse_entry(make_entry(model.name, key, files), model.name, key)
        check_files(entry, files, model)
    except BadEntry as e:
        raise KumaError(f"model {model.name}'s output folder is not a consistent kuma build (it {e}); "
                        f"run `kuma build {model.name}` to rebuild it.", folder)
