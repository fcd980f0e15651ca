"""Concatenation: one thread per output element picks the input its coordinate falls in."""

from kuma_build.compiler.ir.sizes import wgsl as u32
from kuma_build.compiler.kernels.wgsl import Bindings, block, indent, threads, unravel


def lower(node, device):
    b = Bindings(node)
    out, dim = node.output, node.attrs["dim"]
    header, workgroups = threads(out.numel)
    lines, index = unravel("gid", out.shape)
    start = 0
    for k, v in enumerate(node.inputs):
        end = start + v.shape[dim]
        shifted = list(index)
        shifted[dim] = f"({index[dim]} - {u32(start)})" if start != 0 else index[dim]
        keyword = "if" if k == 0 else "else if"
        test = f"({index[dim]} < {u32(end)})" if k < len(node.inputs) - 1 else "(true)"
        lines += block(f"{keyword} {test}", [f"out[gid] = {b.load(k, shifted)};"])
        start = end
    return b.kernel("concat", header + indent(lines) + "\n}", workgroups)
