"""Concatenation: one thread per output element picks the input its coordinate falls in.

A piece may be a split-K product's sum read in place (passes/split_k.py: ViT's patch embedding):
its slices and epilogue's inputs follow the pieces (node.operands of them). A piece may also be
computed in place from an elementwise expression (attrs["pieces"], passes/fuse_elementwise.py:
rotary embeddings' two halves) over inputs that follow the pieces too, read at the piece's coordinate."""

from kuma_build.compiler.ir.sizes import wgsl as u32
from kuma_build.compiler.kernels.elementwise import Writer, fold_sums
from kuma_build.compiler.kernels.wgsl import Bindings, block, indent, threads, unravel


def lower(node, device):
    b = Bindings(node)
    folded = fold_sums(node, b)
    out, dim, pieces = node.output, node.attrs["dim"], node.inputs[:node.operands]
    header, workgroups = threads(out.numel)
    lines, index = unravel("gid", out.shape)
    start, helpers = 0, ""
    for k, v in enumerate(pieces):
        end = start + v.shape[dim]
        shifted = list(index)
        shifted[dim] = f"({index[dim]} - {u32(start)})" if start != 0 else index[dim]
        keyword = "if" if k == 0 else "else if"
        test = f"({index[dim]} < {u32(end)})" if k < len(pieces) - 1 else "(true)"
        expr = node.attrs.get("pieces", {}).get(k)
        writer = Writer(lambda leaf, shifted=shifted: b.load(leaf.index, shifted), f"p{k}_")
        value = writer(expr) if expr is not None else b.load(k, shifted)
        lines += block(f"{keyword} {test}", [*writer.lines, f"out[gid] = {value};"])
        helpers += writer.functions()
        start = end
    return b.kernel("concat", helpers + folded + header + indent(lines) + "\n}", workgroups)
