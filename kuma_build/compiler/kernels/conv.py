"""2-D convolution, plain and transposed, by one of three kernels.

- implicit GEMM (gemm.py), for plain convolutions on a GPU: for image n and
  group g, out[oc, pixel] = sum over k = (c, kh, kw) of W[oc, k] * X[c, ih, iw].
  The im2col matrix is never built: the kernel computes each element's input
  coordinate as it stages a tile and pads with zeros, and the NCHW output is
  exactly the GEMM's row-major output.
- direct with several output channels per thread, for plain convolutions on
  a CPU device (gemm.DEVICE): each input value a thread loads serves all its
  channels, and nothing goes through workgroup memory.
- direct with one channel per thread, for depthwise and transposed ones.

Every kernel maps an output coordinate to an input coordinate per tap:
  plain       in = out * stride - pad + k * dilation,          weight [Cout, Cin/g, kh, kw]
  transposed  in = (out + pad - k * dilation) / stride if exact, weight [Cin, Cout/g, kh, kw]
"""

from dataclasses import replace
from math import ceil

from kuma_build.compiler.ir import views
from kuma_build.compiler.kernels.elementwise import epilogue, operands
from kuma_build.compiler.kernels import gemm
from kuma_build.compiler.kernels.gemm import Gemm, block, gemm_code
from kuma_build.compiler.kernels.wgsl import Bindings, indent, threads, unravel


def tap(name: str, out: str, k: str, size: int, stride: int, pad: int, dilation: int, transposed: bool) -> tuple[list[str], str]:
    """WGSL defining input coordinate `name` (i32) for one kernel tap, and the condition that it
    exists ("" when it always does: a plain convolution without padding never leaves the input)."""
    reach = f"i32({k} * {dilation}u)" if dilation != 1 else f"i32({k})"
    if not transposed:
        return [f"let {name} = i32({out} * {stride}u) - {pad}i + {reach};"], (f"{name} >= 0i && {name} < {size}i" if pad else "")
    if stride == 1:
        return [f"let {name} = i32({out}) + {pad}i - {reach};"], f"{name} >= 0i && {name} < {size}i"
    return ([f"let {name}_s = i32({out}) + {pad}i - {reach};", f"let {name} = {name}_s / {stride}i;"],
            f"{name}_s >= 0i && {name}_s % {stride}i == 0i && {name} < {size}i")


def taps(node, oh: str, ow: str, kh: str, kw: str) -> tuple[list[str], str]:
    """Both coordinates ih, iw of a tap and the condition that the tap reads the input."""
    x, transposed = node.inputs[0], node.attrs["transposed"]
    stride, pad, dilation = node.attrs["stride"], node.attrs["padding"], node.attrs["dilation"]
    h_lines, h_inside = tap("ih", oh, kh, x.shape[2], stride[0], pad[0], dilation[0], transposed)
    w_lines, w_inside = tap("iw", ow, kw, x.shape[3], stride[1], pad[1], dilation[1], transposed)
    return h_lines + w_lines, " && ".join(c for c in (h_inside, w_inside) if c)


