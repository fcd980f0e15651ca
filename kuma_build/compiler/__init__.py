"""The compiler, stage by stage: export -> IR -> passes -> kernels -> plan -> emit."""

import time
from dataclasses import dataclass
from pathlib import Path

from kuma_build.compiler import emit
from kuma_build.compiler.cost import dispatch_costs
from kuma_build.compiler.export import build_module, export
from kuma_build.compiler.ir.importer import import_program
from kuma_build.devices import device_class
from kuma_build.compiler.passes import run_passes
from kuma_build.compiler.passes.weight_storage import choose_weight_storage
from kuma_build.compiler.plan import make_plan
from kuma_build.config import ModelConfig, Project
from kuma_build.outfolder import write_output


@dataclass
class Compiled:
    name: str
    program: dict
    manifest: dict
    chunks: list
    stats: dict

    def files(self) -> dict[str, bytes]:
        return emit.output_files(self.program, self.manifest, self.chunks)

    def write(self, out_dir: Path) -> Path:
        folder = out_dir / self.name
        write_output(folder, self.files())
        return folder


def compile_module(net, model: ModelConfig, chunk_size: int = 4 << 20, kernel_store=None, key: str = "") -> Compiled:
    """Compile an nn.Module already built, with the specs of `model`."""
    started = time.perf_counter()
    program, input_names, output_names = export(net, model)
    graph = import_program(program, model.name, model.source, input_names, output_names, device_class(model.target))
    ops = len(graph.nodes)
    run_passes(graph)
    choose_weight_storage(graph, model.precision)
    plan = make_plan(graph, kernel_store)
    chunks, copies = emit.pack_weights(plan, chunk_size)
    specs = {s.name: s for s in model.inputs}
    program_json = emit.program_dict(model.name, plan, graph, specs, chunks, copies)
    stats = {
        "ops": ops,
        "dispatches": len(plan.dispatches),
        "kernels": len(plan.kernels),
        "weight_bytes": sum(len(c.data) for c in chunks),
        "chunks": len(chunks),
        "activation_bytes": plan.temp_bytes,
        "activation_lower_bound": plan.temp_lower_bound,
    }
    manifest = emit.manifest_dict(program_json, plan, chunks, copies, dict(stats), key)
    manifest["dispatch_costs"] = dispatch_costs(graph, plan)  # [bytes, flops] per dispatch, for `kuma bench`
    stats["kernels_reused"] = plan.kernels_reused
    stats["seconds"] = round(time.perf_counter() - started, 3)  # not in the manifest: outputs must be reproducible
    return Compiled(model.name, program_json, manifest, chunks, stats)


def compile_model(project: Project, model: ModelConfig, kernel_store=None, key: str = "") -> Compiled:
    net = build_module(model, project.root)
    return compile_module(net, model, project.chunk_size, kernel_store, key)
