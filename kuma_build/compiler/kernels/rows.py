"""Row kernels: reductions, softmax and layer/group norm, one workgroup per row.

The importer permutes each input view so the reduced dims come last: the kept
dims flattened are the row, the reduced dims flattened are the position in
the row. Threads stride through their row (reading through the view's
strides) and combine their partial results with one shared workgroup
reduction in two levels (workgroup_reduce, written out in main). Softmax and norms make several
passes over the row (max or mean first) for accuracy, and write a contiguous
output in the permuted order.

A row of static length at most ROW_REGISTERS a thread is read from memory
once: each thread loads its positions into named scalars (x_0, x_1, ...:
the passes are unrolled, since drivers keep run-time-indexed private arrays
in slow local memory, kernels/gemm.py) and every pass reads those. Such a
kernel reads each element once, so a split-K product's sum it reads in
place (kernels/elementwise.py: fold_sums) adds each element's slices once,
and passes/split_k.py folds longer sums into it (row_reads). Rows of a
dynamic length, or longer, loop through memory in each pass, a thread's
loads of LOOP_LOADS rounds issued together (RowKernel.rounds). A norm that
folds a sum other kernels read too also stores the sum it computed after its
own output (attrs["input_copy"]), for them to read.

On the "cpu" device class (DeviceClass.thread_rows) a thread takes a whole row
instead, when there are rows enough for the cores' SIMD lanes: SwiftShader
runs a workgroup's threads a few SIMD lanes at a time and switches between
them at every barrier, which made a 96-long layer norm cost ~85 us a row.
"""

from math import gcd, prod

from kuma_build.compiler.ir.graph import WGSL_TYPE, Value
from kuma_build.compiler.ir.sizes import Sym, max_value, wgsl as u32
from kuma_build.compiler.kernels.elementwise import epilogue, fold_sums
from kuma_build.compiler.kernels.wgsl import Bindings, block, f32, f32_size, indent, needed, offset_expr, threads, unravel, workgroup_rows

# kind -> (combine template, identity per WGSL type)
COMBINES = {
    "sum": ("{a} + {b}", {"f32": "0.0", "i32": "0i", "u32": "0u"}),
    "prod": ("{a} * {b}", {"f32": "1.0", "i32": "1i", "u32": "1u"}),
    "max": ("max({a}, {b})", {"f32": f32(float("-inf")), "i32": "(-2147483647i - 1i)", "u32": "0u"}),
    "min": ("min({a}, {b})", {"f32": f32(float("inf")), "i32": "2147483647i", "u32": "0xffffffffu"}),
}

# reduce op -> (combine kind, value of one element x, result from the row's total t); n is the row length
REDUCTIONS = {
    "sum": ("sum", "x", "t"), "mean": ("sum", "x", "t / {n}"), "prod": ("prod", "x", "t"),
    "max": ("max", "x", "t"), "min": ("min", "x", "t"), "any": ("max", "i32(x != {zero})", "t"),
    "norm1": ("sum", "abs(x)", "t"), "norm2": ("sum", "x * x", "sqrt(t)"), "norm_inf": ("max", "abs(x)", "t"),
}
MIN_THREAD_ROWS = 8  # fewer rows than SIMD lanes on two cores: a workgroup per row even on "cpu"
# values of its row a thread keeps in registers at most: 16 covers hidden sizes up to 4096 at 256
# threads (BERT's and GPT-2's 768 take 3) and a thread per row of up to 16 ("cpu"); 16 floats with
# their index arithmetic stay far below a GPU thread's 255 registers, and the unrolled passes stay short
ROW_REGISTERS = 16
PASSES = 3  # the passes softmax and the norms make over a row that is not in registers
LOOP_LOADS = 8  # rounds of a workgroup whose loads a thread issues together in a row that is not in registers


