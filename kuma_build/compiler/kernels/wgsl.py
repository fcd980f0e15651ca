"""Shared pieces of every generated kernel: bindings, strided loads, thread ids.

Shapes, strides and offsets are baked into the WGSL as constants, so a kernel
is specialised to its exact shapes and two layers of the same shape share one
kernel (the plan dedupes kernels by their source text). A size that depends on a
dim (a Sym, ir/sizes.py) is rendered as a u32 expression reading the `dims`
uniform, which such a kernel binds (before its output), and its workgroup
counts are {"size", "per"} entries the runtime evaluates (docs/design.md, Dimensions).
"""

import re
from dataclasses import dataclass
from math import ceil, prod

import numpy as np

from kuma_build.compiler import precision
from kuma_build.compiler.ir.graph import DIMS, WGSL_TYPE, Buffer, Node, Value
from kuma_build.compiler.ir.sizes import Sym, ceil_div_count, dims_of, max_value, wgsl as u32

MAX_WORKGROUPS_PER_DIM = 65535
DIMS_BINDING = "var<uniform> dims"


@dataclass
class Kernel:
    name: str
    code: str
    workgroups: tuple  # x, y, z: each an int, or {"size", "per"} (ceil(size / per) at the current dims)
    buffers: list[Buffer]  # binding i is buffers[i]; the output is last
    code_f16: str | None = None  # variant reading f16 weights natively (and gemm.py's f16 math), for shader-f16 devices
    # for a node dispatched more than once (products.py: a kernel for few rows of a dynamic product):
    # the dims' ranges {name: [low, high]} in which this dispatch runs (None: always), and the next dispatch
    when: dict | None = None
    then: "Kernel | None" = None
    # variant multiplying on subgroup matrices (tensor cores), for devices with shader-f16 and them (gemm_matrix.py)
    code_matrix: str | None = None
    # workgroup memory it takes where that is over WebGPU's default, which the program then asks the
    # device for (attention_matrix.py; emit.program_dict); else 0
    workgroup_bytes: int = 0

    def entry(self) -> dict:
        """What the kernel cache keeps of it (the buffers are the node's)."""
        entry = {"name": self.name, "code": self.code, "workgroups": list(self.workgroups), "code_f16": self.code_f16,
                 "code_matrix": self.code_matrix, "workgroup_bytes": self.workgroup_bytes}
        if self.when:
            entry.update(when=self.when, then=self.then and self.then.entry())
        return entry

    @classmethod
    def from_entry(cls, entry: dict, buffers: list[Buffer]) -> "Kernel":
        own = [buf for buf in buffers if buf is not DIMS or DIMS_BINDING in entry["code"]]  # as Bindings.kernel left them
        then = entry.get("then")
        return cls(entry["name"], entry["code"], tuple(entry["workgroups"]), own, entry.get("code_f16"), entry.get("when"),
                   then and cls.from_entry(then, buffers), entry.get("code_matrix"), entry.get("workgroup_bytes", 0))

    def chain(self) -> list["Kernel"]:
        """This kernel and the ones after it (Kernel.then): the node's dispatches, in order."""
        return [self] + (self.then.chain() if self.then else [])


def computed_inputs(node: Node) -> set[int]:
    """Inputs the kernel computes in place rather than reads (a scatter's values, a decode attention's
    queries: passes/fuse_elementwise.py, attrs["computed"]): their views give indices, their buffers are
    not bound."""
    return {0} if "computed" in node.attrs else set()


def binding_buffers(node: Node) -> list[Buffer]:
    """The buffers a node's kernel binds, in binding order: distinct inputs (not those it computes),
    the dims uniform when a size depends on a dim, then the output."""
    buffers: list[Buffer] = []
    computed = computed_inputs(node)
    for k, v in enumerate(node.inputs):
        if k not in computed and v.buffer not in buffers:
            buffers.append(v.buffer)
    if node_dims(node):
        buffers.append(DIMS)
    return buffers + [node.output.buffer]


def node_dims(node: Node) -> set:
    """The dims (ir/sizes.Dim) that the sizes, strides or offsets of a node's views depend on."""
    return dims_of(x for v in [*node.inputs, node.output] for x in (*v.shape, *v.strides, v.offset))


