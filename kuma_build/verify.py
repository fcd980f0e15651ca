"""`kuma verify`: run the emitted artifact on the local WebGPU adapter and compare with PyTorch eager.

A model with dims is checked at each dim's min, max and a value between (dim_values), each a report
of its own. rel_l2, reference_outputs and compare are also what the tests check every kernel and
model with.
"""

import numpy as np
import torch

from kuma_build.cache.entry import BadEntry, check_files, make_entry, parse_entry
from kuma_build.cache.keys import sha256_file
from kuma_build.outfolder import chunk_file, damaged_files, program_classes, read_manifest, read_record, read_program
from kuma_build.compiler.export import build_module, buffer_values, call_order, example_inputs, restore_buffers, user_code
from kuma_build.errors import KumaError
from kuma_build.webgpu import GpuModel, why_not_here

# default largest relative L2 error per precision: f16 and int8 weights round (docs/precision.md)
DEFAULT_TOLERANCE = {"f32": 1e-5, "f16": 1e-2, "int8": 5e-2}


def rel_l2(actual: np.ndarray, expected: np.ndarray) -> float:
    """||actual - expected|| / ||expected|| in float64 (the plain norm of the difference when expected is 0)."""
    expected = np.asarray(expected, dtype=np.float64)
    diff = np.linalg.norm(np.asarray(actual, dtype=np.float64) - expected)
    scale = np.linalg.norm(expected)
    return float(diff / scale) if scale > 0 else float(diff)


def reference_outputs(net: torch.nn.Module, model, inputs: dict[str, torch.Tensor]) -> list[np.ndarray]:
    """PyTorch eager's outputs of net on inputs named as in kuma.toml, flattened in output order
    (on copies: a forward() that mutates its inputs leaves the caller's alone)."""
    order = call_order(net, model)
    with user_code(model, "running forward()", lambda e: f"the model fails in PyTorch: {type(e).__name__}: {e}."), torch.no_grad():
        outputs = net(*[inputs[n].clone() for n in order])
    return [t.detach().numpy() for t in torch.utils._pytree.tree_leaves(outputs)]  # a parameter returned as an output requires grad


def compare(actual: dict[str, np.ndarray], expected: list[np.ndarray]) -> dict[str, tuple[float, float]]:
    """{output name: (max abs error, relative L2 error)}."""
    report = {}
    for (name, got), want in zip(actual.items(), expected):
        diff = got.astype(np.float64) - want.astype(np.float64)
        report[name] = (float(np.abs(diff).max()) if diff.size else 0.0, rel_l2(got, want))
    return report


def dim_values(model) -> list[dict[str, int]]:
    """The dims' values a model is checked at: every dim at its min, at its max, and between ([{}]
    for a model without dims). The middle is odd where it can be, to catch kernels that assume even sizes."""
    if not model.dims:
        return [{}]
    middle = {name: ((low + high) // 2) | 1 if high - low > 2 else (low + high) // 2 for name, (low, high) in model.dims.items()}
    picks = [{name: low for name, (low, _) in model.dims.items()}, middle, {name: high for name, (_, high) in model.dims.items()}]
    return [values for i, values in enumerate(picks) if values not in picks[:i]]


def verify_model(project, model, seed: int) -> dict[str, dict[str, tuple[float, float]] | str]:
    """{what ran: {output name: (max abs error, relative L2 error)}} on seeded random inputs, for each
    program the build has (each class's, an f16 build's "-f16" one too: all run on the local adapter)
    and, for a model with dims, each of their values in dim_values: "gpu kernels", or "gpu kernels,
    seq = 7"; for a program the adapter cannot run, why not (webgpu.why_not_here)."""
    folder = project.out_dir / model.name
    if not (folder / "index.js").is_file():
        raise KumaError(f"model {model.name} has not been built; run `kuma build {model.name}` first.", folder)
    files = check_folder(folder, model)
    programs = {name: read_program(folder, name) for name in program_classes(folder)}
    expected_inputs = [{"name": s.name, "shape": list(s.shape)} for s in model.inputs]
    if [{"name": i["name"], "shape": i["shape"]} for i in next(iter(programs.values()))["inputs"]] != expected_inputs:
        raise KumaError(f"the built model {model.name} does not match kuma.toml's inputs; run `kuma build {model.name}` again.", folder)

    net = build_module(model, project.root)
    chunks = [files[chunk_file(c["id"])] for c in next(iter(programs.values()))["chunks"]]  # the classes share them, checked once
    reports = {}
    for name, program in programs.items():
        reason = why_not_here(program)
        for at, report in ({"": reason} if reason else verify_program(net, model, program, chunks, seed)).items():
            reports[f"{name} kernels{at}"] = report
    return reports


def verify_program(net, model, program: dict, chunks: list[bytes], seed: int) -> dict[str, dict[str, tuple[float, float]]]:
    """{"" or ", seq = 7": {output name: (max abs error, relative L2 error)}} of one program against
    net on seeded random inputs, for each of dim_values (one loaded program runs them in turn). A
    model with state (buffers forward() updates in place) runs twice on each side, the second run
    seeing the first one's writes, and each output reports its worse run; net's buffers are as they
    were afterwards."""
    runs = 2 if program.get("state") else 1
    initial = buffer_values(net)
    gpu = GpuModel(program, chunks=chunks)
    reports = {}
    try:
        for values in dim_values(model):
            report = reports["".join(f", {d} = {v}" for d, v in values.items())] = {}
            for run in range(runs):
                inputs = example_inputs(model, torch.Generator().manual_seed(seed + run), values)
                expected = reference_outputs(net, model, inputs)
                actual = gpu.run({name: t.numpy() for name, t in inputs.items()})
                for name, errors in compare(actual, expected).items():
                    report[name] = max(report.get(name, errors), errors, key=lambda e: e[1])
        return reports
    finally:
        gpu.release()
        restore_buffers(net, initial)


def check_folder(folder, model) -> dict[str, bytes]:
    """Every file of the output folder as kuma build wrote it: each recorded hash, and the whole
    folder consistent as a cache entry must be (index.js rendered from its program, chunks named by
    hash). Returns the files' bytes, by path."""
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
    return files
