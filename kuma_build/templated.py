"""Kernels that differ only in their integers shipped as one template and each kernel's numbers
(jsmodule.render_class_js): for a group of two or more kernels whose WGSL is the same text once every
integer is left out, a template holds that text with a hole `$1`, `$2` ... for each integer that
differs between them (integers whose values are equal in every kernel of the group share a hole),
and each such kernel's code is [template, value of $1, value of $2, ...]. A class module writes a
template as a JS function of its holes and the kernel's code as a call (outfolder.class_module_js),
so importing the module gives each kernel exactly the text it was built with, and the runtime has
no code for it. ResNet's, MobileNet's and U-Net's convolutions and split sums come in a few shapes;
gzip refers back to the repeated text of each at 3 bytes or so a piece, 30-50 bytes a kernel, where
the numbers alone take 5-15 (docs/benchmarks.md, Code per device class).

Only a kernel's "code" is templated; its subgroup-matrix variant ("f16m") ships as text. An integer is a run
of digits not inside a name (a6), a float (6.0, 1e-5) or a leading-zero number, below 2**53 (so a
JS number prints it back the same); a text with a `$`, a backtick or a backslash (WGSL has none)
is left alone.
"""

import re
from collections import defaultdict

INTEGER = re.compile(r"(?<![\w.])(?<![eE][+-])(?:0|[1-9]\d*)(?![\d.eE])")
HOLE = re.compile(r"\$(\d+)")


def templated(kernels: list[dict], cost) -> tuple[list[str], list[dict]]:
    """(templates, kernels with a templated code as [template, values...]): every group of kernels of
    one shape, less each group (in order) whose leaving out lowers cost(templates, kernels) (a
    module's gzip size), or none where that costs less. A group alone can cost more than it saves
    (its first kernel's text no longer where gzip refers back to it) and pay with the others."""
    kept = shapes(kernels)
    if not kept:
        return [], kernels
    best = cost(*with_templates(kernels, kept))
    for members in list(kept):
        trial = [group for group in kept if group is not members]
        if (size := cost(*with_templates(kernels, trial))) < best:
            kept, best = trial, size
    return with_templates(kernels, kept if best < cost([], kernels) else [])


def shapes(kernels: list[dict]) -> list[list[int]]:
    """The indices of the kernels whose code is the same text but for its integers, two or more."""
    groups = defaultdict(list)
    for i, kernel in enumerate(kernels):
        code = kernel["code"]
        if not any(mark in code for mark in ("$", "`", "\\")) and all(int(n) < 2 ** 53 for n in INTEGER.findall(code)):
            groups[INTEGER.sub("#", code)].append(i)
    return [members for members in groups.values() if len(members) > 1]


def with_templates(kernels: list[dict], groups: list[list[int]]) -> tuple[list[str], list[dict]]:
    templates, shipped = [], [dict(k) for k in kernels]
    for members in groups:
        numbers = [INTEGER.findall(kernels[i]["code"]) for i in members]
        holes = {}  # the values of one integer in each kernel of the group -> its hole
        texts = INTEGER.split(kernels[members[0]]["code"])
        template = texts[0]
        for at, text in enumerate(texts[1:]):
            values = tuple(n[at] for n in numbers)
            template += (values[0] if len(set(values)) == 1 else f"${holes.setdefault(values, len(holes) + 1)}") + text
        for k, i in enumerate(members):
            shipped[i]["code"] = [len(templates), *(int(values[k]) for values in holes)]
        templates.append(template)
    return templates, shipped


def expanded(templates: list[str], kernels: list[dict]) -> list[dict]:
    """The kernels with their texts filled in, as runtime.js's loadModel fills them."""
    def text(code):
        return code if isinstance(code, str) else HOLE.sub(lambda m: str(code[int(m.group(1))]), templates[code[0]])
    return [{**k, "code": text(k["code"])} for k in kernels]
