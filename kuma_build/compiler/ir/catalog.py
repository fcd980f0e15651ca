"""The supported-operator table (docs/ops.md), generated from the importer's registry."""

import sys

from kuma_build.compiler.ir import importer  # noqa: F401  (fills the registry)
from kuma_build.compiler.ir.registry import ATEN

HEADER = """# Supported operators

Generated from the op registry by `python -m kuma_build.compiler.ir.catalog > docs/ops.md`;
`tests/test_docs.py` fails when this file and the registry disagree.

kuma compiles the core ATen operators that `torch.export` produces after decomposition (with
`scaled_dot_product_attention` kept whole). Any other operator fails the build with a message
naming the operator, the model and the line of your Python source that produced it.
Views (`view`, `permute`, `expand`, `slice`, ...) cost nothing: they alias their input.
Nodes whose inputs are all constants (weights, `arange`, masks) are computed at build time
by PyTorch itself, so any operator works there.

With a dynamic dimension (kuma.toml `dims`), every family below takes sizes set by the dim,
except convolution, pooling and upsampling (and `topk` with a `k`, attention with a head size, or
slice assignment along a dim that a dim sets): those fail the build naming the op, your line and the dim. Sizes must stay polynomials in the dims (`2 * seq + 1`,
not `seq // 2`).
"""


def ops_markdown() -> str:
    families: dict[str, list[str]] = {}
    for name, handler in ATEN.items():
        families.setdefault(handler.__module__, []).append(name)
    rows = ["| family | PyTorch it covers | lowering | ATen operators |", "|---|---|---|---|"]
    for module_name in sorted(families):
        module = sys.modules[module_name]
        lowering = (module.__doc__ or "").strip().splitlines()[0]
        ops = ", ".join(f"`{op.removeprefix('aten.')}`" for op in sorted(families[module_name]))
        family = module_name.rsplit(".", 1)[-1].removeprefix("aten_")
        rows.append(f"| {family} | {getattr(module, 'COVERS', '')} | {lowering} | {ops} |")
    return HEADER + "\n" + "\n".join(rows) + "\n"

if __name__ == "__main__":
    print(ops_markdown(), end="")
