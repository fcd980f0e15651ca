"""Plan: the dispatch list and a buffer assignment that reuses dead buffers.

Temporaries are packed into "slots" (GPU buffers) by lifetime, offline since
every lifetime is known: largest first, each into the smallest slot whose
values' lifetimes don't overlap its own, else a new slot (greedy by size, as
TFLite's arena planner does; a split-K product's big, short-lived partial
sums then share one slot). A node's output never shares a slot with its own
inputs, as their lifetimes overlap at that node (WebGPU forbids binding one
buffer as both read and read_write storage in one dispatch). Inputs, outputs,
weights and state get their own buffers; a state buffer whose initial value is not
all zeros also gets a weight buffer holding that value, which the runtimes copy into
it at load and on reset(). The program dict is the contract every runtime (JS, wgpu-py) reads.
"""

import random
from dataclasses import dataclass, field

from kuma_build.compiler.ir.graph import DIMS, Buffer, Graph, const
from kuma_build.compiler.kernels import spec_key
from kuma_build.compiler.kernels.wgsl import Kernel, binding_buffers
from kuma_build.compiler.ops import record
from kuma_build.outfolder import WIDEN

RESHUFFLES = 200


@dataclass
class Plan:
    kernels: list[Kernel]               # distinct kernels in first-use order
    dispatches: list[tuple[int, list[int], tuple, dict | None]]  # (kernel index, buffer indices, workgroups, when)
    buffers: list[dict]                  # {"size": bytes, "kind": ...}
    weights: list[Buffer]                # const buffers, index-aligned with weight_buffer (each one's first buffer)
    weight_buffer: list[int] = field(default_factory=list)
    input_buffer: dict[str, int] = field(default_factory=dict)
    output_buffer: dict[str, int] = field(default_factory=dict)
    state: list[dict] = field(default_factory=list)  # {"name", "buffer", "init": weight buffer or None (zeros)}
    temp_bytes: int = 0                  # bytes of temporary slots
    temp_lower_bound: int = 0            # the most temporary bytes ever live at once
    kernels_reused: int = 0              # kernels found in the kernel cache


