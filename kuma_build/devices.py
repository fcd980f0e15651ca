"""Device classes: what a kind of WebGPU device can do and what runs fast on it, as one value.

The fastest kernels differ between a CPU implementation of WebGPU and a GPU by 2-6x either way
(docs/performance.md, "Device classes"). A model is compiled for each class kuma.toml's `target`
names ("auto", the default, is both, and the browser runtime picks one by the adapter at load);
the value travels with the graph (Graph.device) through the passes, the kernels and the plan, so
two classes can be compiled side by side in one process. This module imports nothing, so config.py
checks kuma.toml's `target` against it without loading the compiler.

"cpu": software WebGPU (SwiftShader, lavapipe) runs a workgroup per core (2 on the machines
measured) and switches between all of a workgroup's invocations at every barrier, so its kernels
have none: a thread per row, register-blocked products, direct convolutions. "gpu": a discrete GPU
keeps hundreds of workgroups in flight; products tile through workgroup memory, convolutions are
implicit GEMMs.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceClass:
    name: str
    # --- limits every kernel keeps (those of a modest device, Chromium's SwiftShader) ---
    storage_buffers: int = 10  # storage buffers per shader stage; one is a kernel's output
    workgroup_threads: int = 256  # invocations per workgroup
    workgroup_bytes: int = 16384  # workgroup memory
    binding_bytes: int = 1 << 27  # bytes one storage binding may span (WebGPU's default maxStorageBufferBindingSize)
    # --- tuning choices ---
    # workgroups the device runs at once: the tile cost model's waves (an H100 or H200: 132
    # multiprocessors x 2 of our 256-thread workgroups; 6% faster convolutions than 128 in the
    # sweep of docs/performance.md)
    parallel: int = 256
    # workgroups of a tile of at most 64 x 64 (4 x 4 outputs a thread) in flight for one of a bigger
    # tile (`parallel` counts those: 8 x 8 accumulators a thread leave registers for two a
    # multiprocessor). An H200 sweep of BERT's and ViT's linear layers measured 64 x 64 fastest at
    # all twelve shapes, where the cost model without this picked 128-wide tiles (docs/performance.md)
    small_tile_occupancy: int = 2
    # the same for a sliced product's tile (kernels/gemm.py: SLICED_TILE in SLICED_GROUPS groups, 8 x 4
    # sums a thread): three a multiprocessor, as its 79-80 registers a thread allow (H200's driver
    # through Dawn, 2026-12-01 13:34). Set for the 32 x 64 tile before it, whose 4 x 8 sums took as
    # many registers: on Dawn (H200, 2026-12-01, docs/performance.md) GPT-2's 384 workgroups of 12
    # steps (128 x 3072, split in two) ran in one wave, ViT's 504 (197 x 2304) in two, where no split
    # (252 of 24 steps) took the whole model 2-3% less GPU time
    sliced_occupancy: float = 1.5
    # one more dispatch (split-K's sum of partials) in the tile cost model's units (kernels/gemm.py:
    # cost, a thread's FMAs in a wave): BERT's products on the H200 took about 5 ns a unit, so
    # 1024 is about Dawn's 5 us of host time per dispatch (docs/performance.md)
    dispatch_cost: int = 1024
    implicit_gemm_conv: bool = True  # plain convolutions as implicit GEMMs (else direct kernels)
    tiles: tuple[int, ...] = (16, 32, 64, 128)  # tile sides for the tiled GEMM and split-K's choice
    splits: tuple[int, ...] = (1, 2, 4, 8, 16, 32)  # slices K may be split into, to fill the device
    thread_rows: bool = False  # softmax, norms, reductions, attention: a thread per row (else a workgroup sharing it)
    register_gemm: bool = False  # every product as gemm_registers.py's barrier-free kernel (else thin or tiled by shape)
    # linear layers of one input as one wider product (passes/merge_products.py: BERT's queries,
    # keys and values); fewer dispatches and more tiles each, for a GPU's many multiprocessors
    merge_products: bool = True
    # a split-K sum of at most this many slices is read in place by the norm, softmax, reduction,
    # elementwise kernel or split sum after it instead of a dispatch of its own (passes/split_k.py; a
    # sum holding another's slices counts both), when that reader reads each element several times
    # (a norm's row too long for registers makes three passes, kernels/rows.py): longer sums cost it
    # more than the dispatch (about 7 us on Dawn: 5 of host time, docs/performance.md)
    fold_splits: int = 8
    # the same for a reader that reads each element once (a split sum, a norm's row in registers):
    # it reads the slices the dispatch would have read and skips writing and rereading their sum, so
    # every split folds (BERT's 16-slice sums of the feed-forward's down projection, into the norm after)
    fold_splits_once: int = 32
    # its adapters may offer subgroup matrices (tensor cores: kernels/gemm_matrix.py's variant of the
    # tiled products); software ones never do, so the "cpu" class's products never get that variant
    # and an f16 build makes no "<class>-f16" program for it (below)
    subgroup_matrices: bool = True
    # workgroup memory a "-f16" program's kernel may take beyond workgroup_bytes (kernels/attention_matrix.py):
    # the program asks the device for it, and the runtime takes the plain program on an adapter that
    # has less. Adapters with subgroup matrices offer 32 KB (Apple) to 64 KB; Dawn offers 48 KB on the H200
    matrix_workgroup_bytes: int = 49152
    # an elementwise result that reads a product's result through a permutation is stored in the
    # product's order, and its readers read it so (passes/operand_order.py): ConvNeXt's residual
    # stream channels last, so that a warp's threads read and write neighbours. Not measured on
    # software devices, whose depthwise convolutions are direct kernels: off there
    operand_order: bool = True


GPU = DeviceClass("gpu")
CPU = DeviceClass("cpu", parallel=2, small_tile_occupancy=1, implicit_gemm_conv=False, tiles=(16, 32, 64), splits=(1,), thread_rows=True,
                  register_gemm=True, merge_products=False, subgroup_matrices=False, operand_order=False)
DEVICE_CLASSES = {d.name: d for d in (GPU, CPU)}


TARGETS = ("auto", *DEVICE_CLASSES)  # kuma.toml's `target`: every class, or one

# An f16 build (kuma.toml precision = "f16") makes for each class "<class>", which runs on any device:
# the f32 build's kernels and plan, its weights sent as f16 and widened to f32 as they are written to
# the GPU (passes/weight_storage.py), so it is never slower than the f32 build, and half the download;
# and, for a class whose adapters may offer subgroup matrices, "<class>-f16" for devices with
# shader-f16 and them (its kernels read f16 weights and multiply on tensor cores, or in f16), written
# only when some kernel has a subgroup-matrix variant or the products are convolutions (their f16
# code is the faster): the runtime takes it nowhere else (templates/runtime.js, loadModel;
# compiler.ships; docs/precision.md).
F16_PROGRAM = "-f16"
# every program name a build may write
PROGRAMS = (*DEVICE_CLASSES, *(d.name + F16_PROGRAM for d in DEVICE_CLASSES.values() if d.subgroup_matrices))


def device_classes(target: str) -> list[DeviceClass]:
    """The classes kuma.toml's `target` names (config.py checks it against TARGETS)."""
    return list(DEVICE_CLASSES.values()) if target == "auto" else [DEVICE_CLASSES[target]]
