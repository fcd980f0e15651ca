"""Elementwise aten ops -> one "elementwise" IR node holding an expression tree.

The tree (ir/expr.py) has an In leaf for each tensor operand and a Lit for
each scalar. Inputs are broadcast to the output shape as stride-0 views, so the
kernel never sees broadcasting. Keeping a tree (not one op per node) lets a pass
fuse chains into one kernel.
"""

import torch

from kuma_build.compiler.ir import views
from kuma_build.compiler.ir.expr import In, Lit, Op
from kuma_build.compiler.ir.graph import Value, const, ir_dtype
from kuma_build.compiler.ir.registry import Unsupported, aten
from kuma_build.compiler.ir.sizes import is_sym

COMPARISONS = {"eq", "ne", "lt", "le", "gt", "ge"}
LOGICAL = {"logical_and", "logical_or", "logical_xor"}


def _torch_dtype(x):
    if isinstance(x, Value):
        return {"f32": torch.float32, "i32": torch.int64, "bool": torch.bool}[x.dtype]
    return x


def _example(x):
    """Something torch.result_type accepts that has x's dtype and rank class."""
    if isinstance(x, Value):
        return torch.empty((1,) * min(len(x.shape), 1), dtype=_torch_dtype(x))
    return x


def elementwise(ctx, op: str, *operands):
    """Emit out = op(*operands) with torch's broadcasting and type promotion."""
    out_shape, out_dtype = ctx.shape, ir_dtype(ctx.meta.dtype)
    tensors = [x for x in operands if isinstance(x, Value)]
    compute = out_dtype
    if op in COMPARISONS:
        compute = ir_dtype(torch.result_type(*map(_example, operands)))
    elif op in LOGICAL:
        compute = "bool"
    inputs, leaves = [], []
    for i, x in enumerate(operands):
        want = "bool" if (op == "where" and i == 0) else compute
        if isinstance(x, Value):
            inputs.append(views.expand(x, out_shape) if tuple(x.shape) != out_shape else x)
            leaf = In(x.dtype, len(inputs) - 1)
            leaves.append(leaf if x.dtype == want else Op("cast", want, (leaf,)))
        else:
            leaves.append(Lit(want, x))
    expr = Op(op, out_dtype, tuple(leaves))
    if not tensors:
        raise Unsupported("needs at least one tensor operand")
    return ctx.emit("elementwise", inputs, out_shape, out_dtype, expr=expr)


def unary(op):
    return lambda ctx, x: elementwise(ctx, op, x)


for _name, _op in {
    "abs": "abs", "neg": "neg", "exp": "exp", "log": "log", "sqrt": "sqrt", "rsqrt": "rsqrt",
    "relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh", "sin": "sin", "cos": "cos",
    "reciprocal": "reciprocal", "floor": "floor", "ceil": "ceil", "round": "round", "trunc": "trunc",
    "sign": "sign", "erf": "erf", "log1p": "log1p", "expm1": "expm1", "logical_not": "logical_not",
}.items():
    aten(f"{_name}.default")(unary(_op))

for _name in ["eq", "ne", "lt", "le", "gt", "ge"]:
    aten(f"{_name}.Tensor", f"{_name}.Scalar")(lambda ctx, a, b, _op=_name: elementwise(ctx, _op, a, b))

for _name in ["logical_and", "logical_or", "logical_xor"]:
    aten(f"{_name}.default")(lambda ctx, a, b, _op=_name: elementwise(ctx, _op, a, b))

for _name in ["maximum", "minimum"]:
    aten(f"{_name}.default")(lambda ctx, a, b, _op=_name: elementwise(ctx, _op, a, b))


@aten("add.Tensor", "add.Scalar")
def add(ctx, a, b, alpha=1):
    if alpha != 1:
        b = elementwise_scaled(ctx, b, alpha)
    return elementwise(ctx, "add", a, b)


@aten("sub.Tensor", "sub.Scalar", "rsub.Scalar", "rsub.Tensor")
def sub(ctx, a, b, alpha=1):
    if ctx.node.target in (torch.ops.aten.rsub.Scalar, torch.ops.aten.rsub.Tensor):
        a, b = b, a
    if alpha != 1:
        b = elementwise_scaled(ctx, b, alpha)
    return elementwise(ctx, "sub", a, b)


def elementwise_scaled(ctx, b, alpha):
    if not isinstance(b, Value):
        return b * alpha
    raise Unsupported("alpha != 1 with a tensor operand")


@aten("mul.Tensor", "mul.Scalar")
def mul(ctx, a, b):
    return elementwise(ctx, "mul", a, b)


