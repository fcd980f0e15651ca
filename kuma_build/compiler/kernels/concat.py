"""Concatenation: one thread per output element picks the input its coordinate falls in.

A piece may be a split-K product's sum read in place (passes/split_k.py: ViT's patch embedding):
its slices and epilogue's inputs follow the pieces (node.operands of them)."""

from kuma_build.compiler.ir.sizes import wgsl as u32
from kuma_build.compiler.kernels.elementwise import fold_sums
from kuma_build.compiler.kernels.wgsl import Bindings, block, indent, threads, unravel


def lower(node, device):
    b = Bindings(node)
    folded = fold_sums(node, b)
    out, dim, pieces = node.output, node.attrs["dim"], node.inputs[:node.operands]
    header, workgroups = threads(out.numel)
    lines, index = unravel("gid", out.shape)
    start = 0
    for k, v in enumerate(pieces):
        end = start + v.shape[dim]
        shifted = list(index)
        shifted[dim] = f"({index[dim]} - {u32(start)})" if start != 0 else index[dim]
        keyword = "if" if k == 0 else "else if"
        test = f"({index[dim]} < {u32(end)})" if k < len(pieces) - 1 else "(true)"
        lines += block(f"{keyword} {test}", [f"out[gid] = {b.load(k, shifted)};"])
        start = end
    return b.kernel("concat", folded + header + indent(lines) + "\n}", workgroups)
