"""Plan: the dispatch list and a buffer assignment that reuses dead buffers.

Temporaries are packed into "slots" (GPU buffers) by lifetime: a value's slot
is free again after its last reader has run. A node's output never shares a
slot with its own inputs (WebGPU forbids binding one buffer as both read and
read_write storage in one dispatch). Inputs, outputs and weights get their own
buffers. The program dict is the contract every runtime (JS, wgpu-py) reads.
"""

from dataclasses import dataclass, field

from kuma_build.compiler.ir.graph import Buffer, Graph
from kuma_build.compiler.kernels import Kernel, lower_cached


@dataclass
class Plan:
    kernels: list[Kernel]               # distinct kernels in first-use order
    dispatches: list[tuple[int, list[int], tuple]]  # (kernel index, buffer indices, workgroups)
    buffers: list[dict]                  # {"size": bytes, "kind": ...}
    weights: list[Buffer]                # const buffers, index-aligned with weight_buffer
    weight_buffer: list[int] = field(default_factory=list)
    input_buffer: dict[str, int] = field(default_factory=dict)
    output_buffer: dict[str, int] = field(default_factory=dict)
    temp_bytes: int = 0                  # bytes of temporary slots
    temp_lower_bound: int = 0            # the most temporary bytes ever live at once
    kernels_reused: int = 0              # kernels found in the kernel cache


def make_plan(graph: Graph, kernel_store=None) -> Plan:
    lowered = [lower_cached(node, kernel_store) for node in graph.nodes]
    launches = [kernel for kernel, _ in lowered]

    last_use: dict[Buffer, int] = {}
    for step, launch in enumerate(launches):
        for buf in launch.buffers:
            last_use[buf] = step

    buffers: list[dict] = []
    index_of: dict[Buffer, int] = {}

    def own_buffer(buf: Buffer, kind: str) -> int:
        index_of[buf] = len(buffers)
        buffers.append({"size": buf.nbytes, "kind": kind})
        return index_of[buf]

    plan = Plan([], [], buffers, [])
    for name, value in graph.inputs.items():
        plan.input_buffer[name] = own_buffer(value.buffer, "input")
    for name, value in graph.outputs.items():
        plan.output_buffer[name] = own_buffer(value.buffer, "output")

    free: list[int] = []  # slot indices whose values are dead
    live_bytes = 0
    kernel_index: dict[str, int] = {}
    for step, launch in enumerate(launches):
        for buf in launch.buffers:
            if buf in index_of:
                continue
            if buf.kind == "const":
                plan.weights.append(buf)
                plan.weight_buffer.append(own_buffer(buf, "weight"))
            else:  # a temporary: the smallest free slot that fits, else grow one, else a new slot
                index_of[buf] = _take_slot(buffers, free, buf.nbytes)
                live_bytes += buf.nbytes
        plan.temp_lower_bound = max(plan.temp_lower_bound, live_bytes)
        for buf in set(launch.buffers):
            if buf.kind == "temp" and last_use[buf] == step:
                free.append(index_of[buf])
                live_bytes -= buf.nbytes
        if launch.code not in kernel_index:
            kernel_index[launch.code] = len(plan.kernels)
            plan.kernels.append(launch)
        plan.dispatches.append((kernel_index[launch.code], [index_of[b] for b in launch.buffers], launch.workgroups))
    plan.temp_bytes = sum(b["size"] for b in buffers if b["kind"] == "temp")
    plan.kernels_reused = len(plan.kernels) - len({k.code for k, reused in lowered if not reused})
    return plan


def _take_slot(buffers: list[dict], free: list[int], size: int) -> int:
    fitting = [i for i in free if buffers[i]["size"] >= size]
    if fitting:
        slot = min(fitting, key=lambda i: buffers[i]["size"])
    elif free:
        slot = max(free, key=lambda i: buffers[i]["size"])
        buffers[slot]["size"] = size
    else:
        buffers.append({"size": size, "kind": "temp"})
        return len(buffers) - 1
    free.remove(slot)
    return slot
