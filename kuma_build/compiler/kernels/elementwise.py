"""Elementwise kernels: one thread per output element, the expression inlined.

The expression tree comes from the IR node (see ir/aten_elementwise.py); each
op is a WGSL template here. Helper functions (erf, pow) are emitted only when
an expression uses them.

fold_sums, which this kernel and the row, concat and split-sum kernels share,
reads an input that is a split-K product's partial sums in place: a function
adding its slices and applying the product's epilogue (passes/split_k.py).
"""

from math import prod

from kuma_build.compiler.ir.expr import Acc, Expr, In, Leaf, Lit, Op
from kuma_build.compiler.ir.graph import WGSL_TYPE
from kuma_build.compiler.ir.sizes import divides, wgsl as u32
from kuma_build.compiler.kernels.wgsl import Bindings, block, indent, literal, needed, offset_expr, threads, unravel

# op -> WGSL template over the rendered arguments {0}, {1}, ...
TEMPLATES = {
    "abs": "abs({0})", "neg": "(-{0})", "exp": "exp({0})", "log": "log({0})", "sqrt": "sqrt({0})",
    "rsqrt": "inverseSqrt({0})", "relu": "max({0}, {zero})", "sin": "sin({0})", "cos": "cos({0})",
    "sigmoid": "(1.0 / (1.0 + exp(-{0})))", "tanh": "tanh(clamp({0}, -15.0, 15.0))",
    "reciprocal": "(1.0 / {0})", "floor": "floor({0})", "ceil": "ceil({0})", "round": "round({0})",
    "trunc": "trunc({0})", "sign": "sign({0})", "erf": "kuma_erf({0})", "log1p": "log(1.0 + {0})",
    "expm1": "(exp({0}) - 1.0)", "logical_not": "i32({0} == 0i)",
    "gelu": "(0.5 * {0} * (1.0 + kuma_erf({0} * 0.70710678118654752)))",
    "gelu_tanh": "(0.5 * {0} * (1.0 + tanh(clamp(0.79788456080286536 * ({0} + 0.044715 * {0} * {0} * {0}), -15.0, 15.0))))",
    "leaky_relu": "select({0} * {1}, {0}, {0} > 0.0)",
    "elu": "({2} * select({1} * (exp({0} * {3}) - 1.0), {0}, {0} > 0.0))",
    "add": "({0} + {1})", "sub": "({0} - {1})", "mul": "({0} * {1})", "div": "({0} / {1})",
    "div_trunc": "trunc({0} / {1})", "div_floor": "floor({0} / {1})", "remainder": "({0} - floor({0} / {1}) * {1})",
    "maximum": "max({0}, {1})", "minimum": "min({0}, {1})", "clamp": "clamp({0}, {1}, {2})",
    "eq": "i32({0} == {1})", "ne": "i32({0} != {1})", "lt": "i32({0} < {1})",
    "le": "i32({0} <= {1})", "gt": "i32({0} > {1})", "ge": "i32({0} >= {1})",
    "logical_and": "i32(({0} != 0i) && ({1} != 0i))", "logical_or": "i32(({0} != 0i) || ({1} != 0i))",
    "logical_xor": "i32(({0} != 0i) != ({1} != 0i))",
    "where": "select({2}, {1}, {0} != 0i)", "pow": "kuma_pow({0}, {1})",
}
INTEGER_TEMPLATES = {"div_floor": "kuma_div_floor_i32({0}, {1})", "div_trunc": "({0} / {1})", "relu": "max({0}, 0i)",
                     "remainder": "kuma_remainder_i32({0}, {1})"}

HELPERS = {
    # erf: Taylor series near 0 (no cancellation), Numerical Recipes erfc elsewhere (|rel err| < 1.2e-7)
    "kuma_erf": """fn kuma_erf(x: f32) -> f32 {
  let a = abs(x);
  if (a < 0.5) {
    let x2 = x * x;
    return x * 1.1283791670955126 * (1.0 + x2 * (-0.3333333333 + x2 * (0.1 + x2 * (-0.0238095238 + x2 * (0.0046296296 + x2 * -0.0007575758)))));
  }
  let t = 1.0 / (1.0 + 0.5 * a);
  let y = t * exp(-a * a - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
  return sign(x) * (1.0 - y);
}""",
    # torch's pow: negative bases with integral exponents keep their sign
    "kuma_pow": """fn kuma_pow(x: f32, y: f32) -> f32 {
  if (y == 0.0) { return 1.0; }
  if (y == 1.0) { return x; }
  if (y == 2.0) { return x * x; }
  if (x >= 0.0) { return pow(x, y); }
  if (y != floor(y)) { return kuma_bits(0x7fc00000u); }
  let r = pow(-x, y);
  return select(r, -r, abs(y % 2.0) == 1.0);
}""",
    "kuma_div_floor_i32": """fn kuma_div_floor_i32(a: i32, b: i32) -> i32 {
  let q = a / b;
  return select(q, q - 1i, (a % b != 0i) && ((a < 0i) != (b < 0i)));
}""",
    # torch's (Python's) remainder: the sign of the divisor
    "kuma_remainder_i32": """fn kuma_remainder_i32(a: i32, b: i32) -> i32 {
  let r = a % b;
  return select(r, r + b, (r != 0i) && ((r < 0i) != (b < 0i)));
}""",
}


