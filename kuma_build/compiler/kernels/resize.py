"""Upsampling (nearest, bilinear): one thread per output (n, c, oh, ow).

Source coordinates follow torch's CPU kernels (UpSampleKernel.cpp) bit for
bit: the scale is an f32, 1/scale_factor when one was given, else in/out (or
(in-1)/(out-1) with align_corners); equal sizes copy, and nearest with
out == 2*in halves the index, as torch special-cases both.
"""

import numpy as np

from kuma_build.compiler.kernels.wgsl import Bindings, f32, indent, threads, unravel


def scale(in_size: int, out_size: int, scale_factor: float | None, align_corners: bool) -> str:
    if align_corners:
        return f32(np.float32(in_size - 1) / np.float32(out_size - 1)) if out_size > 1 else "0.0"
    if scale_factor is not None and scale_factor > 0:
        return f32(1.0 / scale_factor)
    return f32(np.float32(in_size) / np.float32(out_size))


def nearest(axis: str, out: str, in_size: int, out_size: int, scale_factor) -> list[str]:
    """WGSL defining `{axis}0`, the source index."""
    if out_size == in_size:
        source = out
    elif out_size == 2 * in_size:
        source = f"{out} >> 1u"
    else:
        source = f"min(u32(f32({out}) * {scale(in_size, out_size, scale_factor, False)}), {in_size - 1}u)"
    return [f"let {axis}0 = {source};"]


def linear(axis: str, out: str, in_size: int, out_size: int, scale_factor, align_corners: bool) -> list[str]:
    """WGSL defining `{axis}0`, `{axis}1` (the two source indices) and `{axis}_t` (the weight of `{axis}1`)."""
    if out_size == in_size:
        return [f"let {axis}0 = {out};", f"let {axis}1 = {out};", f"let {axis}_t = 0.0;"]
    s = scale(in_size, out_size, scale_factor, align_corners)
    source = f"{s} * f32({out})" if align_corners else f"max({s} * (f32({out}) + 0.5) - 0.5, 0.0)"
    return [f"let {axis}_src = {source};",
            f"let {axis}0 = min(u32({axis}_src), {in_size - 1}u);",
            f"let {axis}1 = min({axis}0 + 1u, {in_size - 1}u);",
            f"let {axis}_t = clamp({axis}_src - f32({axis}0), 0.0, 1.0);"]


def lower(node, device):
    b = Bindings(node)
    x, out = node.inputs[0], node.output
    scales, align_corners = node.attrs["scales"], node.attrs["align_corners"]
    header, workgroups = threads(out.numel)
    lines, (n, c, oh, ow) = unravel("gid", out.shape)
    if node.attrs["mode"] == "nearest":
        lines += nearest("h", oh, x.shape[2], out.shape[2], scales[0]) + nearest("w", ow, x.shape[3], out.shape[3], scales[1])
        lines.append(f"out[gid] = {b.load(0, [n, c, 'h0', 'w0'])};")
    else:
        lines += linear("h", oh, x.shape[2], out.shape[2], scales[0], align_corners)
        lines += linear("w", ow, x.shape[3], out.shape[3], scales[1], align_corners)
        pixel = lambda h, w: b.load(0, [n, c, h, w])
        lines += [f"let top = mix({pixel('h0', 'w0')}, {pixel('h0', 'w1')}, w_t);",
                  f"let bottom = mix({pixel('h1', 'w0')}, {pixel('h1', 'w1')}, w_t);",
                  "out[gid] = mix(top, bottom, h_t);"]
    return b.kernel(f"resize_{node.attrs['mode']}", header + indent(lines) + "\n}", workgroups)
