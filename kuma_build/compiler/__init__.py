"""The compiler, stage by stage: export -> IR -> passes -> kernels -> plan -> emit."""

import time
from dataclasses import dataclass
from pathlib import Path

from kuma_build.compiler import emit
from kuma_build.compiler.cost import dispatch_costs
from kuma_build.compiler.export import build_module, export
from kuma_build.compiler.ir.importer import import_program
from kuma_build.compiler.ir.sizes import max_value
from kuma_build.compiler.kernels.gemm import THIN
from kuma_build.compiler.ops import check_dynamic, record
from kuma_build.devices import F16_PROGRAM, DeviceClass, device_classes
from kuma_build.compiler.passes import run_passes
from kuma_build.compiler.passes.matrix_attention import attention_on_matrices
from kuma_build.compiler.passes.matrix_blocks import store_matrix_weights_blocked
from kuma_build.compiler.passes.page_weights import page_weights
from kuma_build.compiler.passes.weight_storage import choose_weight_storage
from kuma_build.compiler.plan import make_plan
from kuma_build.config import ModelConfig, Project
from kuma_build.outfolder import write_output


@dataclass
class Compiled:
    name: str
    programs: dict[str, dict]  # program name (device class, devices.F16_PROGRAM) -> the whole program the runtimes run on it
    manifest: dict
    chunks: list  # the weight chunks of every class (classes share the chunks with the same bytes)
    stats: dict  # the first class's, for the build report

    @property
    def program(self) -> dict:
        """The program of the first (for a build of one class, the only) device class."""
        return next(iter(self.programs.values()))

    def files(self) -> dict[str, bytes]:
        return emit.output_files(self.programs, self.manifest, self.chunks)

    def write(self, out_dir: Path) -> Path:
        folder = out_dir / self.name
        write_output(folder, self.files())
        return folder


@dataclass
class ClassBuild:
    """The model compiled for one device class: its graph after the passes and its plan."""
    device: DeviceClass
    graph: object
    plan: object
    ops: int  # IR nodes before the passes
    name: str  # the program's: the class's, or "<class>-f16" for devices with shader-f16 and tensor cores (devices.F16_PROGRAM)
    widen: bool  # an f16 build's program for every other device (compile_for)


def compile_for(device: DeviceClass, exported, model: ModelConfig, input_names, output_names, kernel_store,
                widen: bool = False) -> ClassBuild:
    """widen: an f16 build's program for devices without tensor cores, compiled as the f32 build is,
    its weights sent as f16 (passes/weight_storage.py)."""
    graph = import_program(exported, model.name, model.source, input_names, output_names, device,
                           model.dims, {s.name: s.shape for s in model.inputs})
    ops = len(graph.nodes)
    # split_k's choice of tiles must know which weights will be narrower
    graph.precision = "f32" if widen else model.precision
    run_passes(graph)
    check_dynamic(graph)
    choose_weight_storage(graph, model.precision, widen)
    if graph.precision == "f16" and device.subgroup_matrices:  # the "-f16" program
        store_matrix_weights_blocked(graph)
        attention_on_matrices(graph)
    page_weights(graph)  # last: it splits the weights as stored
    name = device.name + (F16_PROGRAM if model.precision == "f16" and not widen else "")
    return ClassBuild(device, graph, make_plan(graph, kernel_store), ops, name, widen)


def programs_for(devices: list[DeviceClass], precision: str) -> list[tuple[DeviceClass, bool]]:
    """(class, widen) of each program to build: one per class; an f16 build's widened one, and before
    it "<class>-f16" for a class whose adapters may offer subgroup matrices (devices.F16_PROGRAM)."""
    if precision != "f16":
        return [(device, False) for device in devices]
    return [(device, widen) for device in devices for widen in ((False, True) if device.subgroup_matrices else (True,))]


