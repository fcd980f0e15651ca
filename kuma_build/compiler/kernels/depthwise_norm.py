"""A depthwise convolution and the norm over its channels that reads it, as one kernel.

ConvNeXt's block convolves each channel with its own 7x7 filter, permutes the
result to channels-last and layer-norms each pixel's channels. As two kernels
(conv.py's direct one, a thread per output, then rows.py's norm, a workgroup
per pixel) the activations make a round trip through memory between two
dispatches; here each workgroup computes a few output pixels' channels into
registers, reduces them to each pixel's mean and variance, and writes the
normalized channels-last rows (passes/fuse_channel_norm.py makes the node).

Threads: a workgroup takes `pixels` consecutive rows of the norm (neighbouring
output pixels), each with `lanes` threads; a thread takes one pixel and the
channels lane, lane + lanes, ..., `per` of them, as scalars acc0, acc1, ...
(kernels/gemm.py on private arrays). Neighbouring threads take neighbouring
pixels (li % pixels is the pixel) or channels (li % lanes is the lane), so that a
warp's loads read runs of neighbours: pixels for an NCHW input; for a
channels-last one (the stem's norm, and the residual stream that
passes/operand_order.py stores so) pixels where each pixel's run of channels in
a warp still fills a memory sector (PIXELS_FASTEST), else channels (where the
convolution alone read a channels-last input with threads 96 floats apart, it
took 72.8 us on the H200 against 16.8). The sums
over a pixel's channels use rows.py's workgroup_reduce with the pixels as
interleaved lanes (`slot`); the mean first, then the squared deviations (two
passes, for f32 accuracy, as rows.py's norms).
The filter is walked a row at a time, the row's taps unrolled: each thread
loads its channels' weights and inputs of the whole row (zero outside the
image) before any product, so the loads are in flight together (UNROLL_TAPS);
each workgroup starts on its own row, so that the workgroups in flight read
different weights (STAGGER_ROWS), which are stored [kh, kw, C] (FILTER_CHANNELS_LAST).
A workgroup's last pixels past the end compute the last row again (so every
thread reaches the barriers) and store nothing. An f16 filter is read as
conv.py's direct kernel reads it: without shader-f16 a filter row's words
first, then the row's taps unrolled (conv.filter_row_words).

Only device classes whose rows a workgroup shares (not DeviceClass.thread_rows:
a software device switches threads at every barrier) fuse, and only channel
counts that leave a thread at most MAX_CHANNELS of them.
"""

from math import ceil

from kuma_build.compiler.ir.graph import Value
from kuma_build.compiler.kernels.conv import filter_row_words, reads_rows_by_words, taps
from kuma_build.compiler.kernels.elementwise import epilogue
from kuma_build.compiler.kernels.rows import ROW_REGISTERS, workgroup_reduce, workgroup_scratch
from kuma_build.compiler.kernels.wgsl import Bindings, block, f32, indent, offset_expr, unravel, workgroup_rows

# knobs (bench/gpu/dawn/bench.py --gemm-knob depthwise_norm.NAME=VALUE sets them for an A/B)
FUSE = True  # passes/fuse_channel_norm.py fuses (False: the two kernels as before)
PIXELS = 8  # output pixels a workgroup takes at most (a warp then reads NCHW runs of 8 neighbours of 4 channels)
CHANNELS = 4  # channels a thread takes at most before its workgroup takes half as many pixels
# a filter row's taps unrolled, their input loads issued before the products: ConvNeXt-T's 18 kernels
# 390.6 -> 370.9 us on the H200 through Dawn (each in a pass of its own, 20:50 UTC, docs/performance.md);
# the row's weights loaded before its inputs: their share of the GPU time back to back 274 -> 265-267 us
# (2026-12-01, two calls; loading the norm's weight and bias first too changed nothing, unrolling the
# filter's rows as well made them 336)
UNROLL_TAPS = True
# passes/fuse_channel_norm.py stores a constant filter [kh, kw, C] (its view keeps [C, 1, kh, kw]), so
# that a warp's weights of a tap are neighbours in memory (in PyTorch's order each channel's are a
# line apart), and each workgroup walks the filter's rows from its own (STAGGER_ROWS). Without the
# stagger every workgroup in flight reads the same tap's weights at once, a few memory lines (each
# served by one L2 slice: the likely cause): on the H200 through Dawn ConvNeXt-T's stage-3 blocks
# took 28 us a dispatch so against 15 in PyTorch's order (2026-12-02 05:25, docs/performance.md);
# with it 14.0-14.5, and the model's depthwise kernels 204-207 -> 186 us back to back. Before the
# stagger (2026-12-01 10:32-10:39) the filter was stored so only where neighbouring threads take
# neighbouring channels: ConvNeXt-T's first block 29.0 -> 18.4 us, its last stage's three 21.6 -> 17.7
FILTER_CHANNELS_LAST = True
STAGGER_ROWS = True
# a channels-last input's neighbouring pixels go to neighbouring threads where a workgroup takes at
# most this many (a warp of 32 threads then reads runs of at least 8 channels: 32 bytes, a memory
# sector, of each pixel), neighbouring channels where it takes more (a warp would read 4 of each of
# 8 pixels). ConvNeXt-T's blocks reading the residual stream channels last (passes/operand_order.py),
# µs a dispatch alone on the H200 through Dawn (2026-12-02 03:15-03:27, docs/performance.md), channels /
# pixels fastest: stage 1 (8 pixels a workgroup) 17.0-17.1 / 26.2-26.3, stage 2 (4) 16.9-17.5 /
# 16.4-16.9, stage 3 (2) 25.7-26.5 / 14.6-15.6; NCHW inputs keep pixels fastest (channels where a workgroup takes one).
# Those were before STAGGER_ROWS: stage 3's 26 us on channels was its [kh, kw, C] filter's (above). With it
# (2026-12-02 07:33-07:37): stage 3 14 us either way, stage 2 15.6 -> 14.5 on channels; 1, 2 and 4 within noise of one another
PIXELS_FASTEST = 4
MAX_CHANNELS = ROW_REGISTERS  # past this a thread's channels would not stay in registers: no fusion


