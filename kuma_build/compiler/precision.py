"""Weight precision (kuma.toml `precision`): how a constant weight is stored and read back.

passes/weight_storage.py chooses which weights are stored narrower. Kernels don't change:
Bindings.load() reads every binding through `reader()`, which turns the stored format back
into an f32 value.

  f16   2 bytes a value. Read as array<u32> + unpack2x16float (the memory-bound weights of
        an f16 build's widened program), or, in the kernel's shader-f16 variant (the code
        of the "-f16" program), as a native array<f16>. The bytes are the same.
        A kernel reading two neighbours i, i + 1 (i even) may load their word once
        (pair_word) and unpack it where it uses them (pair_values): gemm.py's thin
        kernel, conv.py's direct kernel (a filter row's words); rows of odd length
        are stored padded so that each starts on a word (passes/weight_storage.py).
        Words are what an f16 build's widened program reads its memory-bound weights
        by; its "-f16" program reads every f16 weight natively, and its matrix
        products also multiply in f16 (kernels/gemm.py, `half`).
  int8  symmetric, one scale per output channel: scale = max|w| / 127, q = round(w / scale).
        The buffer holds the int8 values (4 a word), then one f32 scale per channel; the
        channel of flat element i is (i / step) % count.
Other arithmetic stays f32 (accumulation included): only the weight storage shrinks.

An f16 [K, N] weight that tensor cores multiply may be stored in BLOCK x BLOCK blocks instead of
rows (Buffer.blocked = N; passes/matrix_blocks.py): block (K // BLOCK, N // BLOCK) row-major, each
block's 256 values contiguous and row-major. Kernels read element (k, n) at block_position (through
Bindings.load, which knows k and n), and kernels/gemm_matrix.py loads a block's matrix at once.
"""

from math import ceil

import torch

F16_MAX = 65504.0
BLOCK = 16  # the side of a blocked weight's blocks: a subgroup matrix's (kernels/gemm_matrix.MATRIX)


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
    if buf.blocked:  # [K / BLOCK, BLOCK, N / BLOCK, BLOCK] -> block-major
        data = data.reshape(-1, BLOCK, buf.blocked // BLOCK, BLOCK).permute(0, 2, 1, 3).reshape(-1)
    if buf.storage == "f16" or buf.transit == "f16":  # stored f16, or sent f16 and widened at load
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
    return () if buf.storage == "f32" else (buf.storage, buf.numel, buf.channels, buf.blocked)


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



def block_position(row: str, column: str, n: int) -> str:
    """WGSL of where element (row, column) of a [K, n] weight stored in blocks lies (Buffer.blocked):
    quotients and remainders of the two indices by BLOCK (shifts and masks), where a row-major
    index would need a division by n."""
    side = BLOCK
    return f"({row}) / {side}u * {side * n}u + ({column}) / {side}u * {side * side}u + ({row}) % {side}u * {side}u + ({column}) % {side}u"


def pair_word(buf, var: str, offset: str) -> str | None:
    """WGSL u32 holding element `offset` of an f16 binding `var` read as words (not the shader-f16
    variant), and offset + 1 when offset is even (else offset - 1); None for other storage."""
    return f"{var}[({offset}) >> 1u]" if buf.storage == "f16" and buf.pages == 1 and not buf.blocked else None


def pair_values(word: str) -> str:
    """The two f32 values (a vec2) of a pair_word."""
    return f"unpack2x16float({word})"
