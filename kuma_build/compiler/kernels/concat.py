"""Concatenation: one thread per output element picks the input its coordinate falls in.

A piece may be a split-K product's sum read in place (passes/split_k.py: ViT's patch embedding):
its slices and epilogue's inputs follow the pieces (node.operands of them). A piece may also be
computed in place from an elementwise expression (attrs["pieces"], passes/fuse_elementwise.py:
rotary embeddings' two halves) over inputs that follow the pieces too, read at the piece's coordinate.

pieces_at writes the choice of piece at an index, so that a kernel computing its input 0 in place
(computed_input: a scatter's values, a decode attention's queries) evaluates a concatenation the same way."""

from kuma_build.compiler.ir.expr import In
from kuma_build.compiler.ir.sizes import wgsl as u32
from kuma_build.compiler.kernels.elementwise import Writer, fold_sums, helper_functions
from kuma_build.compiler.kernels.wgsl import Bindings, block, indent, needed, threads, unravel


def pieces(node) -> tuple[int, list]:
    """node's dim and its pieces along it: (extent, expression) each, In(k) for input k as it is."""
    dim, computed = node.attrs["dim"], node.attrs.get("pieces", {})
    return dim, [(v.shape[dim], computed.get(k, In(v.dtype, k))) for k, v in enumerate(node.inputs[:node.operands])]


def pieces_at(b: Bindings, dim: int, parts: list, index: list[str], store: str, prefix: str = "p") -> tuple[list[str], str]:
    """WGSL lines storing (`store`, such as "out[gid] = {};") the element at `index` of the
    concatenation along dim of parts, [(extent, expression)] whose In leaves read b's inputs at
    the piece's own coordinate; and the helper functions the expressions call."""
    lines, helpers, start = [], set(), 0
    for k, (extent, expr) in enumerate(parts):
        end = start + extent
        shifted = list(index)
        if start != 0:
            shifted[dim] = f"({index[dim]} - {u32(start)})"
        writer = Writer(lambda leaf, shifted=shifted: b.load(leaf.index, shifted), f"{prefix}{k}_")
        value = writer(expr)
        body = [*writer.lines, store.format(value)]
        if len(parts) == 1:
            lines += body
        else:
            test = f"if ({index[dim]} < {u32(end)})" if k < len(parts) - 1 else ""  # the last piece: the rest
            lines += block(f"else {test}".rstrip() if k else test, body)
        helpers |= writer.helpers
        start = end
    return lines, helper_functions(helpers)


def computed_input(node, b: Bindings) -> str:
    """The function computing input 0 at a flat index of its buffer from the pieces of the node that
    wrote it (attrs["computed"], passes/fuse_elementwise.py: a decode step's rotated key or queries),
    which b.load(0, ...) then calls; "" when input 0 is read."""
    computed = node.attrs.get("computed")
    if not computed:
        return ""
    b.sums[0] = "computed_at"
    lines, index = unravel("flat", computed["shape"], "q")
    values, helpers = pieces_at(b, computed["dim"], computed["pieces"], index, "value = {};", "qp")
    return helpers + "\n".join(block("fn computed_at(flat: u32) -> f32", [*lines, "var value = 0.0;", *values, "return value;"])) + "\n\n"


def lower(node, device):
    b = Bindings(node)
    folded = fold_sums(node, b)
    out = node.output
    header, workgroups = threads(out.numel)
    lines, index = unravel("gid", out.shape)
    dim, parts = pieces(node)
    body, helpers = pieces_at(b, dim, parts, index, "out[gid] = {};")
    return b.kernel("concat", helpers + folded + header + indent(needed(lines, body) + body) + "\n}", workgroups)