def make_plan(graph: Graph, kernel_store=None) -> Plan:
    lowered = [lower_cached(node, graph.device, kernel_store) for node in graph.nodes]
    launches = [kernel for kernel, _ in lowered]  # one per node (and its Kernel.then dispatches)

    first_use: dict[Buffer, int] = {}
    last_use: dict[Buffer, int] = {}
    for step, launch in enumerate(launches):
        for buf in launch.buffers:
            first_use.setdefault(buf, step)
            last_use[buf] = step
    slot_of = assign_slots([b for b in first_use if b.kind == "temp"], first_use, last_use)

    buffers: list[dict] = []
    index_of: dict[Buffer, int] = {}

    def own_buffer(buf: Buffer, kind: str) -> int:
        """Its first buffer index; a paged weight takes one buffer per page, in order. A widened weight's
        (outfolder.WIDEN) size is its bytes as sent (f16): the runtime makes its GPU buffer twice that."""
        index_of[buf] = len(buffers)
        if buf.transit != "f32":
            kind = WIDEN
        buffers.extend({"size": buf.sent_bytes(p), "kind": kind} for p in range(buf.pages))
        return index_of[buf]

    plan = Plan([], [], buffers, [])
    for name, value in graph.inputs.items():
        plan.input_buffer[name] = own_buffer(value.buffer, "input")
    for name, value in graph.outputs.items():
        plan.output_buffer[name] = own_buffer(value.buffer, "output")
    for name, (start, _) in graph.state.items():
        init = None
        if start.buffer.data.any():
            plan.weights.append(const(start.buffer.data, name).buffer)
            init = own_buffer(plan.weights[-1], "weight")
            plan.weight_buffer.append(init)
        plan.state.append({"name": name, "buffer": own_buffer(start.buffer, "state"), "init": init})
    if graph.dims:  # the dims' current values, a u32 each (docs/design.md, Dimensions)
        index_of[DIMS] = len(buffers)
        buffers.append({"size": 16 * -(-len(graph.dims) // 4), "kind": "dims"})

    slot_buffer: dict[int, int] = {}  # slot -> its buffer index, made at the slot's first use
    live_bytes = 0
    kernel_index: dict[str, int] = {}
    for step, launch in enumerate(launches):
        for buf in launch.buffers:
            if buf in index_of:
                continue
            if buf.kind == "const":
                plan.weights.append(buf)
                plan.weight_buffer.append(own_buffer(buf, "weight"))
            else:
                slot, size = slot_of[buf]
                if slot not in slot_buffer:
                    slot_buffer[slot] = len(buffers)
                    buffers.append({"size": size, "kind": "temp"})
                index_of[buf] = slot_buffer[slot]
                live_bytes += buf.nbytes
        plan.temp_lower_bound = max(plan.temp_lower_bound, live_bytes)
        for buf in set(launch.buffers):
            if buf.kind == "temp" and last_use[buf] == step:
                live_bytes -= buf.nbytes
        for kernel in launch.chain():
            if kernel.code not in kernel_index:
                kernel_index[kernel.code] = len(plan.kernels)
                plan.kernels.append(kernel)
            bound = [index_of[b] + p for b in kernel.buffers for p in range(b.pages)]
            plan.dispatches.append((kernel_index[kernel.code], bound, kernel.workgroups, kernel.when))
    plan.temp_bytes = sum(b["size"] for b in buffers if b["kind"] == "temp")
    plan.kernels_reused = len(plan.kernels) - len({k.code for k, reused in lowered if not reused})
    return plan


def lower_cached(node, device, store) -> tuple[Kernel, bool]:
    """The node's kernel, from the kernel cache `store` (read_kernel / write_kernel, or None) when it
    has it; and whether it did."""
    key = spec_key(node, device)
    cached = store.read_kernel(key) if store else None
    if cached:
        return Kernel.from_entry(cached, binding_buffers(node)), True
    kernel = record(node).lower(node, device)
    if store:
        store.write_kernel(key, kernel.entry())
    return kernel, False


def assign_slots(temps: list[Buffer], first_use: dict, last_use: dict) -> dict[Buffer, tuple[int, int]]:
    """Buffer -> (slot, slot size), from the packing order that needs the fewest bytes: largest
    first, in order of use, or one of RESHUFFLES seeded shuffles (slots are whole buffers, so no
    single order is best; the shuffles took MobileNetV2 from 1.30x to 1.18x of the lower bound)."""
    shuffler = random.Random(0)  # seeded: the same model always gets the same plan
    orders = [sorted(temps, key=lambda b: (-b.nbytes, first_use[b])), sorted(temps, key=lambda b: first_use[b])]
    orders += [shuffler.sample(temps, len(temps)) for _ in range(RESHUFFLES)]
    plans = [_pack(order, first_use, last_use) for order in orders]
    return min(plans, key=lambda slot_of: sum({slot: size for slot, size in slot_of.values()}.values()))


def _pack(order: list[Buffer], first_use: dict, last_use: dict) -> dict[Buffer, tuple[int, int]]:
    """Each buffer into the smallest slot that holds it and is free for its whole lifetime; else the
    largest free one, grown; else a new slot."""
    sizes: list[int] = []
    lives: list[list[tuple[int, int]]] = []
    slot_of = {}
    for buf in order:
        start, end = first_use[buf], last_use[buf]
        free = [i for i in range(len(sizes)) if all(end < a or b < start for a, b in lives[i])]
        fitting = [i for i in free if sizes[i] >= buf.nbytes]
        if fitting:
            slot = min(fitting, key=lambda i: sizes[i])
        elif free:
            slot = max(free, key=lambda i: sizes[i])
            sizes[slot] = buf.nbytes
        else:
            slot = len(sizes)
            sizes.append(buf.nbytes)
            lives.append([])
        lives[slot].append((start, end))
        slot_of[buf] = slot
    return {buf: (slot, sizes[slot]) for buf, slot in slot_of.items()}
