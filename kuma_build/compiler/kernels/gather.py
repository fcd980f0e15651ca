"""Index-mapping copies: gather (embedding, index_select) and constant pad.

Both run one thread per output element and map its coordinate back to a
source coordinate. Gather ids are clamped into the table (after torch's
wrap-around of negative ids), so a bad id reads a wrong row, never out of
bounds. Pad writes the fill value where the coordinate falls outside the input.
"""

from kuma_build.compiler.kernels.wgsl import Bindings, indent, literal, threads, unravel


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
              f"let id = u32(clamp(select(raw, raw + {size}i, raw < 0i), 0i, {size - 1}i));"]
    source = index[:dim] + ["id"] + index[dim + len(ids.shape):]
    lines.append(f"out[gid] = {b.load(0, source)};")
    return b.kernel("gather", header + indent(lines) + "\n}", workgroups)


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
        inside.append(f"s{d} < {size}u")
    lines += [f"var value = {literal(node.attrs['value'], 'f32' if out.dtype == 'f32' else 'i32')};",
              f"if ({' && '.join(inside)}) {{ value = {b.load(0, source)}; }}",
              "out[gid] = value;"]
    return b.kernel("pad", header + indent(lines) + "\n}", workgroups)
