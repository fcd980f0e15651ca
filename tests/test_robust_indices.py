"""The workgroup-memory indices of the hot kernels need no robustness clamp on Dawn.

Dawn's robustness (Tint) clamps every index into a workgroup array unless its integer range
analysis proves it in bounds, and that analysis knows only constants, the entry point's
local_invocation_id / local_invocation_index, `let`s of them (+ - * / % and min, max) and
`for (var i = C; i < C; i++)` counters: nothing flows in through a function's parameters or a
private variable. The tiled products and the tiled attention write their K steps and staging
stores out in main for that (H200 through Dawn: BERT-128 1.463 -> 1.402 ms back to back,
docs/performance.md), and the row kernels their reductions (rows.workgroup_reduce). Here every
index into those kernels' workgroup arrays in main is checked as the analysis would see it: made
only of such terms, and in bounds for every invocation of the workgroup (evaluated for each, and
each value of the loop counters it uses), so a change that moves one behind a parameter fails."""

import re
from itertools import product

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from support import assert_matches

ARRAY = re.compile(r"var<workgroup>(\w+):array<[^,]+,(\d+)>;")
LET = re.compile(r"let (\w+)=([^;]+);")
COUNTER = re.compile(r"for\(var (\w+)=(\d+)u;\1<(\d+)u;\1\+\+\)")
INDEX = re.compile(r"(\w+)\[([^\]]+)\]")
NAME = re.compile(r"(?<![\w.])[A-Za-z_][\w.]*")  # not the u of 8u


def provable_indices(code: str, arrays: set[str]) -> int:
    """Check every index into `arrays` in main (reads and writes) as Tint's range analysis would;
    return how many there are."""
    sizes = {name: int(n) for name, n in ARRAY.findall(code.replace(" ", ""))}
    main = code[code.index("fn main("):]
    size = [int(n) for n in re.search(r"@workgroup_size\((\d+)(?:,(\d+))?(?:,(\d+))?\)", code.replace(" ", "")).groups(default="1")]
    invocations = [{"li": li, "lid.x": li % size[0], "lid.y": li // size[0] % size[1], "lid.z": li // (size[0] * size[1])}
                   for li in range(size[0] * size[1] * size[2])]
    # lets the analysis can range, by name, each written out in builtins, counters and literals
    # when it is declared (so a later let of the same name, in an inner scope, leaves it as it was)
    known: dict[str, str] = {}
    counters: dict[str, range] = {}  # constant-bound loop counters, by name
    builtins = {"li", "lid.x", "lid.y", "lid.z"}
    indices = 0
    for line in (line.strip() for line in main.splitlines()):  # shipped code: a space only between words
        for name, first, end in COUNTER.findall(line):
            counters[name] = range(int(first), int(end))
        for array, index in INDEX.findall(line):
            if array not in arrays:
                continue
            names = set(NAME.findall(index)) - builtins
            assert names <= set(known) | set(counters), f"{line}: {sorted(names - set(known) - set(counters))} carry no range (a parameter or a var)"
            index = written_out(index, known)
            used = [name for name in counters if name in NAME.findall(index)]
            loops = [dict(zip(used, values)) for values in product(*(counters[name] for name in used))]
            top = max(evaluate(index, scope | loop) for scope in invocations for loop in loops)
            assert top < sizes[array], f"{line}: index up to {top} of {sizes[array]}"
            indices += 1
        let = LET.fullmatch(line)
        if let:
            name, value = let.groups()
            if set(NAME.findall(value)) <= set(known) | set(counters) | builtins and not re.search(r"[a-z]\(", value):
                known[name] = written_out(value, known)
            else:
                known.pop(name, None)
    return indices


def written_out(expr: str, known: dict[str, str]) -> str:
    """expr with each known let replaced by its value."""
    return NAME.sub(lambda m: f"({known[m.group(0)]})" if m.group(0) in known else m.group(0), expr)


def evaluate(expr: str, scope: dict[str, int]) -> int:
    """A u32 expression of literals, builtins and counters, for one invocation."""
    python = re.sub(r"\b(\d+)u\b", r"\1", expr).replace("/", "//")
    return eval(NAME.sub(lambda m: str(scope[m.group(0)]), python))


@pytest.mark.parametrize("shape", [(1, 128, 768), (1, 197, 768)])
def test_sliced_product_indices(shape):
    """A sliced linear layer (BERT's and ViT's rows): 2 groups, kk = lid.z * 8 + c."""
    module = nn.Linear(768, 80)
    compiled = assert_matches(module, torch.randn(shape), device="gpu")
    code = next(k["code"] for k in compiled.program["kernels"] if k["name"] == "matmul")
    # 16 k a step over 2 groups: 8 terms of 3 reads a thread (A's 8 rows as 2 vec4s, B's 4 columns);
    # the staging's stores (A's vec4 as 4 elements, B's vec4); the groups' sums through `partial`
    assert provable_indices(code, {"tile_a", "tile_b"}) == 8 * 3 + 4 + 1
    assert provable_indices(code, {"partial"}) > 0


def test_convolution_indices():
    """An implicit-GEMM convolution on the 16 x 16 tiled kernel (no K groups: kk a constant)."""
    module = nn.Conv2d(24, 40, 3, padding=1)
    compiled = assert_matches(module, torch.randn(1, 24, 30, 29), device="gpu")
    code = next(k["code"] for k in compiled.program["kernels"] if k["name"] == "conv2d")
    assert provable_indices(code, {"tile_a", "tile_b"}) > 0


class Attention(nn.Module):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v)


