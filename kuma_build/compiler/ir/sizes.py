"""Symbolic sizes: a size that depends on the model's declared dims (kuma.toml `dims`).

A dimension declared as `seq = { min = 1, max = 512 }` makes every size torch.export derives
from it a polynomial over the dim names with integer coefficients (`12*seq + 3`, `seq*seq`).
A `Sym` is such a polynomial; every operation that gives a constant gives a plain int, so a
model without dims never holds a Sym and compiles exactly as before. Kernels render a Sym as
a u32 WGSL expression reading the dims uniform (`wgsl`), the program stores it as a term list
(`to_json`, docs/design.md: `[[12, "seq"], [3]]`), and memory is planned at `max_value`.

Only what shapes need is here: +, -, * and exact // by an int. Comparing a Sym with a number
is refused (a TypeError) rather than guessed: code that branches on a size must branch on
`max_value` (a tuning choice) or test equality (a shortcut that only a static size takes).
"""

from dataclasses import dataclass
from itertools import product


@dataclass(frozen=True, order=True)
class Dim:
    """A declared dimension: its field in the dims uniform (`index`) and its range."""
    index: int
    name: str
    min: int
    max: int

    def __repr__(self) -> str:  # part of the kernel cache key (kernels/__init__.py: spec_key)
        return f"{self.name}#{self.index}[{self.min},{self.max}]"


Monomial = tuple[Dim, ...]  # sorted; () is the constant term


class Sym:
    """sum of coefficient * product(dims) over its terms; never constant (that is an int)."""
    __slots__ = ("terms",)

    def __init__(self, terms: dict[Monomial, int]):
        self.terms = tuple(sorted((m, c) for m, c in terms.items() if c))

    @staticmethod
    def of(dim: Dim) -> "Sym":
        return Sym({(dim,): 1})

    # --- arithmetic (results that are constant come back as ints) ------------------------
    def _dict(self) -> dict[Monomial, int]:
        return dict(self.terms)

    def __add__(self, other):
        terms = self._dict()
        for m, c in _terms(other):
            terms[m] = terms.get(m, 0) + c
        return _size(terms)

    __radd__ = __add__

    def __neg__(self):
        return _size({m: -c for m, c in self.terms})

    def __sub__(self, other):
        return self + (-other)

    def __rsub__(self, other):
        return (-self) + other

    def __mul__(self, other):
        terms: dict[Monomial, int] = {}
        for (m1, c1), (m2, c2) in product(self.terms, _terms(other)):
            m = tuple(sorted(m1 + m2))
            terms[m] = terms.get(m, 0) + c1 * c2
        return _size(terms)

    __rmul__ = __mul__

    def __floordiv__(self, other):
        """Exact division by an int (a reshape's -1, a split); anything else is not a polynomial."""
        if not isinstance(other, int) or other == 0 or any(c % other for _, c in self.terms):
            raise NotPolynomial(f"({self}) // {other}")
        return _size({m: c // other for m, c in self.terms})

    def __eq__(self, other):
        return isinstance(other, Sym) and self.terms == other.terms

    def __hash__(self):
        return hash(self.terms)

    def _refuse(self, other):
        raise DynamicSize(f"the size {self} is compared with {other}")

    __lt__ = __le__ = __gt__ = __ge__ = _refuse

    def _as_number(self, *other):
        raise DynamicSize(f"the size {self} is used as a number")

    # range(), slice.indices(), %, / and // by a Sym need a number: refused the same way
    __int__ = __index__ = __mod__ = __rmod__ = __truediv__ = __rtruediv__ = __rfloordiv__ = _as_number

    # --- what it is ------------------------------------------------------------------------
    @property
    def dims(self) -> set[Dim]:
        return {d for m, _ in self.terms for d in m}

    def evaluate(self, values: dict[str, int]) -> int:
        return sum(c * _monomial_value(m, values) for m, c in self.terms)

    def __repr__(self) -> str:  # stable: part of the kernel cache key
        return "Sym(" + " + ".join(f"{c}*{'*'.join(map(repr, m))}" if m else str(c) for m, c in self.terms) + ")"

    def __str__(self) -> str:
        return " + ".join(("*".join([str(c)] * (c != 1) + [d.name for d in m]) if m else str(c)) for m, c in self.terms)


class DynamicSize(TypeError):
    """Code that needs a number where a dim sets the size (an op not written for dims yet)."""


class NotPolynomial(DynamicSize):
    """A size that a dim makes something other than a polynomial (a floor division, a modulo)."""


def _terms(x) -> tuple:
    return x.terms if isinstance(x, Sym) else ((((), int(x)),) if x else ())


def _size(terms: dict[Monomial, int]):
    terms = {m: c for m, c in terms.items() if c}
    if all(m == () for m in terms):
        return terms.get((), 0)
    return Sym(terms)


def _monomial_value(m: Monomial, values: dict[str, int]) -> int:
    value = 1
    for d in m:
        value *= values[d.name]
    return value


def divides(n: int, x) -> bool:
    """Whether n divides x at every value of the dims (every coefficient of a Sym)."""
    return all(c % n == 0 for _, c in x.terms) if isinstance(x, Sym) else x % n == 0


def is_sym(x) -> bool:
    return isinstance(x, Sym)


def any_sym(values) -> bool:
    return any(isinstance(v, Sym) for v in values)


def dims_of(values) -> set[Dim]:
    """The dims that any of `values` (ints or Syms) depend on."""
    return set().union(*(v.dims for v in values if isinstance(v, Sym)))


def _corners(x: Sym) -> list[int]:
    dims = sorted(x.dims)
    return [x.evaluate({d.name: v for d, v in zip(dims, choice)}) for choice in product(*((d.min, d.max) for d in dims))]


def max_value(x) -> int:
    """The largest value over the dims' ranges (at a corner of the box: shapes are multilinear
    in practice, and their coefficients positive)."""
    return max(_corners(x)) if isinstance(x, Sym) else x


def min_value(x) -> int:
    return min(_corners(x)) if isinstance(x, Sym) else x


def evaluate(x, values: dict[str, int]) -> int:
    return x.evaluate(values) if isinstance(x, Sym) else x


def wgsl(x) -> str:
    """A u32 WGSL expression of the size (reading the `dims` uniform); `12u` for an int.
    u32 arithmetic wraps, so subtracting terms gives the right value whenever it is >= 0."""
    if not isinstance(x, Sym):
        return f"{x}u"
    positive = [(m, c) for m, c in x.terms if c > 0] + [(m, c) for m, c in x.terms if c < 0]
    text = ""
    for m, c in positive:
        factors = [f"dims.{d.name}" for d in m]
        term = " * ".join(([f"{abs(c)}u"] if abs(c) != 1 or not m else []) + factors)
        text = term if not text and c > 0 else f"{text} {'+' if c > 0 else '-'} {term}" if text else f"0u - {term}"
    return text if len(x.terms) == 1 and x.terms[0][1] == 1 and len(x.terms[0][0]) == 1 else f"({text})"


def to_json(x):
    """The program's form of a size: a number, or a list of [coef, name, name, ...] terms."""
    if not isinstance(x, Sym):
        return x
    return [[c, *(d.name for d in m)] for m, c in x.terms]


def ceil_div_count(x, per: int):
    """A workgroup count: ceil(x / per) as an int, or the program's {"size", "per"} when x is a Sym."""
    if isinstance(x, Sym):
        return {"size": to_json(x), "per": per}
    return -(-x // per)
