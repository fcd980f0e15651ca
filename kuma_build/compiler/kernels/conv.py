"""2-D convolution, plain and transposed, by one of three kernels.

- implicit GEMM (gemm.py), for plain convolutions on a GPU: for image n and
  group g, out[oc, pixel] = sum over k = (c, kh, kw) of W[oc, k] * X[c, ih, iw].
  The im2col matrix is never built: the kernel computes each element's input
  coordinate as it stages a tile and pads with zeros, and the NCHW output is
  exactly the GEMM's row-major output. Where the input is channels last (its
  channels neighbours in memory, as ConvNeXt's downsampling convolutions read
  their norm's output) k goes (kh, kw, c) instead, so that neighbouring k are
  neighbours in memory and the kernel stages B along k (k_channels_last); the
  filter is then stored [Cout, kh, kw, Cin] (passes/filter_order.py), so A's
  k are neighbours too.
- direct with several output channels and pixels per thread, for plain and
  depthwise convolutions on a CPU device class: each input value a
  thread loads serves all its channels, each weight all its pixels, and
  nothing goes through workgroup memory.
- direct with one channel and pixel per thread, for transposed ones and a
  GPU's depthwise ones.
  (A GPU's depthwise one whose result a layer norm over its channels reads
  runs inside that norm's kernel instead: depthwise_norm.py.)

Every kernel maps an output coordinate to an input coordinate per tap:
  plain       in = out * stride - pad + k * dilation,          weight [Cout, Cin/g, kh, kw]
  transposed  in = (out + pad - k * dilation) / stride if exact, weight [Cin, Cout/g, kh, kw]
"""

from dataclasses import replace
from math import ceil, prod

from kuma_build.compiler import precision
from kuma_build.compiler.ir import views
from kuma_build.compiler.kernels.elementwise import epilogue
from kuma_build.compiler.kernels.gemm import Gemm, Stored
from kuma_build.compiler.kernels.products import gemm_kernel
from kuma_build.compiler.kernels.wgsl import Bindings, block, indent, offset_expr, threads, unravel

# a CPU device: each thread takes up to 2 pixels (4 ran ~10% faster on SwiftShader but its unrolled
# code took mobilenet's index.js past 10 kB gzip; 8 spilled and ran 2x slower) and the workgroups
# are small, at least 8 of them to spread over the cores
PIXELS = (2, 1)
CPU_WORKGROUP, CPU_WORKGROUPS = 64, 8
# the implicit GEMM's k go (kh, kw, c) where the input's channels are neighbours in memory
# (k_channels_last); a constant so bench/gpu/dawn/bench.py can time the other order (conv.K_CHANNELS_LAST=0)
K_CHANNELS_LAST = True


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


def has_gemm_form(node) -> bool:
    """Plain, not depthwise: transposed and depthwise convolutions have no input channel that
    serves two outputs, so they stay direct on every device."""
    transposed, depthwise = node.attrs["transposed"], node.inputs[0].shape[1] == node.attrs["groups"]
    return not transposed and not depthwise


def is_implicit_gemm(node, device) -> bool:
    """Plain convolutions on a GPU (has_gemm_form)."""
    return device.implicit_gemm_conv and has_gemm_form(node)


def word_row(node, k: int) -> int | None:
    """The rows of the weight (input 1) whose neighbouring elements a GPU's kernel reads by words
    when it is stored f16 (OpRecord.word_row): the implicit GEMM's rows of K = (Cin / groups) x kh x kw,
    the direct kernel's filter rows of kw. Not the device's choice, so every class stores it alike."""
    if k != 1:
        return None
    weight = node.inputs[1]
    return prod(weight.shape[1:]) if has_gemm_form(node) else weight.shape[3]


def k_channels_last(node) -> bool:
    """Whether the implicit GEMM orders k as (kh, kw, c): where the input's channels, more than one a
    group, are neighbours in memory (K_CHANNELS_LAST)."""
    x, weight = node.inputs[0], node.inputs[1]
    return K_CHANNELS_LAST and has_gemm_form(node) and weight.shape[1] > 1 and x.strides[1] == 1


