"""Expression trees: what an elementwise node computes, and a fused epilogue applied to a sum.

An "elementwise" node holds one tree over its inputs, so a pass can fuse a chain of them into
one kernel (passes/fuse_elementwise.py) or into a product's epilogue (passes/fuse_epilogue.py).

    In(dtype, k)          the node's k-th input, at the element being computed
    Acc(dtype)            the producer's accumulated value (epilogues only)
    Lit(dtype, value)     a scalar
    Op(op, dtype, args)   op over argument trees; kernels/elementwise.py has a WGSL template per op
                          ("cast" converts its one argument to dtype)

dtype is the IR dtype of the value ("f32", "i32", "bool"). Trees are immutable and compared by
value; Lit keeps -0.0 and 0.0 apart, as they are different WGSL literals.
"""

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class In:
    dtype: str
    index: int


@dataclass(frozen=True)
class Acc:
    dtype: str = "f32"


@dataclass(frozen=True)
class Lit:
    dtype: str
    value: float | int | bool

    def __eq__(self, other):  # repr, not ==: -0.0 == 0.0 but they are different literals
        return isinstance(other, Lit) and repr(self) == repr(other)

    def __hash__(self):
        return hash(repr(self))


@dataclass(frozen=True)
class Op:
    op: str
    dtype: str
    args: tuple["Expr", ...]


Expr = In | Acc | Lit | Op
Leaf = In | Acc


def copy_of(dtype: str) -> In:
    """The expression of a plain copy of input 0."""
    return In(dtype, 0)


def remap(expr: Expr, leaf: Callable[[Leaf], Expr]) -> Expr:
    """expr with each In or Acc leaf replaced by leaf(it)."""
    if isinstance(expr, (In, Acc)):
        return leaf(expr)
    if isinstance(expr, Op):
        return Op(expr.op, expr.dtype, tuple(remap(a, leaf) for a in expr.args))
    return expr


def input_leaves(expr: Expr) -> set[int]:
    """The input indices an expression reads."""
    if isinstance(expr, In):
        return {expr.index}
    if isinstance(expr, Op):
        return set().union(*(input_leaves(a) for a in expr.args))
    return set()