# tests set it False to run the "-f16" program of a layer whose products take no subgroup matrices
# (its kernels are those a model's "-f16" program has for such products beside ones that do)
ONLY_WITH_MATRICES = True


def ships(build: ClassBuild) -> bool:
    """Whether a browser can take the program: "<class>-f16" only on a device with subgroup matrices
    (templates/runtime.js, loadModel), so only when some kernel has a variant on them, or its products
    are convolutions (convolutions_only); else the widened program runs everywhere."""
    return build.widen or not build.name.endswith(F16_PROGRAM) or not ONLY_WITH_MATRICES or \
        any(k.code_matrix for k in build.plan.kernels) or convolutions_only(build)


def convolutions_only(build: ClassBuild) -> bool:
    """Whether every product the tiled kernel computes (not the thin kernel's few rows or columns) is
    a convolution, and there is one. Their shader-f16 code is faster than the f32 build's kernels,
    where linear layers' is slower (the f32 build's take sliced K): on the H200 through Dawn
    (2026-12-02 18:32-18:46 UTC, docs/performance.md), ResNet-50, whose convolutions take no subgroup
    matrices (gemm_matrix.worthwhile), 0.981 ms back to back with the shader-f16 code against 1.046
    for the widened program; BERT, GPT-2 and ViT 2-5% slower (docs/precision.md)."""
    tiled = [node.op for node in build.graph.nodes
             if (shape := record(node).product(node, build.device)) and min(max_value(shape[1]), max_value(shape[2])) > THIN]
    return bool(tiled) and all(op == "conv2d" for op in tiled)


def compile_module(net, model: ModelConfig, chunk_size: int = 4 << 20, kernel_store=None, key: str = "",
                   devices: list[DeviceClass] | None = None) -> Compiled:
    """Compile an nn.Module already built, with the specs of `model`, for each device class its
    target names (or the `devices` given): exported once, then imported, rewritten and planned per class."""
    started = time.perf_counter()
    exported, input_names, output_names = export(net, model)
    devices = devices or device_classes(model.target)
    builds = [compile_for(device, exported, model, input_names, output_names, kernel_store, widen)
              for device, widen in programs_for(devices, model.precision)]
    builds = [b for b in builds if ships(b)]
    chunks, copies = emit.pack_classes([b.plan for b in builds], chunk_size)
    specs = {s.name: s for s in model.inputs}
    programs = {b.name: emit.program_dict(model.name, b.plan, b.graph, specs, chunks, c, native_f16=b.name.endswith(F16_PROGRAM))
                for b, c in zip(builds, copies)}
    per_class = {b.name: class_stats(b) for b in builds}
    manifest = emit.manifest_dict(programs, builds[0].plan, chunks, copies[0], per_class, key)
    manifest["classes"] = {b.name: {**manifest["classes"][b.name], "dispatch_costs": dispatch_costs(b.graph, b.plan)}
                           for b in builds}  # [bytes, flops] per dispatch, for `kuma bench`
    stats = {**per_class[builds[0].name], "weight_bytes": sum(len(c.data) for c in chunks), "chunks": len(chunks),
             "classes": list(programs)}
    stats["kernels_reused"] = sum(b.plan.kernels_reused for b in builds)
    stats["kernels_total"] = sum(len(b.plan.kernels) for b in builds)
    stats["seconds"] = round(time.perf_counter() - started, 3)  # not in the manifest: outputs must be reproducible
    return Compiled(model.name, programs, manifest, chunks, stats)


def class_stats(build: ClassBuild) -> dict:
    plan = build.plan
    return {"ops": build.ops, "dispatches": len(plan.dispatches), "kernels": len(plan.kernels),
            "activation_bytes": plan.temp_bytes, "activation_lower_bound": plan.temp_lower_bound}


def compile_model(project: Project, model: ModelConfig, kernel_store=None, key: str = "") -> Compiled:
    net = build_module(model, project.root)
    return compile_module(net, model, project.chunk_size, kernel_store, key)