def layout(channels: int, device) -> tuple[int, int, int] | None:
    """(pixels, lanes, per): pixels a workgroup, threads a pixel, channels a thread; None when a
    thread would take more than MAX_CHANNELS (the two kernels then stay)."""
    pixels = 1 << (max(1, PIXELS).bit_length() - 1)  # a power of two: workgroup_reduce's lanes
    while True:
        lanes = min(device.workgroup_threads // pixels, 1 << (channels - 1).bit_length())
        per = ceil(channels / lanes)
        if per <= CHANNELS or pixels == 1:
            return (pixels, lanes, per) if per <= MAX_CHANNELS else None
        pixels //= 2


def channels_fastest(x, channels: int, device) -> bool:
    """Whether the kernel's neighbouring threads take neighbouring channels of a pixel (else
    neighbouring pixels of a channel): a pixel a workgroup, or a channels-last input x of more
    pixels a workgroup than PIXELS_FASTEST."""
    pixels = layout(channels, device)[0]
    return pixels == 1 or (x.strides[1] == 1 and pixels > PIXELS_FASTEST)


def filter_rows(rows: int, body: list[str]) -> list[str]:
    """body for each filter row kh, the workgroup's norm row `row` choosing the first (STAGGER_ROWS)."""
    if not STAGGER_ROWS:
        return block(f"for (var kh = 0u; kh < {rows}u; kh++)", body)
    return block(f"for (var k = 0u; k < {rows}u; k++)", [f"let kh = (k + row) % {rows}u;", *body])


def fuses(node, device) -> bool:
    """Whether a convolution node computes one output pixel's channels at a time in this kernel
    (OpRecord.channel_rows): depthwise (one filter per channel, channels in = out), plain, no
    epilogue or split, sizes free of dims, on a device class whose rows a workgroup shares."""
    x, weight, out = node.inputs[0], node.inputs[1], node.output
    sizes = (*x.shape, *x.strides, x.offset, *weight.shape, *weight.strides, weight.offset, *out.shape)
    return (not device.thread_rows and not node.attrs["transposed"] and "epilogue" not in node.attrs and "splits" not in node.attrs
            and all(isinstance(s, int) for s in sizes) and x.shape[1] == node.attrs["groups"] == out.shape[1] > 1
            and layout(out.shape[1], device) is not None)


def lower(node, device):
    """node: a depthwise_norm, its inputs the convolution's (x, weight, bias?) then the norm's
    (weight?, bias? viewed in the output's shape, then its epilogue's); attrs: the convolution's,
    the norm's eps / has_weight / has_bias, `conv_shape` (N, C, H, W), `rows` (the norm's kept dims
    over the convolution's NCHW result: shape, strides, offset) and conv_operands."""
    b = Bindings(node)
    attrs, out = node.attrs, node.output
    _, channels, height, width = attrs["conv_shape"]
    kept_shape, kept_strides, kept_offset = attrs["rows"]
    rows = out.numel // channels
    pixels, lanes, per = layout(channels, device)
    size = pixels * lanes
    kh_size, kw_size = node.inputs[1].shape[2], node.inputs[1].shape[3]
    header, workgroups = workgroup_rows(ceil(rows / pixels), size)
    functions = {"sum": workgroup_scratch("pixel_sum", "f32", size, pixels)}

    # this thread's pixel (the norm's row) and where the convolution's result holds it
    if pixels == 1:
        lines = ["let lane = li;", "let slot = li;", "let at = row;"]
    elif channels_fastest(node.inputs[0], channels, device):  # channels-last input
        lines = [f"let lane = li % {lanes}u;", f"let slot = lane * {pixels}u + li / {lanes}u;", f"let at = row * {pixels}u + li / {lanes}u;"]
    else:
        lines = [f"let lane = li / {pixels}u;", "let slot = li;", f"let at = row * {pixels}u + li % {pixels}u;"]
    lines.append(f"let pixel = min(at, {rows - 1}u);")
    row_lines, r = unravel("pixel", kept_shape, "r")
    spot = offset_expr(Value(None, kept_shape, kept_strides, kept_offset), r)
    lines += row_lines + [f"let spot = {spot};", f"let n = spot / {channels * height * width}u;",
                          f"let oh = (spot % {height * width}u) / {width}u;", f"let ow = spot % {width}u;"]
    # its channels: the last may run past the end (it then repeats the last channel, kept out of the sums)
    partial = per * lanes > channels
    valid = [f"lane + {i * lanes}u < {channels}u" if partial and (i + 1) * lanes > channels else "" for i in range(per)]
    for i in range(per):
        c = f"lane + {i * lanes}u" if i else "lane"
        lines.append(f"let c{i} = min({c}, {channels - 1}u);" if valid[i] else f"let c{i} = {c};")
        lines.append(f"var acc{i} = {b.load(2, [f'c{i}']) if attrs['conv_operands'] > 2 else '0.0'};")

    def products(weights) -> list[str]:
        return [f"acc{i} += {b.load(0, ['n', f'c{i}', 'u32(ih)', 'u32(iw)'])} * {w};" for i, w in enumerate(weights)]

    # the filter sums: a tap at a time, or (f16 filters read as words, as conv.py's direct kernel
    # does) a filter row's words first, then its taps unrolled
    coords, inside = taps(node, "oh", "ow", "kh", "kw")
    tap = coords + ([f"if (!({inside})) {{ continue; }}"] if inside else []) + products(
        [b.load(1, [f"c{i}", "0u", "kh", "kw"]) for i in range(per)])
    by_taps = filter_rows(kh_size, block(f"for (var kw = 0u; kw < {kw_size}u; kw++)", tap))
    if UNROLL_TAPS:  # a filter row's weights and inputs loaded first (inputs zero outside the image), then its products
        row = [f"let w{kw}_{i} = {b.load(1, [f'c{i}', '0u', 'kh', f'{kw}u'])};" for kw in range(kw_size) for i in range(per)]
        for kw in range(kw_size):
            coords, inside = taps(node, "oh", "ow", "kh", f"{kw}u")
            loads = [f"t{kw}_{i} = {b.load(0, ['n', f'c{i}', 'u32(ih)', 'u32(iw)'])};" for i in range(per)]
            row += [f"var t{kw}_{i} = 0.0;" for i in range(per)] + block("", coords + (block(f"if ({inside})", loads) if inside else loads))
        row += [f"acc{i} += t{kw}_{i} * w{kw}_{i};" for kw in range(kw_size) for i in range(per)]
        by_taps = filter_rows(kh_size, row)
    by_words = None
    if reads_rows_by_words(b, 1):
        rows_read = [filter_row_words(b, 1, [f"c{i}", "0u", "kh"], f"c{i}_") for i in range(per)]
        row = [line for row_lines, _ in rows_read for line in row_lines]
        for kw in range(kw_size):
            coords, inside = taps(node, "oh", "ow", "kh", f"{kw}u")
            sums = products([tap_weight(kw) for _, tap_weight in rows_read])
            row += block("", coords + (block(f"if ({inside})", sums) if inside else sums))
        by_words = filter_rows(kh_size, row)

    def kept(value: str, i: int) -> str:
        return f"select(0.0, {value}, {valid[i]})" if valid[i] else value

    def pixel_sum(result: str, value: str) -> list[str]:
        return workgroup_reduce("pixel_sum", "sum", "f32", size, pixels, result, value, "slot")

    stats = [*pixel_sum("total", " + ".join(kept(f"acc{i}", i) for i in range(per))),
             f"let mean = total / {f32(channels)};",
             *[f"let d{i} = acc{i} - mean;" for i in range(per)],
             *pixel_sum("squares", " + ".join(kept(f"d{i} * d{i}", i) for i in range(per))),
             f"let rstd = inverseSqrt(squares / {f32(channels)} + {f32(attrs['eps'])});"]

    # the norm's affine and epilogue, read at (row, channel) of the output
    result, affine = "d * rstd", attrs["conv_operands"]
    if attrs["has_weight"]:
        result, affine = f"{result} * {b.load(affine, [*r, 'c'])}", affine + 1
    if attrs["has_bias"]:
        result = f"{result} + {b.load(affine, [*r, 'c'])}"
    finish, stored = epilogue(node, b, "value", "flat")
    if finish.helpers:
        functions["epilogue"] = finish.functions()
    writes = []
    for i in range(per):
        store = [f"let c = c{i};", f"let d = d{i};", f"let flat = at * {channels}u + c;", f"let value = {result};",
                 *finish.lines, f"out[flat] = {stored};"]
        writes += block(f"if ({valid[i]})", store) if valid[i] else block("", store)
    stats += block(f"if (at < {rows}u)", writes)

    def body(sums: list[str]) -> str:
        return "\n\n".join(functions.values()) + "\n\n" + header + indent(lines + sums + stats) + "\n}"

    if by_words:  # the shader-f16 variant reads f16 elements a tap at a time
        return b.kernel("depthwise_norm", body(by_words), workgroups, body(by_taps))
    return b.kernel("depthwise_norm", body(by_taps), workgroups)
