"""Index writes: index_put (a fresh copy with the updated slots) and scatter (in place).

Both take values already viewed in the indexed shape (x.shape[:dim] + ids' shape +
x.shape[dim + len(ids):]) and index tensors viewed in ids' shape, or, for a slice or select
assignment, no index tensor and attrs["progression"] = (start, step): update k goes to slot
start + k * step of dim. An id wraps around once when negative (as torch's) and is then
clamped into the dim, so a bad id writes a wrong slot, never out of bounds; of two updates of
one slot the later wins.

- index_put: one thread per output element; it starts from x's element and looks through
  the updates for its slot (a few per run in a decode step, so the loop is short), or, for a
  progression, computes which update is its own.
- scatter: one thread per update, writing it into the node's output view in place: the
  state buffer a KV cache lives in (passes/state.py). A run writes O(updated) bytes. Its values
  may be computed in place (attrs["computed"], passes/fuse_elementwise.py: a decode step's rotated
  key): the inputs of the node that computed them follow the index tensors (node.operands are
  the scatter's own), and each thread evaluates that node's pieces where its value was
  (kernels/concat.py: computed_input), as a decode attention computes its queries.
"""

from math import prod

from kuma_build.compiler.ir.sizes import wgsl as u32
from kuma_build.compiler.kernels.concat import computed_input
from kuma_build.compiler.kernels.wgsl import Bindings, block, i32_size, indent, offset_expr, threads, unravel


def _slots(b: Bindings, node, first: int, at: list[str], prefix: str) -> tuple[list[str], list[str]]:
    """Lines computing the slot of each index tensor (inputs first, first + 1, .. of the node's own)
    at index `at` of ids' shape, wrapped and clamped into its dim of the written tensor; and their names."""
    dim, target = node.attrs["dim"], node.output.shape
    lines, names = [], []
    for j, k in enumerate(range(first, node.operands)):
        size = target[dim + j]
        lines += [f"let {prefix}raw{j} = {b.load(k, at)};",
                  f"let {prefix}slot{j} = u32(clamp(select({prefix}raw{j}, {prefix}raw{j} + {i32_size(size)}, {prefix}raw{j} < 0i), 0i, {i32_size(size - 1)}));"]
        names.append(f"{prefix}slot{j}")
    return lines, names


def lower_index_put(node, device):
    """out = x, then out[..., ids[k], ...] = values[..., k, ...] for every k of ids' shape."""
    b = Bindings(node)
    x, values = node.inputs[:2]
    dim, out = node.attrs["dim"], node.output
    header, workgroups = threads(out.numel)
    lines, index = unravel("gid", out.shape)
    lines.append(f"var value = {b.load(0, index)};")
    if node.attrs.get("progression"):
        (start, step), updates = node.attrs["progression"], values.shape[dim]
        lines.append(f"let k = ({index[dim]} - {start}u) / {step}u;")
        inside = f"{index[dim]} >= {start}u && ({index[dim]} - {start}u) % {step}u == 0u && k < {u32(updates)}"
        lines += block(f"if ({inside})", [f"value = {b.load(1, index[:dim] + ['k'] + index[dim + 1:])};"])
    else:
        count, batch = len(node.inputs) - 2, node.inputs[2].shape
        update_lines, update = unravel("k", batch, "u")
        slot_lines, slots = _slots(b, node, 2, update, "")
        match = " && ".join(f"{slot} == {index[dim + j]}" for j, slot in enumerate(slots))
        source = index[:dim] + update + index[dim + count:]
        loop = update_lines + slot_lines + block(f"if ({match})", [f"value = {b.load(1, source)};"])
        lines += block(f"for (var k = 0u; k < {u32(prod(batch))}; k++)", loop)
    lines.append("out[gid] = value;")
    return b.kernel("index_put", header + indent(lines) + "\n}", workgroups)


def lower_scatter(node, device):
    """out_view[..., ids[k], ...] = values[..., k, ...]: one thread per element of values."""
    b = Bindings(node)
    computed = computed_input(node, b)
    dim, shape = node.attrs["dim"], node.inputs[0].shape
    header, workgroups = threads(prod(shape))
    lines, index = unravel("gid", shape)
    if node.attrs.get("progression"):
        (start, step), batch_rank = node.attrs["progression"], 1
        slot_lines, slots = [], [f"({start}u + {index[dim]} * {step}u)"]
    else:
        batch_rank = len(shape) - len(node.output.shape) + node.operands - 1
        slot_lines, slots = _slots(b, node, 1, index[dim:dim + batch_rank], "")
    target = index[:dim] + slots + index[dim + batch_rank:]
    store = f"out[{offset_expr(node.output, target)}] = {b.load(0, index)};"
    return b.kernel("scatter", computed + header + indent(lines + slot_lines + [store]) + "\n}", workgroups)