def thread_row_size(rows: int) -> int:
    """Workgroup size for a thread per row: at least 4 workgroups (two per core), at most 64 threads each."""
    return min(64, max(4, 1 << (max_value(rows) // 4).bit_length() - 1))


def workgroup_scratch(name: str, wgsl_type: str, size: int, lanes: int = 1) -> str:
    """The workgroup arrays workgroup_reduce(name, ...) combines its values in."""
    if size // lanes <= 1:
        return ""
    parts, _ = reduce_parts(size, lanes)
    return (f"var<workgroup> {name}_scratch: array<{wgsl_type}, {size}>;\n"
            f"var<workgroup> {name}_parts: array<{wgsl_type}, {parts * lanes}>;")


def reduce_parts(size: int, lanes: int) -> tuple[int, int]:
    """(parts a group's values are first combined into, values each part combines): about the
    square root of the values, a power of two that divides them (16 parts of 16 of 256)."""
    members = size // lanes
    parts = gcd(members, 1 << ((members - 1).bit_length() + 1) // 2)
    return parts, members // parts


def workgroup_reduce(name: str, kind: str, wgsl_type: str, size: int, lanes: int, result: str, value: str, slot: str) -> list[str]:
    """Lines of main combining one `value` per thread into `result` (a var): every thread gets the total.

    Each thread passes a distinct `slot` in 0..size-1 (usually its own index li), in the
    workgroup arrays workgroup_scratch(name, ...) declares. With lanes > 1 the slots are `lanes`
    interleaved groups (slot % lanes) and each thread gets its own group's total. The lines have
    barriers, so they must be in uniform control flow.

    Two levels rather than a tree: after the values meet in workgroup memory, `parts` threads a
    group each combine every parts-th of its values (about the square root of them) into one part,
    and then every thread combines its group's parts, read by all at once. Two barriers a call
    where the tree took one a level (log2 of the values, 8 at 256 threads) and one more before
    the next call: a norm's two reductions took about 2 us of its 5-6 (H200 through Dawn), and
    with two levels the norms' dispatches each in a pass of their own took 2-7% less in every
    model measured, the GPU time back to back 0.5-1.7% less but ViT-B/16's, 0.7% more
    (docs/performance.md, 2026-12-01). A next call may write the values at once: their last reads
    are behind the second barrier, and the parts' last reads behind the next call's first.
    Subgroup reductions (subgroupAdd, then one barrier and the subgroups' parts combined by a
    loop or a second subgroupAdd) measured no faster on the H200 through Dawn: BERT-128's norms
    0.3 us slower each, BERT-512 within noise (docs/performance.md, 2026-12-02), so no variant
    asks for the `subgroups` feature.

    Lines in main rather than a function, and every index built from `slot` by + * / and % of
    constants: Dawn's robustness then leaves the workgroup reads unclamped, as its range analysis
    proves them in bounds (it sees nothing through a function's parameters; gemm.py's tiled).
    So `slot` must be such an expression of li, or a let of one.
    """
    combine = lambda a, b: COMBINES[kind][0].format(a=a, b=b)
    if size // lanes <= 1:
        return [f"let {result} = {value};"]
    parts, each = reduce_parts(size, lanes)
    stride = parts * lanes

    def pairwise(prefix: str, values: list[str]) -> tuple[list[str], str]:
        """Lines combining the values in pairs, then pairs of pairs, ...: the rounding error grows
        with the log of their count, as in a tree (a mean of many values that nearly cancel needs it)."""
        lines, level = [], 0
        while len(values) > 1:
            pairs = [combine(values[i], values[i + 1]) for i in range(0, len(values) - 1, 2)]
            lines += [f"let {prefix}{level}_{i} = {pair};" for i, pair in enumerate(pairs)]
            values = [f"{prefix}{level}_{i}" for i in range(len(pairs))] + values[len(pairs) * 2:]
            level += 1
        return lines, values[0]

    # `part` is slot where the threads that combine a part run; % tells the range analysis so
    level, part = pairwise("a", [f"{name}_scratch[part + {m * stride}u]" for m in range(each)])
    gather, total = pairwise("b", [f"{name}_parts[{p * lanes}u + lane]" if lanes > 1 else f"{name}_parts[{p}u]" for p in range(parts)])
    # in a block of its own, its names the same in every call: a kernel's second call then costs
    # a few bytes of gzip, not a second copy of the lines (kernel code ships in the page)
    return [f"var {result}: {wgsl_type};", *block("", [
        f"{name}_scratch[{slot}] = {value};", "workgroupBarrier();",
        *block(f"if ({slot} < {stride}u)", [f"let part = ({slot}) % {stride}u;", *level, f"{name}_parts[part] = {part};"]),
        "workgroupBarrier();", *([f"let lane = ({slot}) % {lanes}u;"] if lanes > 1 else []), *gather, f"{result} = {total};"])]


def row_layout(rows, length, device) -> tuple[bool, int, int]:
    """(whether a workgroup shares each row, else a thread takes one; threads a workgroup; values of
    its row a thread keeps in registers, 0 when it loops through memory in each pass), tuned for the
    sizes at their max: the code is right at every value."""
    shared = not device.thread_rows or max_value(rows) < MIN_THREAD_ROWS
    size = min(device.workgroup_threads, max(32, 1 << (max_value(length) - 1).bit_length())) if shared else thread_row_size(rows)
    step = size if shared else 1  # positions a round of the workgroup covers
    registers = -(-length // step) if isinstance(length, int) and length <= ROW_REGISTERS * step else 0
    return shared, size, registers


def row_reads(node, reduced: int, device) -> int:
    """How many times softmax or a norm reads each element of its input, whose last `reduced` dims
    are the row: once from registers, else once a pass (their records' fold_sums in ops.py, by
    which passes/split_k.py decides how long a split-K sum they may read in place)."""
    shape = node.inputs[0].shape
    registers = row_layout(prod(shape[:len(shape) - reduced]), prod(shape[len(shape) - reduced:]), device)[2]
    return 1 if registers else PASSES


class RowKernel:
    """Layout of a row kernel for a node whose first input ends in `reduced` row dims."""

    def __init__(self, node, reduced: int, device, x_type: str | None = None):
        self.b = Bindings(node)
        folded = fold_sums(node, self.b)  # a split-K product's sum read in place (passes/split_k.py)
        shape = node.inputs[0].shape
        kept_shape, row_shape = shape[:len(shape) - reduced], shape[len(shape) - reduced:]
        self.rows, self.length = prod(kept_shape), prod(row_shape)
        self.shared, self.size, self.registers = row_layout(self.rows, self.length, device)
        if self.shared:  # threads split the row; the loops start at li and stride by the workgroup
            self.header, self.workgroups = workgroup_rows(self.rows, self.size)
        else:
            self.header, self.workgroups = threads(self.rows, self.size)
            self.header += "  let row = gid;\n"
        self.row_lines, self.row_index = unravel("row", kept_shape, "r")
        self.pos_lines, pos_index = unravel("pos", row_shape, "p")
        self.index = self.row_index + pos_index
        self.x_type = WGSL_TYPE[x_type or node.inputs[0].dtype]
        load = self.load(0)
        self.x = load if self.x_type == WGSL_TYPE[node.inputs[0].dtype] else f"{self.x_type}({load})"
        self.functions: dict[str, str] = {"sums": folded} if folded else {}

    def load(self, k: int) -> str:
        """Input k at this thread's row and position (inputs share the first one's shape): at `pos`
        where the row's dims lie in one run (row_view), else at its unravelled indices p0, p1, ..."""
        view = self.row_view(self.b.inputs[k])
        return self.b.load(k, self.row_index + ["pos"], view) if view else self.b.load(k, self.index)

    def row_view(self, v: Value) -> Value | None:
        """v with its row dims as one dim of the row's length, where each (of more than one) steps
        over the next's whole extent (a group norm's channels and pixels of an NCHW tensor): the
        position's offset is then pos times the last one's stride. None where they do not (a
        broadcast weight, a permuted view) or a size is a dim's."""
        kept = len(self.row_index)
        dims = [(size, stride) for size, stride in zip(v.shape[kept:], v.strides[kept:]) if size != 1]
        if len(dims) < 2 or not all(isinstance(x, int) for dim in dims for x in dim) or dims[-1][1] == 0:
            return None
        if any(stride != inner_stride * inner for (_, stride), (inner, inner_stride) in zip(dims, dims[1:])):
            return None
        return Value(v.buffer, (*v.shape[:kept], self.length), (*v.strides[:kept], dims[-1][1]), v.offset)

    def loop(self, body: list[str]) -> list[str]:
        """Lines running body for each of this thread's positions, with x the element there."""
        if self.registers:
            return [line for i in range(self.registers) for line in self.at(i, [f"let x = x_{i};"] + body)]
        if self.shared:
            return self.rounds(body)
        inner = [f"let x = {self.x};"] + body
        return block(f"for (var pos = 0u; pos < {u32(self.length)}; pos += 1u)", needed(self.pos_lines, inner) + inner)

    def rounds(self, body: list[str]) -> list[str]:
        """A shared row through memory, LOOP_LOADS rounds of the workgroup an iteration: each thread
        issues its loads of the rounds first, then runs body on each, so their latencies overlap
        (one load in flight at a time left a decode step's argmax over a 151,936-token vocabulary
        at 325 us on the H200)."""
        n, unroll = u32(self.length), min(LOOP_LOADS, -(-max_value(self.length) // self.size))
        # the first round as round + 0u (its check the loop's own): all rounds then repeat as one
        # run (templated.repeated), 0.08 kB less of U-Net's page than the first written apart
        at = [f"round + {i * self.size}u" for i in range(unroll)]
        inside = [f"if ({pos} < {n})" for pos in at]
        loads = [line for i in range(unroll) for line in
                 [f"var x_{i}: {self.x_type};", *block(inside[i], self.at_pos(at[i], [f"x_{i} = {self.x};"]))]]
        runs = [line for i in range(unroll) for line in block(inside[i], self.at_pos(at[i], [f"let x = x_{i};", *body]))]
        return block(f"for (var round = li; round < {n}; round += {unroll * self.size}u)", loads + runs)

    def at(self, i: int, body: list[str]) -> list[str]:
        """Lines running body at this thread's i-th position of a row in registers, if the row has it."""
        step = self.size if self.shared else 1
        # li + 0u where 3 or more rounds are unrolled: the first then repeats as the others (templated.repeated)
        first = (f"li + {i * step}u" if i or self.registers >= 3 else "li") if self.shared else f"{i}u"
        inside = "" if (i + 1) * step <= self.length else f"if (li < {self.length - i * step}u)"  # the last, partial round
        return block(inside, self.at_pos(first, body))

    def at_pos(self, pos: str, body: list[str]) -> list[str]:
        """body at position `pos` of the row, after the lets of pos and its indices that it reads
        (the statistics' passes read only x)."""
        return needed([f"let pos = {pos};", *self.pos_lines], body) + body

    def held(self) -> list[str]:
        """Lines loading a row in registers: x_i holds this thread's i-th position (zero past the row's end)."""
        lines = []
        for i in range(self.registers):
            lines += [f"var x_{i}: {self.x_type};", *self.at(i, [f"x_{i} = {self.x};"])]
        return lines

    def reduce(self, result: str, kind: str, wgsl_type: str, value: str) -> list[str]:
        """Lines combining `value` (an expression of x and pos) over the row into `let result`."""
        template, identity = COMBINES[kind][0], COMBINES[kind][1][wgsl_type]
        part = f"{result}_part"
        lines = [f"var {part} = {identity};"] + self.loop([f"{part} = {template.format(a=part, b=value)};"])
        if not self.shared:
            return lines + [f"let {result} = {part};"]
        name = f"row_{kind}_{wgsl_type}"
        self.functions[name] = workgroup_scratch(name, wgsl_type, self.size)
        return lines + workgroup_reduce(name, kind, wgsl_type, self.size, 1, result, part, "li")

    def once(self, line: str) -> str:
        """`line` run by one thread of the row."""
        return f"if (li == 0u) {{ {line} }}" if self.shared else line

    def kernel(self, name: str, lines: list[str]):
        lines = self.held() + lines
        body = self.header + indent(needed(self.row_lines, lines) + lines) + "\n}"
        return self.b.kernel(name, "\n\n".join(self.functions.values()) + "\n\n" + body, self.workgroups)


def mean_and_squares(k: RowKernel) -> list[str]:
    """Two passes: the row's mean, then the sum of squared deviations (no E[x^2] - E[x]^2 cancellation)."""
    return (k.reduce("total", "sum", "f32", "x") + [f"let mean = total / {f32_size(k.length)};"]
            + k.reduce("squares", "sum", "f32", "(x - mean) * (x - mean)"))


def lower_reduce(node, device):
    op, x, out = node.attrs["reduction"], node.inputs[0], node.output
    reduced = len(x.shape) - len(out.shape)
    if op in ("argmax", "argmin"):
        # the best value, then the first position holding it
        k = RowKernel(node, reduced, device)
        value_type = WGSL_TYPE[x.dtype]
        lines = (k.reduce("best", op[3:], value_type, "x")
                 + k.reduce("first", "min", "u32", "select(0xffffffffu, pos, x == best)"))
        result = "i32(first)"
    elif op == "var":
        k = RowKernel(node, reduced, device)
        lines = mean_and_squares(k)
        correction = node.attrs["correction"]
        divisor = f"({f32_size(k.length)} - {f32(correction)})" if isinstance(k.length, Sym) else f32(k.length - correction)
        result = f"squares / {divisor}"
    else:
        kind, value, finish = REDUCTIONS[op]
        k = RowKernel(node, reduced, device, x.dtype if op == "any" else out.dtype)
        zero = "0.0" if x.dtype == "f32" else "0i"
        compute_type = WGSL_TYPE[out.dtype]
        lines = k.reduce("t", kind, compute_type, value.format(zero=zero))
        result = finish.format(n=f32_size(k.length))
    lines.append(k.once(f"out[row] = {result};"))
    return k.kernel(f"reduce_{op}", lines)


def lower_softmax(node, device):
    k = RowKernel(node, 1, device)
    lines = k.reduce("top", "max", "f32", "x") + k.reduce("total", "sum", "f32", "exp(x - top)")
    result = "x - top - log(total)" if node.attrs["log"] else "exp(x - top) / total"
    lines += k.loop([f"out[row * {u32(k.length)} + pos] = {result};"])
    return k.kernel("log_softmax" if node.attrs["log"] else "softmax", lines)


def lower_normalize(node, device):
    """(x - mean) / sqrt(var + eps) * weight + bias; weight and bias come as views broadcast to x's shape.
    With attrs["rms"] (an RMSNorm: passes/fuse_rms_norm.py), x / sqrt(mean(x * x) + eps) * weight."""
    k = RowKernel(node, node.attrs["reduced"], device)
    if node.attrs.get("rms"):
        lines, result = k.reduce("squares", "sum", "f32", "x * x"), "x * rstd"
    else:
        lines, result = mean_and_squares(k), "(x - mean) * rstd"
    lines += [f"let rstd = inverseSqrt(squares / {f32_size(k.length)} + {f32(node.attrs['eps'])});"]
    affine = 1
    if node.attrs["has_weight"]:
        result, affine = f"{result} * {k.load(affine)}", affine + 1
    if node.attrs["has_bias"]:
        result = f"{result} + {k.load(affine)}"
    finish, stored = epilogue(node, k.b, "value", "flat")  # e.g. the activation after a group norm
    if finish.helpers:
        k.functions["epilogue"] = finish.functions()
    # a folded split-K sum whose other readers read it from here (passes/split_k.py): x stored after
    # the output where the split_sum node would have stored it
    copy = node.attrs.get("input_copy")
    kept = [f"out[{copy}u + {offset_expr(node.inputs[0], k.index)}] = x;"] if copy else []
    lines += k.loop([f"let flat = row * {u32(k.length)} + pos;", f"let value = {result};", *finish.lines, f"out[flat] = {stored};", *kept])
    return k.kernel("normalize", lines)
