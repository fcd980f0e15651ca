"""Running and ranked reductions along the last dim: cumsum and topk, one thread per row.

The importer permutes the scanned dim last (a free view). A thread walks its row in order, so
cumsum adds in torch's order (exact for integers, the same rounding for floats), and topk makes
k passes over the row, each taking the best element ranked after the previous pass's pick (by
value, then by position: of equal values the first comes first), so it keeps no per-thread array.
"""

from math import prod

from kuma_build.compiler.ir.graph import WGSL_TYPE
from kuma_build.compiler.ir.sizes import max_value, wgsl as u32
from kuma_build.compiler.kernels.rows import MIN_THREAD_ROWS, thread_row_size
from kuma_build.compiler.kernels.wgsl import Bindings, block, indent, threads, unravel


def _rows(node):
    """(Bindings, header, workgroups, lines unravelling the row, the row's index names, row length)."""
    b = Bindings(node)
    x = node.inputs[0]
    rows, length = prod(x.shape[:-1]), x.shape[-1]
    header, workgroups = threads(rows, thread_row_size(max(max_value(rows), MIN_THREAD_ROWS)))
    lines, index = unravel("gid", x.shape[:-1], "r")
    return b, header, workgroups, lines, index, length


def lower_cumsum(node, device):
    b, header, workgroups, lines, index, length = _rows(node)
    out_type = WGSL_TYPE[node.output.dtype]
    lines += [f"var total = {out_type}(0);"]
    lines += block(f"for (var pos = 0u; pos < {u32(length)}; pos++)", [
        f"total = total + {out_type}({b.load(0, index + ['pos'])});",
        f"out[gid * {u32(length)} + pos] = total;"])
    return b.kernel("cumsum", header + indent(lines) + "\n}", workgroups)


def lower_topk(node, device):
    """out[row, j]: the j-th largest (or smallest) value of the row, or its position (attrs["indices"])."""
    b, header, workgroups, lines, index, length = _rows(node)
    k, largest = node.output.shape[-1], node.attrs["largest"]
    ahead, behind = (">", "<") if largest else ("<", ">")
    x_type = WGSL_TYPE[node.inputs[0].dtype]
    result = "i32(best_pos)" if node.attrs["indices"] else "best"
    lines += [f"var last = {x_type}(0);", "var last_pos = 0u;"]
    scan = [f"let x = {b.load(0, index + ['pos'])};",
            f"let after = j == 0u || x {behind} last || (x == last && pos > last_pos);",
            f"if (after && (best_pos == 0xffffffffu || x {ahead} best)) {{ best = x; best_pos = pos; }}"]
    lines += block(f"for (var j = 0u; j < {k}u; j++)", [
        f"var best = {x_type}(0);", "var best_pos = 0xffffffffu;",
        *block(f"for (var pos = 0u; pos < {u32(length)}; pos++)", scan),
        f"out[gid * {k}u + j] = {result};", "last = best;", "last_pos = best_pos;"])
    return b.kernel("topk", header + indent(lines) + "\n}", workgroups)
