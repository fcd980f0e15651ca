"""Weight precision (kuma.toml `precision`): how constant weights are stored and read.

`choose_weight_storage` marks the weight operands (matmul operands, conv weights,
embedding tables) of at least MIN_ELEMENTS values as f16 or int8; biases, norms and
small tensors stay f32. Kernels don't change: Bindings.load() reads every binding
through `reader()`, which turns the stored format back into an f32 value.

  f16   2 bytes a value. Read as array<u32> + unpack2x16float (every device), or, in
        the kernel's shader-f16 variant, as a native array<f16>. The bytes are the same.
        That variant of a matrix product also multiplies in f16 (kernels/gemm.py, `half`).
  int8  symmetric, one scale per output channel: scale = max|w| / 127, q = round(w / scale).
        The buffer holds the int8 values (4 a word), then one f32 scale per channel; the
        channel of flat element i is (i / step) % count.
Other arithmetic stays f32 (accumulation included): only the weight storage shrinks.
"""

from math import ceil

import torch

MIN_ELEMENTS = 1024  # smaller weights stay f32 (as TFLite's dynamic-range quantisation does)
F16_MAX = 65504.0


def weight_dim(node, k: int) -> int | None:
    """The output-channel dim of input k's view when it is a weight operand, else None."""
    if node.op == "matmul" and k in (0, 1):
        return 1 if k == 0 else 2  # A [b, M, K]: rows; B [b, K, N]: columns
    if node.op == "conv2d" and k == 1:
        return 1 if node.attrs["transposed"] else 0  # [Cout, Cin/g, ...] or [Cin, Cout/g, ...]
    if node.op == "gather" and k == 0:
        return node.attrs["dim"]  # an embedding table's row
    return None


def choose_weight_storage(graph, precision: str) -> None:
    if precision == "f32":
        return
    for node in graph.nodes:
        for k, value in enumerate(node.inputs):
            buf, dim = value.buffer, weight_dim(node, k)
            if dim is None or buf.kind != "const" or buf.dtype != "f32" or buf.storage != "f32" or buf.numel < MIN_ELEMENTS:
                continue
            buf.storage = precision
            if precision == "int8":
                buf.channels = channel_axis(value, dim)


def channel_axis(value, dim: int) -> tuple[int, int]:
    """(step, count) such that (flat index // step) % count is the index along `dim` of every
    element the view reads; (1, 1), one scale for the whole tensor, when no such pair exists."""
    step, count = value.strides[dim], value.shape[dim]
    if step == 0 or count == 1:
        return (1, 1)
    flat = torch.as_strided(torch.arange(value.buffer.numel), value.shape, value.strides, value.offset)
    along = torch.arange(count).reshape([count if d == dim else 1 for d in range(len(value.shape))])
    return (step, count) if bool(((flat // step) % count == along).all()) else (1, 1)


def stored_words(buf) -> int:
    """Size of a buffer on the GPU in 4-byte words."""
    if buf.storage == "f16":
        return ceil(buf.numel / 2)
    if buf.storage == "int8":
        return ceil(buf.numel / 4) + buf.channels[1]
    return buf.numel


def encode(buf) -> bytes:
    """A constant buffer's bytes as the GPU stores them (little-endian, padded to 4 bytes)."""
    data = buf.data
    if buf.storage == "f16":
        raw = data.float().clamp(-F16_MAX, F16_MAX).numpy().astype("<f2").tobytes()
    elif buf.storage == "int8":
        q, scales = quantize_int8(data.float(), *buf.channels)
        raw = q.numpy().tobytes()
        raw += bytes(-len(raw) % 4) + scales.numpy().astype("<f4").tobytes()
    else:
        raw = data.numpy().astype("<f4" if buf.dtype == "f32" else "<i4").tobytes()
    return raw + bytes(-len(raw) % 4)


def quantize_int8(w: torch.Tensor, step: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    channel = (torch.arange(w.numel()) // step) % count
    absmax = torch.zeros(count).scatter_reduce(0, channel, w.abs(), "amax")
    scales = absmax / 127
    safe = torch.where(scales > 0, scales, torch.ones_like(scales))
    q = torch.round(w / safe[channel]).clamp(-127, 127).to(torch.int8)
    return q, scales


def storage_key(buf) -> tuple:
    """What a kernel's code depends on in how buffer `buf` is stored (for kernel cache keys)."""
    return () if buf.storage == "f32" else (buf.storage, buf.numel, buf.channels)


def reader(buf, var: str, native_f16: bool = False) -> tuple[str, str]:
    """(WGSL element type of binding `var`, WGSL function `weight_<var>(i: u32) -> f32`)."""
    head = f"fn weight_{var}(i: u32) -> f32 {{"
    if buf.storage == "f16" and native_f16:
        return "f16", f"{head} return f32({var}[i]); }}"
    if buf.storage == "f16":
        return "u32", f"{head} return unpack2x16float({var}[i >> 1u])[i & 1u]; }}"
    step, count = buf.channels
    channel = "i" if step == 1 else f"(i / {step}u)"
    if step * count < buf.numel:
        channel = f"{channel} % {count}u"
    if count == 1:
        channel = "0u"
    scales = ceil(buf.numel / 4)
    return "u32", (f"{head}\n  let q = extractBits(bitcast<i32>({var}[i >> 2u]), (i & 3u) * 8u, 8u);\n"
                   f"  return f32(q) * bitcast<f32>({var}[{scales}u + {channel}]);\n}}")

