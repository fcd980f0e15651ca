"""Index-mapping copies: gather (embedding, index_select), take (torch.gather) and constant pad.

Both run one thread per output element and map its coordinate back to a
source coordinate. Gather ids are clamped into the table (after torch's
wrap-around of negative ids), so a bad id reads a wrong row, never out of
bounds. Pad writes the fill value where the coordinate falls outside the input.
"""

from kuma_build.compiler.ir.sizes import wgsl as u32
from kuma_build.compiler.kernels.wgsl import Bindings, i32_size, indent, literal, threads, unravel


def lower(node, device):
    """out[..., *i, ...] = table[..., ids[*i], ...], with ids replacing table dim `dim`."""
    b = Bindings(node)
    table, ids = node.inputs
    dim, out = node.attrs["dim"], node.output
    size = table.shape[dim]
    header, workgroups = threads(out.numel)
    lines, index = unravel("gid", out.shape)
    id_index = index[dim:dim + len(ids.shape)]
    lines += [f"let raw = {b.load(1, id_index)};",
              f"let id = u32(clamp(select(raw, raw + {i32_size(size)}, raw < 0i), 0i, {i32_size(size - 1)}));"]
    source = index[:dim] + ["id"] + index[dim + len(ids.shape):]
    lines.append(f"out[gid] = {b.load(0, source)};")
    return b.kernel("gather", header + indent(lines) + "\n}", workgroups)


def lower_take(node, device):
    """out[*i] = x[*i with dim `dim` replaced by ids[*i]] (torch.gather); ids are clamped as above."""
    b = Bindings(node)
    x, dim, out = node.inputs[0], node.attrs["dim"], node.output
    header, workgroups = threads(out.numel)
    lines, index = unravel("gid", out.shape)
    size = x.shape[dim]
    lines += [f"let raw = {b.load(1, index)};",
              f"let id = u32(clamp(select(raw, raw + {i32_size(size)}, raw < 0i), 0i, {i32_size(size - 1)}));",
              f"out[gid] = {b.load(0, index[:dim] + ['id'] + index[dim + 1:])};"]
    return b.kernel("take", header + indent(lines) + "\n}", workgroups)


def lower_pad(node, device):
    b = Bindings(node)
    x, out, before = node.inputs[0], node.output, node.attrs["before"]
    header, workgroups = threads(out.numel)
    lines, index = unravel("gid", out.shape)
    source, inside = [], []
    for d, (name, start, size) in enumerate(zip(index, before, x.shape)):
        if start == 0 and size == out.shape[d]:
            source.append(name)
            continue
        # u32 wrap-around makes coordinates before the input large, so one comparison covers both sides
        lines.append(f"let s{d} = {name} - {start}u;")
        source.append(f"s{d}")
        inside.append(f"s{d} < {u32(size)}")
    lines += [f"var value = {literal(node.attrs['value'], 'f32' if out.dtype == 'f32' else 'i32')};",
              f"if ({' && '.join(inside)}) {{ value = {b.load(0, source)}; }}",
              "out[gid] = value;"]
    return b.kernel("pad", header + indent(lines) + "\n}", workgroups)