def gemm_shape(node) -> tuple[int, int, int, int]:
    """(batch, rows, cols, depth) of the implicit GEMM: batches are (image, group) pairs."""
    weight, out, groups = node.inputs[1], node.output, node.attrs["groups"]
    return (out.shape[0] * groups, out.shape[1] // groups, out.shape[2] * out.shape[3],
            weight.shape[1] * weight.shape[2] * weight.shape[3])


def filter_row_words(b: Bindings, k: int, row_at: list[str], prefix: str = "") -> tuple[list[str], object]:
    """Lines loading the f16 words of one filter row (the last dim of input k, a weight read by words:
    b.word) at index row_at of its other dims, and tap(kw) -> the WGSL f32 of the row's tap kw. The
    words are loaded first, each once for two taps, so no conversion waits on a load between the
    taps' products. A row starting on an odd element picks each tap's half one further (`odd`),
    unless every row starts on a word. `prefix` keeps the names of several rows apart."""
    weight = b.inputs[k]
    width = weight.shape[3]
    starts_on_word = all(isinstance(x, int) and x % 2 == 0 for x in (
        weight.offset, *[stride for size, stride in zip(weight.shape[:3], weight.strides[:3]) if size > 1]))
    words = (width + 1) // 2 if starts_on_word else width // 2 + 1
    half = lambda i: f"{prefix}w{i // 2}.{'xy'[i % 2]}"
    # word j holds the row's elements 2j, 2j + 1 (one further when odd); the last stays in the row
    lines = [f"let {prefix}filter_row = {offset_expr(weight, row_at)};",
             *[f"let {prefix}w{j} = {precision.pair_values(b.word(k, f'{prefix}filter_row + {min(2 * j, width - 1)}u'))};"
               for j in range(words)]]
    if not starts_on_word:
        lines.append(f"let {prefix}odd = ({prefix}filter_row & 1u) == 1u;")
    return lines, lambda kw: half(kw) if starts_on_word else f"select({half(kw)}, {half(kw + 1)}, {prefix}odd)"


def reads_rows_by_words(b: Bindings, k: int) -> bool:
    """Whether input k, a filter of rows longer than one, is read by f16 words (filter_row_words)."""
    weight = b.inputs[k]
    return weight.shape[3] > 1 and weight.strides[3] == 1 and b.word(k, "0u") is not None


