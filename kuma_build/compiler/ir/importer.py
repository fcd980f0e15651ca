"""Import: turn a torch.export graph (core aten ops) into kuma IR.

Each aten op family has a small module (aten_*.py) whose handlers register
in registry.py; importing them here fills the registry.

Nodes whose tensor inputs are all constants are folded here by running the
aten op in PyTorch itself (exact semantics, no second implementation), except
views, which stay free aliases of the constant they view.

A registered buffer that forward() mutates in place (torch.export lists it as a
BUFFER_MUTATION output, its new value among the program's results) becomes a
state buffer: Graph.state pairs its value at the start of a run with its new
value, and passes/state.py makes each run end by writing the new value into it.

A dim declared in kuma.toml reaches the graph as a torch SymInt in the fake tensors' shapes
(export.py passes torch.export one Dim per declared dim). `size` turns each SymInt into an int
or a Sym (ir/sizes.py), so the IR never holds a SymInt; nodes that compute sizes (sym_size,
seq * 8) import as their Sym.
"""

import operator
from pathlib import Path

import sympy
import torch
from torch.export.graph_signature import InputKind, OutputKind
from torch.fx.node import map_arg

from kuma_build.devices import DeviceClass
from kuma_build.compiler.ir import views
from kuma_build.compiler.ir.expr import copy_of
from kuma_build.compiler.ir.graph import Graph, Value, const, fresh, ir_dtype, state
from kuma_build.compiler.ir.registry import ATEN, Unsupported
from kuma_build.compiler.ir.sizes import Dim, DynamicSize, Sym, is_sym
from kuma_build.compiler.ir import aten_conv, aten_elementwise, aten_linalg, aten_misc, aten_norm, aten_pool, aten_reduce, aten_scan, aten_scatter, aten_shape  # noqa: F401  (they register their handlers)
from kuma_build.errors import KumaError, frame_from_stack_trace


def op_name(target) -> str:
    return str(target) if isinstance(target, torch._ops.OpOverload) else getattr(target, "__name__", str(target))