def lower(node):
    out, groups = node.output, node.attrs["groups"]
    if node.attrs["transposed"] or node.inputs[0].shape[1] == groups:
        return direct(node)  # no input channel serves two outputs of a thread
    if gemm.DEVICE["conv"] == "gemm":
        return implicit_gemm(node)
    # as many channels per thread as keep the device's parallel workgroups busy
    for channels in (8, 4, 2):
        if (out.shape[1] // groups) % channels == 0 and ceil(out.numel / channels / 256) >= gemm.DEVICE["parallel"]:
            return direct(node, channels)
    return direct(node)


def implicit_gemm(node):
    x, weight, out = node.inputs[0], node.inputs[1], node.output
    groups = node.attrs["groups"]
    kernel_h, kernel_w = weight.shape[2], weight.shape[3]
    depth = weight.shape[1] * kernel_h * kernel_w
    rows, out_w = out.shape[1] // groups, out.shape[3]
    flat_weight = views.reshape(weight, (weight.shape[0], depth))
    if flat_weight is not None:  # a contiguous weight is the A matrix as it is
        node = replace(node, inputs=[x, flat_weight, *node.inputs[2:]])
    b = Bindings(node)

    def channel(bi: str, per_group: int, c: str) -> str:
        """Channel c of GEMM batch bi's group (batches are (image, group) pairs); parenthesised
        because loads multiply index expressions by strides."""
        return f"(({bi} % {groups}u) * {per_group}u + {c})" if groups > 1 else f"({c})"

    def out_channel(bi: str, r: str) -> str:
        return channel(bi, rows, r)

    def load_a(var, bi, r, k):
        if flat_weight is not None:
            return [f"{var} = {b.load(1, [out_channel(bi, r), k])};"]
        return [f"{var} = {b.load(1, [out_channel(bi, r), f'({k} / {kernel_h * kernel_w}u)', f'(({k} / {kernel_w}u) % {kernel_h}u)', f'({k} % {kernel_w}u)'])};"]

    def load_b(var, bi, k, p):
        coords, inside = taps(node, f"({p} / {out_w}u)", f"({p} % {out_w}u)", f"(({k} / {kernel_w}u) % {kernel_h}u)", f"({k} % {kernel_w}u)")
        image = f"({bi} / {groups}u)" if groups > 1 else bi
        read = f"{var} = {b.load(0, [image, channel(bi, weight.shape[1], f'{k} / {kernel_h * kernel_w}u'), 'u32(ih)', 'u32(iw)'])};"
        return coords + ([f"if ({inside}) {{ {read} }}"] if inside else [read])

    writer, stored = epilogue(node, b, "value", "flat")

    def finish(total, bi, r, c):
        bias = f" + {b.load(2, [out_channel(bi, r)])}" if operands(node) > 2 else ""
        return [f"let value = {total}{bias};", *writer.lines], stored

    product = Gemm(out.shape[0] * groups, rows, out.shape[2] * out_w, depth, load_a, load_b, finish, a_k_contiguous=flat_weight is not None)
    code, workgroups = gemm_code(product)
    return b.kernel("conv2d", writer.functions() + code, workgroups)


def direct(node, channels: int = 1):
    """One thread per output pixel and `channels` output channels: each input value loaded serves them
    all. The channels are unrolled here, with scalar accumulators (see gemm.py on private arrays)."""
    b = Bindings(node)
    x, weight, out = node.inputs[0], node.inputs[1], node.output
    groups, transposed = node.attrs["groups"], node.attrs["transposed"]
    in_per_group, out_per_group = x.shape[1] // groups, out.shape[1] // groups
    grid_shape = (out.shape[0], out.shape[1] // channels, out.shape[2], out.shape[3])
    header, workgroups = threads(grid_shape[0] * grid_shape[1] * grid_shape[2] * grid_shape[3])
    lines, (n, oc_block, oh, ow) = unravel("gid", grid_shape)
    weight_at = ["c", f"(oc % {out_per_group}u)", "kh", "kw"] if transposed else ["oc", "ic", "kh", "kw"]
    has_bias = operands(node) > 2

    def each_channel(body) -> list[str]:
        """body(acc) for each channel of the thread, with `oc` the channel and acc its accumulator's name."""
        return [line for j in range(channels) for line in block([f"let oc = oc0 + {j}u;", *body(f"acc{j}")])]

    def write(acc: str) -> list[str]:
        finish, value = epilogue(node, b, acc, "flat")
        return [f"let flat = (({n} * {out.shape[1]}u + oc) * {out.shape[2]}u + {oh}) * {out.shape[3]}u + {ow};",
                *finish.lines, f"out[flat] = {value};"]

    coords, inside = taps(node, oh, ow, "kh", "kw")
    loop = [
        f"for (var ic = 0u; ic < {in_per_group}u; ic++) {{",
        f"  let c = group * {in_per_group}u + ic;",
        f"  for (var kh = 0u; kh < {weight.shape[2]}u; kh++) {{",
        f"    for (var kw = 0u; kw < {weight.shape[3]}u; kw++) {{",
        *["      " + line for line in coords],
        *([f"      if (!({inside})) {{ continue; }}"] if inside else []),
        f"      let xv = {b.load(0, [n, 'c', 'u32(ih)', 'u32(iw)'])};",
        *["      " + line for line in each_channel(lambda acc: [f"{acc} += xv * {b.load(1, weight_at)};"])],
        "    }",
        "  }",
        "}",
    ]
    lines += [f"let oc0 = {oc_block} * {channels}u;", f"let group = oc0 / {out_per_group}u;",
              *[f"var acc{j} = 0.0;" for j in range(channels)],
              *(each_channel(lambda acc: [f"{acc} = {b.load(2, ['oc'])};"]) if has_bias else []),
              *loop, *each_channel(write)]
    body = epilogue(node, b, "acc", "flat")[0].functions() + header + indent(lines) + "\n}"
    return b.kernel("conv_transpose2d" if transposed else "conv2d", body, workgroups)
