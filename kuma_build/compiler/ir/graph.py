"""The IR: a list of nodes over strided views of buffers, for one device class.

A Buffer is one GPU allocation (an input, a constant weight, a value a node
writes, or state: a buffer forward() mutates in place, kept on the GPU from one
run to the next). A Value is a strided view of a buffer, so permute, transpose,
expand, slice, select and most reshapes are free: they make a new Value on the
same buffer. Every node reads Values and writes one fresh contiguous buffer,
except the nodes passes/state.py makes write a state buffer in place.
What each op means to the passes and kernels is in its record (compiler/ops.py).

Shapes, strides and offsets are ints, or Syms (ir/sizes.py) where they depend on a dim
declared in kuma.toml; a buffer is then allocated for every dim at its max.
"""

from dataclasses import dataclass, field
from math import prod

import torch

from kuma_build.devices import DeviceClass
from kuma_build.compiler.precision import stored_words
from kuma_build.compiler.ir.sizes import Sym, max_value

# storage type in WGSL for each IR dtype (bool travels as 0/1 in i32)
WGSL_TYPE = {"f32": "f32", "i32": "i32", "bool": "i32"}


@dataclass(eq=False)
class Buffer:
    numel: int
    dtype: str
    kind: str  # "input" | "const" | "temp" | "output" | "state"
    name: str = ""
    data: torch.Tensor | None = None  # flat contents of a const buffer; a state buffer's initial value
    storage: str = "f32"  # a const f32 weight may be stored as "f16" or "int8" (compiler/precision.py)
    channels: tuple[int, int] = (1, 1)  # int8: (step, count) of its per-channel scales
    page: int = 0  # elements per binding of a weight too big for one (passes/page_weights.py); 0: one binding
    # "f16": an f32 weight whose bytes travel as f16 and are widened to f32 as the runtime writes them
    # to the GPU (an f16 build's program for devices without tensor cores: passes/weight_storage.py)
    transit: str = "f32"
    # an f16 [K, N] weight stored in precision.BLOCK x BLOCK blocks, each contiguous and row-major, the
    # blocks row-major: N, its row length (passes/matrix_blocks.py); 0: stored row-major
    blocked: int = 0
    dynamic: Sym | None = None  # its element count when a dim sets it (numel is then that count's max)

    @property
    def count(self):
        """Its element count at the current dims: an int, or a Sym."""
        return self.numel if self.dynamic is None else self.dynamic

    @property
    def nbytes(self) -> int:
        return 4 * stored_words(self)

    @property
    def pages(self) -> int:
        """The bindings (and GPU buffers) it takes: one, or ceil(numel / page) for a paged weight."""
        return -(-self.numel // self.page) if self.page else 1

    def page_bytes(self, p: int) -> int:
        return 4 * (min(self.numel, (p + 1) * self.page) - p * self.page) if self.page else self.nbytes

    def sent_bytes(self, p: int) -> int:
        """The bytes of page p in the weight chunks: those on the GPU, or for a widened weight its f16
        values, padded to 4 bytes (the GPU buffer is then twice this: a trailing zero at most)."""
        if self.transit == "f32":
            return self.page_bytes(p)
        return 4 * -(-self.page_bytes(p) // 8)


@dataclass(eq=False)
class Value:
    buffer: Buffer
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int = 0

    @property
    def dtype(self) -> str:
        return self.buffer.dtype

    @property
    def numel(self) -> int:
        return prod(self.shape)

    @property
    def is_const(self) -> bool:
        return self.buffer.kind == "const"

    @property
    def is_dynamic(self) -> bool:
        """Whether a dim sets its shape, strides or offset (a constant's view is then read at run time)."""
        return any(isinstance(x, Sym) for x in (*self.shape, *self.strides, self.offset))

    def is_contiguous(self) -> bool:
        """Row-major over the whole buffer (strides of size-1 dims don't matter)."""
        dense = all(size == 1 or stride == want for size, stride, want in zip(self.shape, self.strides, contiguous_strides(self.shape)))
        return self.offset == 0 and dense and self.numel == self.buffer.count

    def is_permuted(self) -> bool:
        """Row-major from offset 0 in an order of its dims other than its own: sorted by stride, its
        dims (those not of size 1) are contiguous, in their own order they are not (ConvNeXt's
        channels-last result read channels first). Static sizes only."""
        if self.offset != 0 or not all(isinstance(x, int) for x in (*self.shape, *self.strides)):
            return False
        dims = sorted((stride, size) for size, stride in zip(self.shape, self.strides) if size != 1)
        dense = [stride for stride, _ in dims] == [prod(size for _, size in dims[:d]) for d in range(len(dims))]
        return dense and any(size != 1 and stride != want for size, stride, want in zip(self.shape, self.strides, contiguous_strides(self.shape)))

    def is_broadcast(self) -> bool:
        return any(stride == 0 and size != 1 for size, stride in zip(self.shape, self.strides))

    def tensor(self) -> torch.Tensor:
        """The contents of a constant value, as a (possibly strided) torch tensor."""
        assert self.buffer.data is not None
        return torch.as_strided(self.buffer.data, self.shape, self.strides, self.offset)


@dataclass(eq=False)
class Node:
    op: str
    inputs: list[Value]
    output: Value
    attrs: dict = field(default_factory=dict)
    where: str = ""  # "file.py:12" of the user's code that made it, for messages

    @property
    def operands(self) -> int:
        """How many inputs are the op's own; inputs past them belong to its fused epilogue."""
        return self.attrs.get("operands", len(self.inputs))


@dataclass
class Graph:
    device: DeviceClass  # the class the passes and kernels tune for (devices.py)
    inputs: dict[str, Value] = field(default_factory=dict)
    outputs: dict[str, Value] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)
    # buffers forward() mutates, by name: (the state's value as a run starts, its value as the run
    # ends); passes/state.py makes the run end by writing the latter into the state's own buffer
    state: dict[str, tuple[Value, Value]] = field(default_factory=dict)
    dims: list = field(default_factory=list)  # the declared dims (ir/sizes.Dim), in the dims uniform's order
    precision: str = "f32"  # kuma.toml's precision: the weights passes/weight_storage.py stores narrower after the passes

    def add(self, op: str, inputs: list[Value], shape, dtype: str, where: str = "", **attrs) -> Value:
        out = fresh(shape, dtype)
        self.nodes.append(Node(op, list(inputs), out, attrs, where))
        return out

    def uses(self) -> dict:
        """buffer -> every (node, input index) reading it, in the nodes' order."""
        uses: dict = {}
        for node in self.nodes:
            for k, v in enumerate(node.inputs):
                uses.setdefault(v.buffer, []).append((node, k))
        return uses


# the uniform buffer holding the dims' current values (docs/design.md, Dimensions): kernels whose sizes
# depend on a dim bind it (kernels/wgsl.py: binding_buffers); the plan gives it its own buffer
DIMS = Buffer(0, "i32", "dims", "dims")


def contiguous_strides(shape) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def fresh(shape, dtype: str, kind: str = "temp", name: str = "") -> Value:
    if any(isinstance(s, torch.SymInt) for s in shape):  # int() would specialise it to the example's value
        raise TypeError("a torch.SymInt shape reached the IR: convert it with Importer.size")
    shape = tuple(s if isinstance(s, Sym) else int(s) for s in shape)
    numel = prod(shape)
    dynamic = numel if isinstance(numel, Sym) else None
    return Value(Buffer(max(max_value(numel), 1), dtype, kind, name, dynamic=dynamic), shape, contiguous_strides(shape))


def const(tensor: torch.Tensor, name: str = "") -> Value:
    """A constant; its data keeps the torch dtype so folding stays exact (emit packs it to 4 bytes)."""
    value = fresh(tensor.shape, ir_dtype(tensor.dtype), "const", name)
    data = tensor.detach().contiguous().reshape(-1)
    if data.dtype in (torch.float16, torch.bfloat16):
        data = data.float()
    value.buffer.data = data if data.numel() else torch.zeros(1, dtype=data.dtype)
    return value


def state(tensor: torch.Tensor, name: str) -> Value:
    """A buffer forward() mutates: the GPU keeps it between runs, starting from `tensor`."""
    value = const(tensor, name)
    value.buffer.kind = "state"
    return value


def ir_dtype(dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return "bool"
    if dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        return "i32"
    if dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        return "f32"
    raise ValueError(f"dtype {dtype} has no WebGPU storage type")