@aten("div.Tensor", "div.Scalar", "div.Tensor_mode", "div.Scalar_mode")
def div(ctx, a, b, rounding_mode=None):
    op = {None: "div", "trunc": "div_trunc", "floor": "div_floor"}[rounding_mode]
    return elementwise(ctx, op, a, b)


@aten("remainder.Tensor", "remainder.Scalar")
def remainder(ctx, a, b):
    return elementwise(ctx, "remainder", a, b)


@aten("pow.Tensor_Scalar", "pow.Tensor_Tensor", "pow.Scalar")
def pow_(ctx, a, b):
    return elementwise(ctx, "pow", a, b)


@aten("where.self", "where.ScalarSelf", "where.ScalarOther", "where.Scalar")
def where(ctx, cond, a, b):
    return elementwise(ctx, "where", cond, a, b)


@aten("clamp.default", "clamp.Tensor", "hardtanh.default")
def clamp(ctx, x, lo=None, hi=None):
    if ctx.node.target is torch.ops.aten.hardtanh.default:
        lo = -1.0 if lo is None else lo
        hi = 1.0 if hi is None else hi
    if lo is not None and hi is not None:
        return elementwise(ctx, "clamp", x, lo, hi)
    if lo is not None:
        return elementwise(ctx, "maximum", x, lo)
    if hi is not None:
        return elementwise(ctx, "minimum", x, hi)
    return ctx.copy(x)


@aten("clamp_min.default")
def clamp_min(ctx, x, lo):
    return elementwise(ctx, "maximum", x, lo)


@aten("clamp_max.default")
def clamp_max(ctx, x, hi):
    return elementwise(ctx, "minimum", x, hi)


@aten("gelu.default")
def gelu(ctx, x, approximate="none"):
    return elementwise(ctx, "gelu_tanh" if approximate == "tanh" else "gelu", x)


@aten("elu.default")
def elu(ctx, x, alpha=1.0, scale=1.0, input_scale=1.0):
    return elementwise(ctx, "elu", x, alpha, scale, input_scale)


@aten("_assert_tensor_metadata.default")
def assert_metadata(ctx, *args, **kwargs):
    return None  # a trace-time check with nothing to compute


@aten("leaky_relu.default")
def leaky_relu(ctx, x, negative_slope=0.01):
    return elementwise(ctx, "leaky_relu", x, negative_slope)


@aten("_to_copy.default", "clone.default", "lift_fresh_copy.default", "alias_copy.default")
def to_copy(ctx, x, **kwargs):
    dtype = ir_dtype(ctx.meta.dtype)
    if dtype == x.dtype:
        return ctx.copy(x)
    return ctx.emit("elementwise", [x], x.shape, dtype, expr=Op("cast", dtype, (In(x.dtype, 0),)))


@aten("full_like.default", "zeros_like.default", "ones_like.default", "empty_like.default")
def full_like(ctx, x, fill_value=0, **kwargs):
    # only the shape of x matters, so the result is a constant (or a fill, when a dim sets the shape)
    name = str(ctx.node.target)
    value = 1 if "ones_like" in name else (fill_value if "full_like" in name else 0)
    return fill(ctx, value)


def fill(ctx, value):
    """The current node's result filled with value: a constant, or an "arange" of step 0 when a dim sets its shape."""
    shape, dtype = ctx.shape, ctx.meta.dtype
    if not any(is_sym(s) for s in shape):
        return const(torch.full(shape, value, dtype=dtype), f"folded.{ctx.node.name}")
    return ctx.emit("arange", [], shape, ir_dtype(dtype), start=value, step=0)


# torch.full, arange and the like are computed at build time (the importer folds them) unless a
# dim sets their size; then they become an "arange" node (kernels/elementwise.py: lower_arange)

@aten("full.default")
def full(ctx, size, fill_value, **kwargs):
    return fill(ctx, fill_value)


@aten("zeros.default", "empty.memory_format")
def zeros(ctx, size, **kwargs):
    return fill(ctx, 0)


@aten("ones.default")
def ones(ctx, size, **kwargs):
    return fill(ctx, 1)


@aten("arange.default", "arange.start", "arange.start_step")
def arange(ctx, *args, **kwargs):
    start, step = (0, 1) if len(args) == 1 else (args[0], args[2] if len(args) > 2 else 1)
    if is_sym(start) or is_sym(step):
        raise Unsupported("arange's start and step must be numbers (only its end may depend on a dim)")
    return ctx.emit("arange", [], ctx.shape, ir_dtype(ctx.meta.dtype), start=start, step=step)