class Writer:
    """Renders expression trees (ir/expr.py) as WGSL `let` lines, one per distinct subexpression.

    A subexpression that a fused tree holds twice (silu's x in x * sigmoid(x))
    is computed once. `leaf` maps an In or Acc leaf to its WGSL; `prefix`
    keeps the let names apart from the caller's.
    """

    def __init__(self, leaf, prefix: str = "v"):
        self.leaf, self.prefix = leaf, prefix
        self.lines: list[str] = []
        self.names: dict[Expr, str] = {}
        self.helpers: set[str] = set()

    def __call__(self, expr: Expr) -> str:
        if isinstance(expr, (In, Acc)):
            return self.leaf(expr)
        if isinstance(expr, Lit):
            text = literal(expr.value, "i32" if expr.dtype in ("i32", "bool") else "f32")
            return f"({text})" if text.startswith("-") else text
        if expr not in self.names:
            value = self.compute(expr)
            self.names[expr] = f"{self.prefix}{len(self.names)}"
            self.lines.append(f"let {self.names[expr]} = {value};")
        return self.names[expr]

    def compute(self, expr: Op) -> str:
        op, dtype, args = expr.op, expr.dtype, expr.args
        if op == "cast":
            return f"{'f32' if dtype == 'f32' else 'i32'}({self(args[0])})"
        if op == "pow" and isinstance(args[1], Lit) and dtype == "f32":
            special = {1: "{0}", 2: "({0} * {0})", 3: "({0} * {0} * {0})", 0.5: "sqrt({0})", -1: "(1.0 / {0})"}
            if args[1].value in special:
                return special[args[1].value].format(self(args[0]))
        template = INTEGER_TEMPLATES[op] if dtype == "i32" and op in INTEGER_TEMPLATES else TEMPLATES[op]
        self.helpers.update(name for name in HELPERS if name in template)
        return template.format(*[self(a) for a in args], zero="0.0")

    def functions(self) -> str:
        """The helper functions the rendered expressions call, to put before the entry point."""
        return helper_functions(self.helpers)


def helper_functions(names) -> str:
    """The WGSL of the named helper functions (HELPERS), each once, to put before the entry point."""
    return "".join(HELPERS[name] + "\n\n" for name in sorted(names))


def epilogue(node, b, acc: str, flat: str) -> tuple[Writer, str]:
    """The node's fused epilogue (attrs["epilogue"]) applied to its accumulated value `acc`.

    Other inputs of the epilogue are read at the output element `flat` (a
    flat index into the contiguous output). Returns the writer (its lines to
    run first, its helper functions) and the value to store.
    """
    expr = node.attrs.get("epilogue")
    if expr is None:
        return Writer(None), acc
    return expression_at(expr, node.output.shape, b, acc, flat)


def expression_at(expr, shape, b, acc: str, flat: str, names: tuple[str, str, str] = ("e", "e_in", "ep")) -> tuple[Writer, str]:
    """expr with its Acc leaf `acc` and each In leaf input k of b read at the element `flat` (a flat
    index into a contiguous tensor of `shape`): the writer (lines, helpers) and the value. `names`
    prefix the index, load and expression lets, apart from the caller's."""
    index_prefix, load_prefix, prefix = names
    index_lines, index = unravel(flat, shape, index_prefix)
    loads: dict[int, str] = {}  # input -> its load line, each input read once

    def leaf(leaf: Leaf) -> str:
        if isinstance(leaf, Acc):
            return acc
        loads.setdefault(leaf.index, f"let {load_prefix}{leaf.index} = {b.load(leaf.index, index)};")
        return f"{load_prefix}{leaf.index}"

    writer = Writer(leaf, prefix)
    value = writer(expr)
    writer.lines[:0] = needed(index_lines, [*loads.values(), *writer.lines]) + list(loads.values())
    return writer, value


def fold_sums(node, b) -> str:
    """WGSL functions reading the node's inputs that are a split-K product's partial sums (attrs["sums"]:
    (input, splits, the sum's epilogue, the product's shape)): each adds the slices at a flat index
    of the product's result and applies the epilogue; from now on b.load of such an input calls it.
    The pass folds only epilogues that need no helper functions, so none are repeated here. A sum
    folded into a split sum before (attrs["sums"] of its own) comes along as one more entry, which the
    first's epilogue reads through b.load like any input."""
    for k, *_ in node.attrs.get("sums", ()):  # first: an epilogue may read another entry
        b.sums[k] = f"sum_in{k}"
    functions = []
    for k, splits, expr, shape in node.attrs.get("sums", ()):
        writer, value = expression_at(expr, shape, b, "total", "flat", ("s_i", "s_in", "sv"))
        lines = ["var total = 0.0;",
                 f"for (var s = 0u; s < {splits}u; s++) {{ total += {b.names[k]}[s * {u32(prod(shape))} + flat]; }}",
                 *writer.lines, f"return {value};"]
        functions.append("\n".join(block(f"fn sum_in{k}(flat: u32) -> f32", lines)) + "\n\n")
    return "".join(functions)


