"""The device class kernels are tuned for: the fastest kernels differ between a CPU
implementation of WebGPU and a GPU by 2-6x either way (docs/performance.md, "Device classes").

"cpu": software WebGPU (SwiftShader, lavapipe) runs a workgroup per core (2 on the machines
measured) and switches between all of a workgroup's invocations at every barrier, so its kernels
have none: a thread per row, register-blocked products, direct convolutions. "gpu": a discrete GPU
keeps hundreds of workgroups in flight; products tile through workgroup memory, convolutions are
implicit GEMMs. kuma.toml's `target` picks the class per model (tuned_for); every kernel module
reads DEVICE when it generates code.

  parallel  workgroups the device runs at once: the tile cost model's waves (an H100 or H200:
            132 multiprocessors x 2 of our 256-thread workgroups; 6% faster convolutions than
            128 in the sweep of docs/performance.md)
  conv      plain convolutions: "direct" or implicit "gemm"
  tiles     tile sides for the tiled kernel and split-K's choice
  splits    slices K may be split into, to fill the device when the tiles are few
  rows      softmax, norms, reductions, attention: a "workgroup" per row sharing it through
            barriers, or a "thread" per row
  gemm      matrix products: thin or tiled by shape, sharing through "workgroup" memory, or
            "registers" for every shape (gemm_registers.py: a block of outputs per thread, no barriers)
"""

from contextlib import contextmanager

DEVICE_CLASSES = {
    "cpu": {"name": "cpu", "parallel": 2, "conv": "direct", "tiles": (16, 32, 64), "splits": (1,), "rows": "thread",
            "gemm": "registers"},
    "gpu": {"name": "gpu", "parallel": 256, "conv": "gemm", "tiles": (16, 32, 64, 128), "splits": (1, 2, 4, 8, 16, 32),
            "rows": "workgroup", "gemm": "workgroup"},
}
DEVICE = DEVICE_CLASSES["cpu"]


@contextmanager
def tuned_for(target: str | None):
    """Generate kernels for the device class `target` inside the block (None keeps the current one)."""
    global DEVICE
    saved = DEVICE
    DEVICE = DEVICE_CLASSES[target] if target else DEVICE
    try:
        yield
    finally:
        DEVICE = saved