def dims_struct(dims) -> str:
    """The uniform's struct: a u32 field per dim up to the last one used, in the uniform's order,
    padded to 16 bytes (the fields of dims a kernel does not use keep their place)."""
    used = {d.index: d.name for d in dims}
    count = -(-(max(used) + 1) // 4) * 4
    fields = "\n".join(f"  {used.get(i, f'unused{i}')}: u32," for i in range(count))
    return f"struct Dims {{\n{fields}\n}}"


class Bindings:
    """Binding declarations for a node: one per distinct input buffer (one per page of a paged
    weight, passes/page_weights.py), then the output."""

    def __init__(self, node: Node):
        self.buffers = binding_buffers(node)
        # binding variable of each input ("" for one the kernel computes: it reads through self.sums)
        self.names = [f"in{self.buffers.index(v.buffer)}" if v.buffer in self.buffers else "" for v in node.inputs]
        self.inputs = node.inputs
        self.out = node.output
        self.dims = node_dims(node)
        self.vector = 1  # elements per array item: 4 declares array<vec4<f32>> (elementwise.py)
        self.vec4: set[int] = set()  # bindings of f32 inputs declared array<vec4<f32>> alone (load4: gemm.py's vec4 fetches)
        self.sums: dict[int, str] = {}  # input k -> the function reading it (a split-K product's folded sum: split_sum.py; a computed input: concat.py)

    def declare(self, native_f16: bool = False) -> str:
        """Binding declarations; f16/int8 weights also get a `weight_inK(i)` reader returning f32."""
        lines, readers, binding = [], [], 0
        for i, buf in enumerate(self.buffers[:-1]):
            if buf is DIMS:
                lines[:0] = [dims_struct(self.dims), ""]
                lines.append(f"@group(0) @binding({binding}) {DIMS_BINDING}: Dims;")
                binding += 1
                continue
            element = WGSL_TYPE[buf.dtype]
            if buf.storage != "f32":
                element, function = precision.reader(buf, f"in{i}", native_f16)
                readers.append(function)
            if buf.pages > 1:
                readers.append(page_reader(buf, f"in{i}"))
            item = "vec4<f32>" if i in self.vec4 else self._item(element)
            for name in page_names(buf, f"in{i}"):
                lines.append(f"@group(0) @binding({binding}) var<storage, read> {name}: array<{item}>;")
                binding += 1
        lines.append(f"@group(0) @binding({binding}) var<storage, read_write> out: array<{self._item(WGSL_TYPE[self.out.dtype])}>;")
        return "\n".join(lines) + "".join("\n\n" + reader for reader in readers)

    def _item(self, element: str) -> str:
        return element if self.vector == 1 else f"vec{self.vector}<{element}>"

    def load(self, k: int, index: list[str], view: Value | None = None) -> str:
        """WGSL that reads input k at the multi-index `index` (one expression per dim), as its IR dtype;
        `view`: the same elements as input k's view with other dims (rows.py: a row's dims as one)."""
        offset = offset_expr(view or self.inputs[k], index)
        if k in self.sums:
            return f"{self.sums[k]}({offset})"
        if self.inputs[k].buffer.blocked:  # a product's [K, N] weight (passes/matrix_blocks.py): index [batch, k, n]
            assert view is None and len(index) == 3
            return f"weight_{self.names[k]}({precision.block_position(index[1], index[2], self.inputs[k].buffer.blocked)})"
        if self.inputs[k].buffer.storage != "f32":
            return f"weight_{self.names[k]}({offset})"
        if self.inputs[k].buffer.pages > 1:
            return f"page_{self.names[k]}({offset})"
        if self.buffers.index(self.inputs[k].buffer) in self.vec4:
            return f"{self.names[k]}[({offset}) / 4u][({offset}) % 4u]"
        return f"{self.names[k]}[{offset}]"

    def pair(self, k: int, index: list[str]) -> str | None:
        """WGSL u32 holding input k's elements at `index` and the next one along its last dim, when
        they share a stored word (precision.pair_word; the caller knows the offset is even), else None."""
        return self.word(k, offset_expr(self.inputs[k], index))

    def word(self, k: int, offset: str) -> str | None:
        """WGSL u32: the stored word holding input k's flat element `offset`, when its elements are
        read by words (precision.pair_word), else None."""
        if k in self.sums:
            return None
        return precision.pair_word(self.inputs[k].buffer, self.names[k], offset)

    def can_load4(self, k: int) -> bool:
        """Whether input k may be declared array<vec4<f32>> (vec4_input): f32, in one page, not a
        folded sum, and a whole number of vec4s (each element then lies in a whole vec4 of the
        binding, since every buffer is its own GPU buffer of at least its size)."""
        buf = self.inputs[k].buffer
        return buf.storage == "f32" and buf.dtype == "f32" and buf.pages == 1 and k not in self.sums and buf.numel % 4 == 0

    def vec4_input(self, k: int) -> None:
        """Declare input k's binding array<vec4<f32>>: load4 reads 4 elements at once, load one."""
        self.vec4.add(self.buffers.index(self.inputs[k].buffer))

    def load4(self, k: int, index: list[str]) -> str:
        """WGSL that reads the vec4 of input k (a vec4_input) starting at `index`, a multiple of 4 elements."""
        return f"{self.names[k]}[({offset_expr(self.inputs[k], index)}) / 4u]"

    def f16_array(self, k: int) -> str | None:
        """The binding variable of input k when it is an f16 weight that the native-f16 variants
        read as array<f16> by plain index (one page, no folded sums, sizes free of dims), starting
        on 16 bytes (what matrix loads want), else None."""
        v = self.inputs[k]
        fixed = all(isinstance(x, int) for x in (*v.shape, *v.strides, v.offset)) and v.offset % 8 == 0
        return self.names[k] if v.buffer.storage == "f16" and v.buffer.pages == 1 and k not in self.sums and fixed else None

    def kernel(self, name: str, body: str, workgroups, body_f16: str | None = None,
               matrix: tuple[str, str] | None = None, directives: str = "", workgroup_bytes: int = 0) -> Kernel:
        """body_f16: the body of the shader-f16 variant when it differs (f16 arithmetic, gemm.py);
        matrix: (directives, body) of the subgroup-matrix variant (gemm_matrix.py, attention_matrix.py);
        directives: the plain code's (attention_matrix.py's emulation enables f16); workgroup_bytes:
        Kernel.workgroup_bytes."""
        if DIMS in self.buffers and "dims." not in body + (body_f16 or "") + (matrix[1] if matrix else ""):
            self.buffers.remove(DIMS)  # no size it computes with depends on a dim (a size-1 dim's stride, say)
        code_f16 = None
        if any(buf.storage == "f16" for buf in self.buffers):
            code_f16 = "enable f16;\n\n" + self.declare(native_f16=True) + after_bindings(body_f16 or body)
        code_matrix = matrix[0] + "\n\n" + self.declare(native_f16=True) + after_bindings(matrix[1]) if matrix else None
        code = (directives + "\n\n" if directives else "") + self.declare() + after_bindings(body)
        return Kernel(name, code, tuple(workgroups), self.buffers, code_f16, code_matrix=code_matrix, workgroup_bytes=workgroup_bytes)


def page_names(buf: Buffer, var: str) -> list[str]:
    """The binding variables of a buffer: `var`, or var_0, var_1, ... for each page of a paged weight."""
    return [var] if buf.pages == 1 else [f"{var}_{p}" for p in range(buf.pages)]


def page_reader(buf: Buffer, var: str) -> str:
    """`page_<var>(i)`: element i of a paged weight, from the page holding it."""
    pages = [f"if (i < {(p + 1) * buf.page}u) {{ return {name}[i - {p * buf.page}u]; }}" for p, name in enumerate(page_names(buf, var)[:-1])]
    last = f"return {var}_{buf.pages - 1}[i - {(buf.pages - 1) * buf.page}u];"
    return "\n".join(block(f"fn page_{var}(i: u32) -> {WGSL_TYPE[buf.dtype]}", [*pages, last]))


def after_bindings(body: str) -> str:
    helper = NONFINITE_HELPER + "\n\n" if "kuma_bits(" in body else ""
    return "\n\n" + helper + body.strip() + "\n"


def offset_expr(v: Value, index: list[str]) -> str:
    terms = [u32(v.offset) if isinstance(v.offset, Sym) else str(v.offset)] if v.offset != 0 else []
    for idx, size, stride in zip(index, v.shape, v.strides):
        if size == 1 or stride == 0:
            continue
        terms.append(idx if stride == 1 else f"{idx} * {u32(stride)}")
    return " + ".join(terms) if terms else "0u"


def unravel(flat: str, shape, prefix: str = "i") -> tuple[list[str], list[str]]:
    """WGSL lines splitting a row-major flat index into per-dim indices, and their names."""
    lines, names = [], []
    for d, size in enumerate(shape):
        step = prod(shape[d + 1:])
        name = f"{prefix}{d}"
        names.append(name)
        if size == 1:
            lines.append(f"let {name} = 0u;")
        elif step == 1:
            lines.append(f"let {name} = {flat} % {u32(size)};")
        elif d == 0:
            lines.append(f"let {name} = {flat} / {u32(step)};")
        else:
            lines.append(f"let {name} = ({flat} / {u32(step)}) % {u32(size)};")
    return lines, names


def needed(lets: list[str], after: list[str]) -> list[str]:
    """The `let name = ...;` lines of lets that the lines after them read, directly or through a
    later let: unravel's indices a body does not use are not shipped (kernel code is downloaded)."""
    kept, text = [], "\n".join(after)
    for line in reversed(lets):
        name = line.split()[1]
        if re.search(rf"\b{name}\b", text):
            kept.insert(0, line)
            text += "\n" + line
    return kept


def grid(groups: int) -> tuple[int, int, int]:
    """Spread a count of workgroups over x and y (each dimension holds at most 65535)."""
    groups = max(groups, 1)
    if groups <= MAX_WORKGROUPS_PER_DIM:
        return (groups, 1, 1)
    y = ceil(groups / MAX_WORKGROUPS_PER_DIM)
    return (ceil(groups / y), y, 1)


def dynamic_grid(count: Sym, per: int) -> tuple[int, tuple]:
    """For ceil(count / per) workgroups, count depending on a dim: y, fixed by count's max so that x
    stays within the limit at every value, and the workgroups (x evaluated at run time, y, 1).
    Workgroup (x, y) is number x * y_count + y."""
    y = ceil(ceil(max_value(count) / per) / MAX_WORKGROUPS_PER_DIM)
    return y, (ceil_div_count(count, per * y), y, 1)


def threads(total, size: int = 256) -> tuple[str, tuple]:
    """Entry point header for one thread per item: defines `gid` and returns early past `total`."""
    if isinstance(total, Sym):
        y, workgroups = dynamic_grid(total, size)
        header = (
            f"@compute @workgroup_size({size})\n"
            "fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {\n"
            f"  let gid = (wg.x * {y}u + wg.y) * {size}u + li;\n"
            f"  if (gid >= {u32(total)}) {{ return; }}\n"
        )
        return header, workgroups
    workgroups = grid(ceil(total / size))
    header = (
        f"@compute @workgroup_size({size})\n"
        "fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {\n"
        f"  let gid = (wg.y * {workgroups[0]}u + wg.x) * {size}u + li;\n"
        f"  if (gid >= {total}u) {{ return; }}\n"
    )
    return header, workgroups


def workgroup_rows(rows, size: int) -> tuple[str, tuple]:
    """Entry point header for one workgroup of `size` threads per row: defines `row` and `li`
    (the thread's index in the row) and returns early past `rows`."""
    if isinstance(rows, Sym):
        y, workgroups = dynamic_grid(rows, 1)
        return (f"@compute @workgroup_size({size})\n"
                "fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {\n"
                f"  let row = wg.x * {y}u + wg.y;\n"
                f"  if (row >= {u32(rows)}) {{ return; }}\n"), workgroups
    workgroups = grid(rows)
    header = (
        f"@compute @workgroup_size({size})\n"
        "fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {\n"
        f"  let row = wg.y * {workgroups[0]}u + wg.x;\n"
        f"  if (row >= {rows}u) {{ return; }}\n"
    )
    return header, workgroups


# a non-finite constant expression is a shader-creation error in WGSL, so infinities and
# nans come from a call of a user function, which is evaluated at run time
NONFINITE_HELPER = "fn kuma_bits(bits: u32) -> f32 { return bitcast<f32>(bits); }"


def f32(value) -> str:
    """A WGSL f32 literal that round-trips exactly (inf and nan by bit pattern, at run time)."""
    value = np.float32(value)
    if not np.isfinite(value):
        return f"kuma_bits({int(value.view(np.uint32))}u)"
    text = repr(float(value))
    return text if ("." in text or "e" in text) else text + ".0"


def f32_size(x) -> str:
    """A size as an f32 WGSL value (a mean's divisor)."""
    return f"f32({u32(x)})" if isinstance(x, Sym) else f32(x)


def i32_size(x) -> str:
    """A size as an i32 WGSL value (an index's bound)."""
    return f"i32({u32(x)})" if isinstance(x, Sym) else f"{x}i"


def literal(value, dtype: str) -> str:
    if dtype == "f32":
        return f32(value)
    return f"{int(value)}i"


# Kernels are written as lists of WGSL lines (RowKernel in rows.py is the model): a nested scope
# is block(head, lines), and indent() places a list of lines inside a template. Nothing else
# indents WGSL.

def indent(lines, depth: int = 1) -> str:
    """Lines as text, `depth` levels in (for a template's body)."""
    return "\n".join("  " * depth + line for line in lines)


def block(head: str, lines: list[str]) -> list[str]:
    """`head { lines }` as lines, the body one level in; an empty head makes a bare scope, so
    unrolled copies of the same lines can each declare their own names."""
    return [f"{head} {{" if head else "{", *["  " + line for line in lines], "}"]