def lower(node, device):
    out, groups = node.output, node.attrs["groups"]
    if is_implicit_gemm(node, device):
        return implicit_gemm(node, device)
    if node.attrs["transposed"] or device.implicit_gemm_conv:
        return direct(node)  # transposed ones, and a GPU's depthwise ones
    # as many channels and pixels per thread as leave the cores a few workgroups each
    for channels in (8, 4, 2, 1):
        for pixels in PIXELS:
            if (out.shape[1] // groups) % channels == 0 and out.numel / channels / pixels >= CPU_WORKGROUPS * CPU_WORKGROUP:
                return direct(node, channels, pixels, CPU_WORKGROUP)
    return direct(node)


def implicit_gemm(node, device):
    x, weight, out = node.inputs[0], node.inputs[1], node.output
    groups = node.attrs["groups"]
    kernel_h, kernel_w = weight.shape[2], weight.shape[3]
    batch, rows, cols, depth = gemm_shape(node)
    out_w, per_group = out.shape[3], weight.shape[1]
    # k's digits (c, kh, kw): c outermost, or innermost where the channels lie so in memory
    channels_last = k_channels_last(node)
    if channels_last:
        digits = lambda k: (f"{k} % {per_group}u", f"({k} / {kernel_w * per_group}u)", f"(({k} / {per_group}u) % {kernel_w}u)")
    else:
        digits = lambda k: (f"{k} / {kernel_h * kernel_w}u", f"(({k} / {kernel_w}u) % {kernel_h}u)", f"({k} % {kernel_w}u)")
    flat_weight = views.reshape(views.permute(weight, (0, 2, 3, 1)) if channels_last else weight, (weight.shape[0], depth))
    if flat_weight is not None:  # a weight stored in k's order is the A matrix as it is
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
        c, kh, kw = digits(k)
        return [f"{var} = {b.load(1, [out_channel(bi, r), f'({c})', kh, kw])};"]

    def load_b(var, bi, k, p):
        c, kh, kw = digits(k)
        coords, inside = taps(node, f"({p} / {out_w}u)", f"({p} % {out_w}u)", kh, kw)
        image = f"({bi} / {groups}u)" if groups > 1 else bi
        read = f"{var} = {b.load(0, [image, channel(bi, per_group, c), 'u32(ih)', 'u32(iw)'])};"
        return coords + ([f"if ({inside}) {{ {read} }}"] if inside else [read])

    # neighbouring k of an f16 weight share a word when every row starts on a word (even row stride
    # and offset; an odd K's rows are padded so, passes/weight_storage.py): the thin kernel (a
    # convolution on a few pixels) then loads each word once (gemm.py, pairs); the last word of an
    # odd K also holds the padding, read at k = K, where it counts for nothing
    load_a_pair = None
    if (flat_weight is not None and flat_weight.strides[1] == 1 and all(x % 2 == 0 for x in (flat_weight.strides[0], flat_weight.offset))
            and b.pair(1, ["0u", "0u"])):
        def load_a_pair(var, bi, r, k):
            return [f"{var} = {b.pair(1, [out_channel(bi, r), k])};"]

    writer, stored = epilogue(node, b, "value", "flat")

    def finish(total, bi, r, c):
        bias = f" + {b.load(2, [out_channel(bi, r)])}" if node.operands > 2 else ""
        return [f"let value = {total}{bias};", *writer.lines], stored

    stored_a = None  # the flat weight as its f16 binding holds it: a group's rows follow the previous group's
    if flat_weight is not None and (array := b.f16_array(1)) is not None:
        group = f" + ({{}} % {groups}u) * {rows * flat_weight.strides[0]}u" if groups > 1 else ""
        stored_a = Stored(array, lambda bi: f"{flat_weight.offset}u" + group.format(bi), *flat_weight.strides)
    product = Gemm(batch, rows, cols, depth, load_a, load_b, finish, a_k_contiguous=flat_weight is not None,
                   cols_contiguous=not channels_last, load_a_pair=load_a_pair,
                   splits=node.attrs.get("splits", 1), device=device, stored_a=stored_a)
    return gemm_kernel(b, "conv2d", product, writer.functions())


def direct(node, channels: int = 1, pixels: int = 1, size: int = 256):
    """One thread per `pixels` output pixels and `channels` output channels: each input value loaded
    serves all its channels, each weight all its pixels. A thread's pixels are `spread` apart in the
    image's flat order, so neighbouring threads still read neighbouring input. Pixels and channels are
    unrolled here, with scalar accumulators (see gemm.py on private arrays); each stores through
    conv_put, which applies the fused epilogue (generated once, as gemm.py's gemm_put)."""
    b = Bindings(node)
    x, weight, out = node.inputs[0], node.inputs[1], node.output
    groups, transposed = node.attrs["groups"], node.attrs["transposed"]
    in_per_group, out_per_group = x.shape[1] // groups, out.shape[1] // groups
    plane = out.shape[2] * out.shape[3]
    spread = ceil(plane / pixels)
    grid_shape = (out.shape[0], out.shape[1] // channels, spread)
    header, workgroups = threads(grid_shape[0] * grid_shape[1] * spread, size)
    lines, (n, oc_block, first) = unravel("gid", grid_shape)
    weight_at = ["c", f"(oc % {out_per_group}u)", "kh", "kw"] if transposed else ["oc", "ic", "kh", "kw"]
    has_bias = node.operands > 2
    accs = [[f"acc{p}_{j}" for j in range(channels)] for p in range(pixels)]
    exists = [f"q{p} < {plane}u" if p * spread + spread > plane else "" for p in range(pixels)]  # the last may run off

    def each_channel(body) -> list[str]:
        """body(j) for each channel j of the thread, with `oc` the channel."""
        return [line for j in range(channels) for line in block("", [f"let oc = oc0 + {j}u;", *body(j)])]

    def write(p: int, j: int) -> list[str]:
        put = f"conv_put(({n} * {out.shape[1]}u + oc) * {plane}u + q{p}, {accs[p][j]});"
        return block(f"if ({exists[p]})", [put]) if exists[p] else [put]

    def read(p: int) -> list[str]:
        """The input under tap (kh, kw) for pixel p, into x{p}: zero in the padding."""
        coords, inside = taps(node, f"oh{p}", f"ow{p}", "kh", "kw")
        if pixels == 1:  # skip the tap altogether
            return coords + ([f"if (!({inside})) {{ continue; }}"] if inside else []) + [f"let x0 = {b.load(0, [n, 'c', 'u32(ih)', 'u32(iw)'])};"]
        check = " && ".join(c for c in (exists[p], inside) if c)
        load = f"x{p} = {b.load(0, [n, 'c', 'u32(ih)', 'u32(iw)'])};"
        return [f"var x{p} = 0.0;", *block("", coords + [f"if ({check}) {{ {load} }}" if check else load])]

    def row_of_words() -> list[str]:
        """The taps of filter row kh, unrolled, for f16 weights read as words (one channel and pixel a
        thread): the row's words are loaded first (filter_row_words)."""
        lines, tap_weight = filter_row_words(b, 1, weight_at[:3])
        for kw in range(weight.shape[3]):
            coords, inside = taps(node, "oh0", "ow0", "kh", f"{kw}u")
            product = f"{accs[0][0]} += {b.load(0, [n, 'c', 'u32(ih)', 'u32(iw)'])} * {tap_weight(kw)};"
            lines += block("", coords + [f"if ({inside}) {{ {product} }}" if inside else product])
        return lines

    tap = [line for p in range(pixels) for line in read(p)]
    tap += each_channel(lambda j: [f"let w = {b.load(1, weight_at)};", *[f"{accs[p][j]} += x{p} * w;" for p in range(pixels)]])
    kh_body = block(f"for (var kw = 0u; kw < {weight.shape[3]}u; kw++)", tap)
    by_words = channels == pixels == 1 and reads_rows_by_words(b, 1)

    for p in range(pixels):
        lines += [f"let q{p} = {first} + {p * spread}u;", f"let oh{p} = q{p} / {out.shape[3]}u;", f"let ow{p} = q{p} % {out.shape[3]}u;"]
    lines += [f"let oc0 = {oc_block} * {channels}u;", f"let group = oc0 / {out_per_group}u;",
              *[f"var {acc} = 0.0;" for row in accs for acc in row],
              *(each_channel(lambda j: [f"{accs[p][j]} = {b.load(2, ['oc'])};" for p in range(pixels)]) if has_bias else [])]
    writes = [line for p in range(pixels) for line in each_channel(lambda j: write(p, j))]
    finish, value = epilogue(node, b, "acc", "flat")
    put = block("fn conv_put(flat: u32, acc: f32)", [*finish.lines, f"out[flat] = {value};"])

    def body(kh_body: list[str]) -> str:
        loop = block(f"for (var ic = 0u; ic < {in_per_group}u; ic++)", [
            f"let c = group * {in_per_group}u + ic;", *block(f"for (var kh = 0u; kh < {weight.shape[2]}u; kh++)", kh_body)])
        return finish.functions() + "\n".join(put) + "\n\n" + header + indent(lines + loop + writes) + "\n}"

    name = "conv_transpose2d" if transposed else "conv2d"
    if by_words:  # the shader-f16 variant reads f16 elements as before
        return b.kernel(name, body(each_channel(lambda j: row_of_words())), workgroups, body(kh_body))
    return b.kernel(name, body(kh_body), workgroups)
