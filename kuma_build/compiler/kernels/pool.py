"""2-D pooling (max, avg, adaptive avg): one thread per output (n, c, oh, ow).

Every mode walks the same loop over its window's input pixels; modes differ
only in how an output coordinate gives the window (`window`, per axis, in
i32 since padding makes raw starts negative) and in how values combine.
Bounds follow torch's CPU kernels: windows are clipped to the input, avg
divides by the padded or the clipped size (count_include_pad) or by
divisor_override, adaptive windows are [floor(o*in/out), ceil((o+1)*in/out)).
"""

from kuma_build.compiler.kernels.wgsl import Bindings, block, f32, indent, needed, threads, unravel

NEG_INF = f32(float("-inf"))


def window(axis: str, out: str, in_size: int, out_size: int, attrs: dict, d: int) -> tuple[list[str], int]:
    """WGSL defining `{axis}_lo`, `{axis}_hi` (the window, clipped) and `{axis}_count` (avg's divisor); and the step."""
    lo, hi, count = f"{axis}_lo", f"{axis}_hi", f"{axis}_count"
    mode = attrs["mode"]
    if mode == "adaptive_avg":
        return [f"let {lo} = i32(({out} * {in_size}u) / {out_size}u);",
                f"let {hi} = i32((({out} + 1u) * {in_size}u + {out_size - 1}u) / {out_size}u);",
                f"let {count} = {hi} - {lo};"], 1
    kernel, stride, pad = attrs["kernel"][d], attrs["stride"][d], attrs["padding"][d]
    lines = [f"let {axis}_raw = i32({out} * {stride}u) - {pad}i;"]
    if mode == "max":
        dilation = attrs["dilation"][d]
        # first tap inside the input: skip whole dilation steps over the padding
        first = f"{axis}_raw + ((-{axis}_raw + {dilation - 1}i) / {dilation}i) * {dilation}i" if dilation > 1 else "0i"
        return lines + [f"let {lo} = select({axis}_raw, {first}, {axis}_raw < 0i);",
                        f"let {hi} = min({axis}_raw + {(kernel - 1) * dilation + 1}i, {in_size}i);"], dilation
    lines += [f"let {lo} = max({axis}_raw, 0i);", f"let {hi} = min({axis}_raw + {kernel}i, {in_size}i);"]
    if attrs["count_include_pad"]:
        lines.append(f"let {count} = min({axis}_raw + {kernel}i, {in_size + pad}i) - {axis}_raw;")
    else:
        lines.append(f"let {count} = {hi} - {lo};")
    return lines, 1


def lower(node, device):
    b = Bindings(node)
    x, out, attrs = node.inputs[0], node.output, node.attrs
    header, workgroups = threads(out.numel)
    index, (n, c, oh, ow) = unravel("gid", out.shape)
    rows, step_h = window("h", oh, x.shape[2], out.shape[2], attrs, 0)
    cols, step_w = window("w", ow, x.shape[3], out.shape[3], attrs, 1)
    if attrs["mode"] == "max":
        init, combine, result = NEG_INF, "acc = select(acc, v, v > acc || v != v);", "acc"  # nan wins, as in torch
    else:
        init, combine = "0.0", "acc += v;"
        divisor = attrs.get("divisor_override")
        result = f"acc / {f32(divisor)}" if divisor else "acc / f32(h_count * w_count)"
    lines = rows + cols + [
        f"var acc = {init};",
        *block(f"for (var ih = h_lo; ih < h_hi; ih += {step_h}i)",
               block(f"for (var iw = w_lo; iw < w_hi; iw += {step_w}i)", [f"let v = {b.load(0, [n, c, 'u32(ih)', 'u32(iw)'])};", combine])),
        f"out[gid] = {result};",
    ]
    return b.kernel(f"pool2d_{attrs['mode']}", header + indent(needed(index, lines) + lines) + "\n}", workgroups)