def fold_reads(node, k: int) -> int:
    """How many times a kernel of one thread per output element (this one, a split sum) reads each
    element of input k: once, or 0 (it cannot fold a sum there) when the view repeats elements (a
    broadcast), which would add the same slices again for every repeat (ops.py: fold_sums)."""
    return 0 if node.inputs[k].is_broadcast() else 1


def helpers_of(expr) -> set[str]:
    """The helper functions (HELPERS) rendering expr calls."""
    writer = Writer(lambda leaf: "x")
    writer(expr)
    return writer.helpers


LANES = "xyzw"


def vectorizable(node) -> bool:
    """Every operand and the result are whole contiguous f32 buffers of a size divisible by 4 (and
    no operand is a split-K product's partial sums, read through fold_sums)."""
    values = [*node.inputs, node.output]
    return divides(4, node.output.numel) and "sums" not in node.attrs and all(
        v.dtype == "f32" and v.buffer.storage == "f32" and v.buffer.pages == 1 and v.is_contiguous() for v in values)


def lower_vec4(node):
    """16-byte loads and stores (memory-bound kernels reach the copy bandwidth only with them);
    the expression is evaluated per lane with the scalar templates."""
    b = Bindings(node)
    b.vector = 4
    header, workgroups = threads(node.output.numel // 4)
    lines = [f"let x{k} = {b.names[k]}[gid];" for k in range(len(node.inputs))]
    values = []
    for lane in LANES:
        writer = Writer(lambda leaf, lane=lane: f"x{leaf.index}.{lane}", prefix=f"{lane}_")
        values.append(writer(node.attrs["expr"]))
        lines += writer.lines
    body = header + indent(lines + [f"out[gid] = vec4<f32>({', '.join(values)});"]) + "\n}"
    return b.kernel("elementwise", writer.functions() + body, workgroups)


def lower(node, device):
    if vectorizable(node):
        return lower_vec4(node)
    b = Bindings(node)
    folded = fold_sums(node, b)  # a split-K product's sum read in place (passes/split_k.py)
    out = node.output
    header, workgroups = threads(out.numel)
    order = thread_order(node)
    lines, index = order or unravel("gid", out.shape)
    lines += [f"let x{k} = {b.load(k, index)};" for k in range(node.operands)]  # past them: a folded sum's (fold_sums)
    writer = Writer(lambda leaf: f"x{leaf.index}")
    value = writer(node.attrs["expr"])
    body = header + indent(lines + writer.lines + [f"out[{offset_expr(out, index) if order else 'gid'}] = {value};"]) + "\n}"
    return b.kernel("elementwise", folded + writer.functions() + body, workgroups)


def thread_order(node) -> tuple[list[str], list[str]] | None:
    """Where the elements are not in the output's logical order in memory, the order the threads
    go in: that of a folded split-K sum read through a permutation of its layout (ConvNeXt's
    residual add reading its channels-last feed-forward output channels first), else that of an
    output stored permuted (passes/operand_order.py, which stores that add in its sum's order):
    WGSL lines giving each dim's index (memory_order) and their names. The sum's slices, which
    are read the most, are then read as neighbours; the store scatters where the output is not
    in their order. None: threads go in output order."""
    candidates = [node.inputs[k] for k, *_ in node.attrs.get("sums", ()) if k < node.operands] + [node.output]
    return next((order for order in map(memory_order, candidates) if order), None)


def memory_order(v) -> tuple[list[str], list[str]] | None:
    """For a view v in memory in another order of its dims than its own (Value.is_permuted), lines
    giving each dim's index so that gid is the element's place there, and their names; else None."""
    if not v.is_permuted():
        return None
    # gid is the element's place in v's layout: each dim's index is its digit there
    lines = [f"let i{d} = {'0u' if size == 1 else ('gid' if stride == 1 else f'(gid / {stride}u)') + f' % {size}u'};"
             for d, (size, stride) in enumerate(zip(v.shape, v.strides))]
    return lines, [f"i{d}" for d in range(len(v.shape))]


def lower_arange(node, device):
    """out = start + step * (flat index): torch.arange with an end a dim sets, and a fill (step 0)
    of a shape a dim sets (torch.full, ones, zeros)."""
    b = Bindings(node)
    out = node.output
    header, workgroups = threads(out.numel)
    wgsl_type = WGSL_TYPE[out.dtype]
    kind = "f32" if wgsl_type == "f32" else "i32"
    value = literal(node.attrs["start"], kind)
    if node.attrs["step"]:
        value = f"{value} + {literal(node.attrs['step'], kind)} * {wgsl_type}(gid)"
    return b.kernel("arange", header + indent([f"out[gid] = {value};"]) + "\n}", workgroups)