class Importer:
    def __init__(self, model_name: str, source: Path, device: DeviceClass, dims: dict[str, tuple[int, int]] | None = None,
                 shapes: dict[str, tuple] | None = None):
        self.model_name, self.source = model_name, source
        self.graph = Graph(device)
        self.node = None  # the fx node being imported
        self.where = ""
        # the declared dims, in kuma.toml order (their fields in the dims uniform), and each
        # input's kuma.toml shape, which names them
        self.graph.dims = [Dim(i, name, lo, hi) for i, (name, (lo, hi)) in enumerate((dims or {}).items())]
        self.shapes = shapes or {}
        self.symbols: dict = {}  # sympy symbol -> its Dim, from the inputs' fake shapes

    # --- helpers for handlers -------------------------------------------------
    @property
    def meta(self):
        """The fake output tensor(s) torch.export recorded for the current node."""
        return self.node.meta.get("val")

    @property
    def shape(self) -> tuple:
        """The current node's output shape as torch.export recorded it (ints and Syms)."""
        return self.sizes(self.meta.shape)

    def sizes(self, values) -> tuple:
        return tuple(self.size(v) for v in values)

    def size(self, value):
        """An int, or the Sym of a torch SymInt: a polynomial over the declared dims."""
        if not isinstance(value, torch.SymInt):
            return value if is_sym(value) else int(value)
        expr = sympy.expand(value.node.expr)
        if expr.is_number:
            return int(expr)
        unknown = expr.free_symbols - set(self.symbols)
        poly = None if unknown else expr.as_poly(*self.symbols)
        if poly is None or any(not c.is_integer for c in poly.coeffs()):
            named = expr.subs({s: sympy.Symbol(d.name) for s, d in self.symbols.items()})  # torch's s27 as seq
            raise self.error(f"the size {named} is not a polynomial in the declared dims (kuma.toml dims); "
                             "kuma does not support it with a dynamic dimension yet", listed=False)
        dims = list(self.symbols.values())
        terms = {}
        for powers, coef in poly.terms():
            monomial = tuple(sorted(d for d, p in zip(dims, powers) for _ in range(p)))
            terms[monomial] = int(coef)
        return Sym(terms) if any(terms) else terms.get((), 0)

    def _input(self, name: str, fake) -> Value:
        """A model input; a kuma.toml dim name in its shape is the symbol torch gave that position."""
        by_name = {d.name: d for d in self.graph.dims}
        for declared, size in zip(self.shapes.get(name, ()), fake.shape):
            if isinstance(declared, str) and isinstance(size, torch.SymInt) and isinstance(size.node.expr, sympy.Symbol):
                self.symbols.setdefault(size.node.expr, by_name[declared])
        return fresh(self.sizes(fake.shape), ir_dtype(fake.dtype), "input", name)

    def emit(self, op: str, inputs: list[Value], shape, dtype: str, **attrs) -> Value:
        return self.graph.add(op, inputs, shape, dtype, self.where, **attrs)

    def copy(self, v: Value) -> Value:
        return self.emit("elementwise", [v], v.shape, v.dtype, expr=copy_of(v.dtype))

    def contiguous(self, v: Value) -> Value:
        return v if v.is_contiguous() else self.copy(v)

    def reshape(self, v: Value, shape) -> Value:
        view = views.reshape(v, shape)
        return view if view is not None else views.reshape(self.copy(v), shape)

    # --- the walk ---------------------------------------------------------------
    def run(self, program: torch.export.ExportedProgram, input_names: list[str], output_names: list[str]) -> Graph:
        signature = program.graph_signature
        constants = {**program.state_dict, **program.constants}
        lifted = {spec.arg.name: spec for spec in signature.input_specs}
        mutated = {spec.target for spec in signature.output_specs if spec.kind == OutputKind.BUFFER_MUTATION}
        state_of = {}  # buffer target -> its state value
        env: dict = {}
        user_inputs = iter(input_names)
        for node in program.graph_module.graph.nodes:
            self.node = node
            self.where = self._where(node)
            if node.op == "placeholder":
                spec = lifted[node.name]
                if spec.kind == InputKind.USER_INPUT:
                    name = next(user_inputs)
                    value = self._input(name, node.meta["val"])
                    self.graph.inputs[name] = value
                elif spec.target in mutated:
                    value = state_of[spec.target] = state(constants[spec.target], spec.target)
                else:
                    value = const(constants[spec.target], spec.target)
                env[node] = value
            elif node.op == "call_function":
                env[node] = self._call(node, env)
            elif node.op == "output":
                # the program also returns the new values of inputs and buffers that forward()
                # mutates in place, before the user's outputs
                results = [arg for spec, arg in zip(signature.output_specs, node.args[0]) if spec.kind == OutputKind.USER_OUTPUT]
                for spec, arg in zip(signature.output_specs, node.args[0]):
                    if spec.kind == OutputKind.PARAMETER_MUTATION:
                        raise KumaError(f"model {self.model_name}: forward() updates the parameter {spec.target} in place; kuma keeps "
                                        "state only in registered buffers. Make it a buffer (self.register_buffer) instead of a parameter.",
                                        self.source)
                    if spec.kind == OutputKind.BUFFER_MUTATION:
                        self.graph.state[spec.target] = (state_of[spec.target], env[arg])
                for name, arg in zip(output_names, results):
                    value = env[arg] if isinstance(arg, torch.fx.Node) else None
                    if not isinstance(value, Value):
                        raise KumaError(f"model {self.model_name}: output {name} is not a tensor; forward() must return tensors.", self.source)
                    self.graph.outputs[name] = value
        return self.graph

    def _call(self, node, env):
        if node.target is operator.getitem:
            items, index = env[node.args[0]], node.args[1]
            return items[index]
        if isinstance(self.meta, (torch.SymInt, int)) and not isinstance(self.meta, bool):
            return self.size(self.meta)  # a size computed from sizes (sym_size, seq * 8)
        if isinstance(self.meta, torch.SymBool) or node.target in SIZE_CHECKS:
            return None  # a check of sizes torch.export already proved over the dims' ranges
        name = op_name(node.target)
        args = map_arg(node.args, lambda n: env[n])
        kwargs = map_arg(node.kwargs, lambda n: env[n])
        if self._foldable(node, args, kwargs):
            return self._fold(node, args, kwargs)
        handler = ATEN.get(name)
        if handler is None:
            raise self.error(f"operator {name} is not supported")
        try:
            return handler(self, *args, **kwargs)
        except Unsupported as e:
            raise self.error(f"operator {name} is not supported here: {e}")
        except DynamicSize as e:
            dims = ", ".join(sorted(d.name for d in self.graph.dims)) or "a dim"
            raise self.error(f"operator {name} is not supported with a dynamic dimension ({dims}) yet: {e}", listed=False)

    def _foldable(self, node, args, kwargs) -> bool:
        if isinstance(node.target, torch._ops.OpOverload) and node.target.is_view:
            return False
        leaves = torch.utils._pytree.tree_leaves((args, kwargs))
        values = [v for v in leaves if isinstance(v, Value)]
        # a dim's size is not a number PyTorch could fold with (a constant's view of it is read at run time)
        return all(v.is_const and not v.is_dynamic for v in values) and not any(is_sym(a) for a in leaves)

    def _fold(self, node, args, kwargs):
        to_tensor = lambda a: a.tensor() if isinstance(a, Value) else a
        args, kwargs = torch.utils._pytree.tree_map(to_tensor, (args, kwargs))
        with torch.no_grad():
            result = node.target(*args, **kwargs)
        as_value = lambda t: const(t, f"folded.{node.name}") if isinstance(t, torch.Tensor) else t
        return torch.utils._pytree.tree_map(as_value, result)

    def _where(self, node) -> str:
        frame = frame_from_stack_trace(node.meta.get("stack_trace"), self.source)
        return f"{Path(frame[0]).name}:{frame[1]}" if frame else ""

    def error(self, problem: str, listed: bool = True) -> KumaError:
        """listed: the problem is an op that docs/ops.md does not list (else the message says what to do)."""
        frame = frame_from_stack_trace(self.node.meta.get("stack_trace"), self.source)
        code = ""
        if frame:
            lines = Path(frame[0]).read_text().splitlines()
            code = f" (`{lines[frame[1] - 1].strip()}`)" if frame[1] <= len(lines) else ""
        advice = ("kuma build compiles only the ops listed in docs/ops.md; rewrite this line with supported operations, "
                  "or open an issue asking for the op." if listed else
                  "Rewrite this line, or make the dim static (a number in the input's shape in kuma.toml).")
        return KumaError(f"model {self.model_name}: {problem}{code}. {advice}",
                         frame[0] if frame else self.source, frame[1] if frame else None)


# checks of sizes that torch.export inserts; the export proved them over the dims' ranges
SIZE_CHECKS = {torch.ops.aten._assert_scalar.default, torch.ops.aten.sym_constrain_range_for_size.default,
               torch.ops.aten.sym_constrain_range.default}


def import_program(program, model_name: str, source: Path, input_names: list[str], output_names: list[str],
                   device: DeviceClass, dims: dict[str, tuple[int, int]] | None = None, shapes: dict[str, tuple] | None = None) -> Graph:
    return Importer(model_name, source, device, dims, shapes).run(program, input_names, output_names)
