"""Direct 2-D convolution, plain and transposed: one thread per output (n, oc, oh, ow).

Each thread loops over the in-channels of its group and the kernel window. The
two variants share the loop; they differ only in how a kernel tap maps an
output coordinate to an input coordinate (`tap`) and in the weight layout:
  plain       in = out * stride - pad + k * dilation,          weight [Cout, Cin/g, kh, kw]
  transposed  in = (out + pad - k * dilation) / stride if exact, weight [Cin, Cout/g, kh, kw]
"""

from kuma_build.compiler.kernels.wgsl import Bindings, indent, threads, unravel


def tap(name: str, out: str, k: str, size: int, stride: int, pad: int, dilation: int, transposed: bool) -> list[str]:
    """WGSL that defines input coordinate `name` (i32) for one kernel tap, or skips the tap (`continue`)."""
    reach = f"i32({k} * {dilation}u)" if dilation != 1 else f"i32({k})"
    if not transposed:
        return [f"let {name} = i32({out} * {stride}u) - {pad}i + {reach};",
                f"if ({name} < 0i || {name} >= {size}i) {{ continue; }}"]
    if stride == 1:
        return [f"let {name} = i32({out}) + {pad}i - {reach};",
                f"if ({name} < 0i || {name} >= {size}i) {{ continue; }}"]
    return [f"let {name}_s = i32({out}) + {pad}i - {reach};",
            f"if ({name}_s < 0i || {name}_s % {stride}i != 0i || {name}_s / {stride}i >= {size}i) {{ continue; }}",
            f"let {name} = {name}_s / {stride}i;"]


def lower(node):
    b = Bindings(node)
    x, weight = node.inputs[0], node.inputs[1]
    out = node.output
    stride, pad, dilation = node.attrs["stride"], node.attrs["padding"], node.attrs["dilation"]
    groups, transposed = node.attrs["groups"], node.attrs["transposed"]
    in_h, in_w = x.shape[2], x.shape[3]
    kernel_h, kernel_w = weight.shape[2], weight.shape[3]
    in_per_group = x.shape[1] // groups
    out_per_group = out.shape[1] // groups

    header, workgroups = threads(out.numel)
    lines, (n, oc, oh, ow) = unravel("gid", out.shape)
    if transposed:
        lines.append(f"let oc_in_group = {oc} % {out_per_group}u;")
        weight_at = ["c", "oc_in_group", "kh", "kw"]
    else:
        weight_at = [oc, "ic", "kh", "kw"]
    init = b.load(2, [oc]) if len(node.inputs) > 2 else "0.0"
    loop = [
        f"for (var ic = 0u; ic < {in_per_group}u; ic++) {{",
        f"  let c = group * {in_per_group}u + ic;",
        f"  for (var kh = 0u; kh < {kernel_h}u; kh++) {{",
        *nest(tap("ih", oh, "kh", in_h, stride[0], pad[0], dilation[0], transposed), 2),
        f"    for (var kw = 0u; kw < {kernel_w}u; kw++) {{",
        *nest(tap("iw", ow, "kw", in_w, stride[1], pad[1], dilation[1], transposed), 3),
        f"      acc += {b.load(0, [n, 'c', 'u32(ih)', 'u32(iw)'])} * {b.load(1, weight_at)};",
        "    }",
        "  }",
        "}",
    ]
    lines += [f"let group = {oc} / {out_per_group}u;", f"var acc = {init};", *loop, "out[gid] = acc;"]
    body = header + indent(lines) + "\n}"
    return b.kernel("conv_transpose2d" if transposed else "conv2d", body, workgroups)


def nest(lines: list[str], depth: int) -> list[str]:
    return ["  " * depth + line for line in lines]