@pytest.mark.parametrize("heads, length", [(2, 100), (32, 64)])
def test_attention_indices(heads, length):
    """The tiled attention with its keys split in two inside the workgroup (2 heads of 100: too few
    workgroups otherwise, tiled_splits) and not (32 heads of 64): 16 terms of 2 reads in each of its
    two products."""
    q, k, v = (torch.randn(1, heads, length, 64) for _ in range(3))
    compiled = assert_matches(Attention(), q, k, v, device="gpu")
    code = next(k["code"] for k in compiled.program["kernels"] if k["name"] == "attention")
    assert provable_indices(code, {"ta", "tb"}) >= 2 * 16 * 2  # and the staging stores, the merge's reads


def workgroup_arrays(code: str) -> set[str]:
    return {name for name, _ in ARRAY.findall(code.replace(" ", ""))}


class Rows(nn.Module):
    """A layer norm and a softmax over rows of 300 (two rounds of 256 threads, the second partial)."""

    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(300)

    def forward(self, x):
        return self.norm(x).softmax(-1) + x.amax(-1, keepdim=True)


def test_row_reductions():
    """rows.py's workgroup_reduce, written out in main: the norm's two sums, softmax's max and sum
    and a max, each a store, 16 parts of 16 values and a gather of 16 (H200 through Dawn: without
    robustness BERT-128's norms took 122 -> 103 us)."""
    compiled = assert_matches(Rows(), torch.randn(3, 300), device="gpu")
    kernels = [k for k in compiled.program["kernels"] if workgroup_arrays(k["code"])]
    assert {k["name"] for k in kernels} >= {"normalize", "softmax", "reduce_max"}
    for k in kernels:
        assert provable_indices(k["code"], workgroup_arrays(k["code"])) > 0, k["name"]


def test_depthwise_norm_sums():
    """ConvNeXt's depthwise convolution and norm in one kernel: its two sums over a pixel's channels,
    in interleaved groups (`slot`), for NCHW input and channels-last."""
    from test_depthwise_norm import CASES

    for case in ("convnext", "channels_last_input", "widest"):
        block, shape, _, _ = CASES[case]
        compiled = assert_matches(block(), torch.randn(shape), device="gpu")
        code = next(k["code"] for k in compiled.program["kernels"] if k["name"] == "depthwise_norm")
        assert provable_indices(code, workgroup_arrays(code)) > 0, case


@pytest.mark.parametrize("rows, cols", [(1, 500), (300, 2)])
def test_thin_product_sums(rows, cols):
    """The thin product's sums of its threads' K slices: a single row against 500 columns (threads
    along the columns), and 300 rows against 2 columns (along the rows)."""
    compiled = assert_matches(nn.Linear(300, cols, bias=False), torch.randn(rows, 300), device="gpu")
    code = next(k["code"] for k in compiled.program["kernels"] if "gemm_sum_scratch" in k["code"])
    assert provable_indices(code, workgroup_arrays(code)) > 0
