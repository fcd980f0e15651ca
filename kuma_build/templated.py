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

Kernels that are one shape only once their unrolled runs are collapsed (repeated: U-Net's
group norms of 6 and 12 registers a thread) are one group too: their template is that collapsed
text, where a run's count and steps are holes like any integer, and so are the integers ending a
name (the register past a run, g12) and whole floats (the row's length, 3168.0); expanded unrolls
it again. U-Net's two such norms as one template: 0.1 kB less of its GPU page. The runs (repeated,
unrepeated) are here for that, below; a class module writes them in its other texts too.
"""

import functools
import re
from collections import defaultdict

INTEGER = re.compile(r"(?<![\w.])(?<![eE][+-])(?:0|[1-9]\d*)(?![\d.eE])")
HOLE = re.compile(r"\$(\d+)")
# in kernels one shape only once their runs are collapsed, integers ending a name (a register past
# the run, g12) and whole floats (3168.0) too: they count the rows' unrolled positions
RUN_INTEGER = re.compile(r"(?<![\d.])(?<![eE][+-])(?:0|[1-9]\d*)(?![\deE])(?!\.(?!0(?![\deE])))")


def templated(kernels: list[dict], cost) -> tuple[list[str], list[dict]]:
    """(templates, kernels with a templated code as [template, values...]): every group of kernels of
    one shape, less each group (in order) whose leaving out, or splitting into its groups as written,
    lowers cost(templates, kernels) (a module's gzip size), or none where that costs less. A group
    alone can cost more than it saves (its first kernel's text no longer where gzip refers back to
    it) and pay with the others."""
    kept = shapes(kernels)
    if not kept:
        return [], kernels
    best = cost(*with_templates(kernels, kept))
    for members in list(kept):
        others = [group for group in kept if group is not members]
        for trial in (others, others + as_written(kernels, members)):
            if (size := cost(*with_templates(kernels, trial))) < best:
                kept, best = trial, size
    return with_templates(kernels, kept if best < cost([], kernels) else [])


def as_written(kernels: list[dict], members: list[int]) -> list[list[int]]:
    """The groups of two or more of the members whose code is one shape as written (without runs)."""
    groups = defaultdict(list)
    for i in members:
        groups[INTEGER.sub("#", kernels[i]["code"])].append(i)
    return [group for group in groups.values() if len(group) > 1 and len(group) < len(members)]


def shapes(kernels: list[dict]) -> list[list[int]]:
    """The indices of the kernels whose code is the same text but for its integers, two or more: as
    written, or once their unrolled runs are collapsed (runs_of), which joins kernels of one shape
    whose unrolled lengths differ (U-Net's group norms of 6 and 12 registers a thread)."""
    groups = defaultdict(list)
    for i, kernel in enumerate(kernels):
        code = kernel["code"]
        if not any(mark in code for mark in ("$", "`", "\\")) and all(int(n) < 2 ** 53 for n in INTEGER.findall(code)):
            groups[INTEGER.sub("#", code)].append(i)
    joined = defaultdict(list)  # the groups as written (each one kernel or more) by their runs' shape
    for members in groups.values():
        runs = {RUN_INTEGER.sub("#", runs_of(kernels[i]["code"])) for i in members}
        joined[runs.pop() if len(runs) == 1 else ("as written", members[0])].append(members)
    return [sum(parts, []) for parts in joined.values() if sum(map(len, parts)) > 1]


def runs_of(code: str) -> str:
    """code with its runs of unrolled lines as ${R(...)} (repeated), where they read back."""
    runs = repeated(code)
    return runs if unrepeated(runs) == code else code


def with_templates(kernels: list[dict], groups: list[list[int]]) -> tuple[list[str], list[dict]]:
    templates, shipped = [], [dict(k) for k in kernels]
    for members in groups:
        codes, integer = [kernels[i]["code"] for i in members], INTEGER
        if len({INTEGER.sub("#", code) for code in codes}) > 1:  # one shape only with their runs collapsed
            codes, integer = [runs_of(code) for code in codes], RUN_INTEGER
        numbers = [integer.findall(code) for code in codes]
        holes = {}  # the values of one integer in each kernel of the group -> its hole
        texts = integer.split(codes[0])
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
        return code if isinstance(code, str) else unrepeated(HOLE.sub(lambda m: str(code[int(m.group(1))]), templates[code[0]]))
    return [{**k, "code": text(k["code"])} for k in kernels]


# Runs of lines that differ only in integers (and vector components .x ... .w, as 0 ... 3), each
# a + b*i + c*j for line j*p + i (a kernel's unrolled steps: d(0u,n); ... d(15u,n);, a register
# tile's acc0=fma(...,w0,acc0); ... for 4 registers times 16 steps, o0*=f.x; ... o3*=f.w;) as one
# line a JS helper repeats: ${R(16,i=>`d(${i}u,n);`)}, ${R(16,j=>R(4,i=>`...`))}, ${"xyzw"[i]}; and
# runs of blocks of up to MAX_BLOCK lines the same way, whose lines may have no integer (a group
# norm's unrolled {\nlet x=g0;\nb=b+x;\n} ... for 12 registers: ${R(12,i=>`{\nlet x=g${i};...}`)}). A
# run costs gzip a few bytes a line, the helper 0.05 kB once, so a module uses them only where its
# gzip size shrinks (class_module_js). A line with a `$` (a template's hole) is never in a run,
# nor a binding's declaration (@group(0)@binding(0)var...: every kernel opens with them, and gzip
# refers back to them from kernel to kernel; 0.005-0.015 kB a module), and every run reads back as
# the lines it was. Runs of blocks may be of 2 blocks, where the module's gzip shrinks more so.
REPEAT_HELPER = 'R=(n,f)=>[...Array(n).keys()].map(f).join("\\n")'
REPEAT = re.compile(r"\$\{R\((\d+),(?:j=>R\((\d+),i=>`([^`]*)`\)\)|i=>`([^`]*)`\))\}")
STEP = re.compile(r"\$\{(\"xyzw\"\[)?([0-9ij*+]+)\]?\}")
DIGITS = re.compile(r"\d+|(?<=\.)[xyzw](?!\w)")  # an integer, or a vector's component as its index
SWIZZLE = "xyzw"
MIN_RUN = 3
MAX_BLOCK = 32  # lines; U-Net's group norms repeat blocks of 4, 8 and 12 lines


@functools.lru_cache(maxsize=4096)  # render_class_js renders a module once for each group of templates it weighs
def repeated(text: str, blocks: int = MIN_RUN) -> str:
    """A template literal's text with its runs as ${R(...)} (unrepeated reads them back): at each
    line the run of lines, or of `blocks` or more blocks, that covers the most lines."""
    lines, out, start = text.split("\n"), [], 0
    shape = [None if "$" in line or line.startswith("@group") else DIGITS.sub("#", line) for line in lines]
    while start < len(lines):
        end = start + 1
        while end < len(lines) and shape[start] is not None and DIGITS.search(lines[start]) and shape[end] == shape[start]:
            end += 1
        best = repeat_line(lines[start:end])
        for period in range(2, MAX_BLOCK + 1):
            best = max(best, repeat_block(lines, shape, start, period, blocks), key=lambda covered: covered[0])
        out.append(best[1] or lines[start])
        start += best[0]
    return "\n".join(out)


def repeat_block(lines: list[str], shape: list, start: int, period: int, least: int) -> tuple[int, str | None]:
    """(how many lines, ${R(...)}) for the longest run of `least` or more blocks of `period` lines at
    `start` (each block one line to repeat_line), or (1, None)."""
    first = shape[start:start + period]
    if len(first) < period or None in first or not any(DIGITS.search(line) for line in lines[start:start + period]):
        return 1, None
    blocks = 1
    while shape[start + blocks * period:start + (blocks + 1) * period] == first:
        blocks += 1
    count, run = repeat_line(["\n".join(lines[start + b * period:start + (b + 1) * period]) for b in range(blocks)], least)
    return (count * period, run) if run else (1, None)


def repeat_line(lines: list[str], least: int = MIN_RUN) -> tuple[int, str | None]:
    """(how many lines, ${R(...)}) for the longest run of `least` or more that begins the lines, or (1, None)."""
    if len(lines) < least:
        return 1, None
    numbers = [[SWIZZLE.index(n) if n in SWIZZLE else int(n) for n in DIGITS.findall(line)] for line in lines]
    swizzles = [n in SWIZZLE for n in DIGITS.findall(lines[0])]
    best = (1, None)
    for period in [len(lines), *range(2, len(lines) // 2 + 1)]:
        start, step = numbers[0], [b - a for a, b in zip(numbers[0], numbers[1])]
        outer = [b - a for a, b in zip(numbers[0], numbers[period])] if period < len(lines) else [0] * len(start)
        count = 0
        while count < len(lines) and numbers[count] == [a + b * (count % period) + c * (count // period) for a, b, c in zip(start, step, outer)]:
            count += 1
        count -= count % period if period < len(lines) else 0
        if count >= max(least, best[0] + 1, 2 * period if period < len(lines) else 0) and min(step + outer) >= 0 \
                and max(max(row) for row in numbers[:count]) < 2 ** 31:
            pieces = DIGITS.split(lines[0])
            line = pieces[0] + "".join(step_js(a, b, c, swizzle) + piece for a, b, c, swizzle, piece in zip(start, step, outer, swizzles, pieces[1:]))
            run = f"${{R({count // period},j=>R({period},i=>`{line}`))}}" if period < len(lines) else f"${{R({count},i=>`{line}`)}}"
            if unrepeated(run) == "\n".join(lines[:count]):  # leading zeros (07) are not read back
                best = (count, run)
    return best


def step_js(a: int, b: int, c: int, swizzle: bool) -> str:
    if not b and not c:
        return SWIZZLE[a] if swizzle else str(a)
    terms = "+".join([str(a)] * bool(a) + [("" if b == 1 else f"{b}*") + "i"] * bool(b) + [("" if c == 1 else f"{c}*") + "j"] * bool(c))
    return f'${{"{SWIZZLE}"[{terms}]}}' if swizzle else f"${{{terms}}}"


def unrepeated(text: str) -> str:
    def value(expression, i, j):
        return str(sum(int(n or 1) * {"i": i, "j": j, "": 1}[v] for n, _, v in re.findall(r"(\d*)(\*?)([ij]?)", expression) if n or v))

    def run(match):
        outer, inner = (int(match.group(1)), int(match.group(2))) if match.group(2) else (1, int(match.group(1)))
        line = match.group(3) if match.group(2) else match.group(4)
        def step(m, i, j):
            n = int(value(m.group(2), i, j))
            return SWIZZLE[n] if m.group(1) else str(n)
        return "\n".join(STEP.sub(lambda m: step(m, i, j), line) for j in range(outer) for i in range(inner))
    return REPEAT.sub(run, text)
