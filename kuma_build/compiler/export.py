"""Export: load the user's model and capture it with torch.export as core aten ops.

Everything that can go wrong in user code (syntax errors, a missing factory,
weights that don't fit, untraceable Python, sys.exit or argparse at import)
becomes a KumaError that names the user's file and line; user code runs inside
user_code(). A KeyboardInterrupt goes on up (the CLI reports it) carrying the
user's line as kuma_where.

A model with dims (kuma.toml `dims`, sizes one build serves) is exported once with a
torch.export.Dim per dim, on example inputs at a value inside each range that torch does not
specialise (not 0 or 1). When torch finds that the model only works for some values (its 0/1
specialisation, or a guard the model imposes, such as `assert x.shape[1] % 8 == 0`), the error
names the dim and the model's line that added the guard (guard_sites records them).
"""

import importlib.util
import inspect
import linecache
import logging
import re
import sys
import traceback
from contextlib import contextmanager, nullcontext
from pathlib import Path

import sympy
import torch

from kuma_build.compiler.blame import describe, recording_definitions, tracking_modules
from kuma_build.config import ModelConfig
from kuma_build.errors import KumaError, user_frame

TORCH_DTYPES = {"float32": torch.float32, "int32": torch.int32, "int64": torch.int64}


def load_module(model: ModelConfig, project_root: Path):
    """Import the model's source file; its folder and the project root are importable."""
    name = f"kuma_user_{model.name.replace('-', '_')}"
    spec = importlib.util.spec_from_file_location(name, model.source)
    module = importlib.util.module_from_spec(spec)
    extra = [str(model.source.parent), str(project_root)]
    sys.path[:0] = extra
    try:
        with user_code(model, f"importing {model.source.name}",
                       lambda e: f"importing {model.source.name} failed: {type(e).__name__}: {e}. Fix the error in the model file."), \
                recording_definitions(model.source.parent):  # modules made at import time, too
            spec.loader.exec_module(module)
    finally:
        for path in extra:
            sys.path.remove(path)
    return module


@contextmanager
def user_code(model: ModelConfig, doing: str, failed):
    """Run the user's code; failed(exception) says what went wrong, and the error names the user's line."""
    argv, sys.argv = sys.argv, [str(model.source)]  # a model that parses arguments sees none, not kuma's
    try:
        yield
    except KumaError:
        raise
    except SystemExit as e:
        raise _user_error(e, model, f"{doing} exited (SystemExit: {e.code}); model code must not call sys.exit() or parse "
                          'command-line arguments when kuma runs it. Move script code under `if __name__ == "__main__":`.') from None
    except KeyboardInterrupt as e:
        e.kuma_where = user_frame(e, model.source) or (str(model.source), None)
        raise
    except Exception as e:
        raise _user_error(e, model, failed(e)) from None
    finally:
        sys.argv = argv


def build_module(model: ModelConfig, project_root: Path) -> torch.nn.Module:
    module = load_module(model, project_root)
    factory = getattr(module, model.factory, None)
    if not callable(factory):
        names = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_") and getattr(v, "__module__", None) == module.__name__)
        raise model.config_error(f'model {model.name}: factory "{model.factory}" is not defined in {model.source.name}; '
                                 f'set factory in kuma.toml to one of: {", ".join(names) or "(no callables found)"}.', "factory")
    torch.manual_seed(0)  # models without a weights file get the same random init in build and verify
    with user_code(model, f"calling {model.factory}()", lambda e: f"calling {model.factory}() failed: {type(e).__name__}: {e}."), \
            recording_definitions(model.source.parent):  # so a failing run can name a module's definition
        net = factory()
    if not isinstance(net, torch.nn.Module):
        raise KumaError(f"model {model.name}: {model.factory}() returned {type(net).__name__}, not a torch.nn.Module.", *_defined_at(factory, model))
    if model.weights is not None:
        load_weights(net, model)
    return net.eval()


def load_weights(net: torch.nn.Module, model: ModelConfig) -> None:
    path = model.weights
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
            if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
                state = state["state_dict"]
    except Exception as e:
        raise KumaError(f"model {model.name}: cannot read weights ({type(e).__name__}: {e}). "
                        "Expected a .safetensors file or a torch state_dict saved with torch.save.", path)
    if not isinstance(state, dict):
        raise KumaError(f"model {model.name}: the weights file holds a {type(state).__name__}, not a state_dict.", path)
    own = net.state_dict()
    wrong = [f"{name} has shape {list(tensor.shape)} in the weights file but {list(own[name].shape)} in the model"
             for name, tensor in state.items() if name in own and isinstance(tensor, torch.Tensor) and tensor.shape != own[name].shape]
    if wrong:
        raise KumaError(f"model {model.name}: the weights do not fit the model: {'; '.join(wrong[:5])}. "
                        "Check that factory builds the architecture the weights were saved from.", path)
    try:
        result = net.load_state_dict(state, strict=False)
    except Exception as e:
        raise KumaError(f"model {model.name}: the weights do not fit the model ({type(e).__name__}: {_first_line(e)}). "
                        "Check that factory builds the architecture the weights were saved from.", path) from None
    problems = []
    if result.missing_keys:
        problems.append(f"missing {', '.join(result.missing_keys[:5])}")
    if result.unexpected_keys:
        problems.append(f"unexpected {', '.join(result.unexpected_keys[:5])}")
    if problems:
        raise KumaError(f"model {model.name}: the weights do not fit the model ({'; '.join(problems)}). "
                        "Check that factory builds the architecture the weights were saved from.", path)


def example_value(low: int, high: int) -> int:
    """A value of a dim's range that torch.export does not specialise: not 0 or 1 (the middle, or 2)."""
    return min(high, max(2, (low + high) // 2))


def concrete_shape(shape, values: dict[str, int]) -> tuple[int, ...]:
    """An input's kuma.toml shape with each dim name replaced by its value."""
    return tuple(values[s] if isinstance(s, str) else s for s in shape)


def example_inputs(model: ModelConfig, generator: torch.Generator | None = None, values: dict[str, int] | None = None) -> dict[str, torch.Tensor]:
    """Random inputs of the kuma.toml shapes; a dim takes its value from `values`, else example_value."""
    values = {name: example_value(*limits) for name, limits in model.dims.items()} | (values or {})
    inputs = {}
    for spec in model.inputs:
        shape = concrete_shape(spec.shape, values)
        if spec.dtype == "float32":
            inputs[spec.name] = torch.randn(shape, generator=generator)
        else:
            inputs[spec.name] = torch.randint(0, 2, shape, generator=generator, dtype=TORCH_DTYPES[spec.dtype])
    return inputs


def dynamic_shapes(model: ModelConfig, order: list[str]) -> tuple | None:
    """torch.export's dynamic_shapes for the inputs in call order: one Dim per kuma.toml dim."""
    if not model.dims:
        return None
    # a dim of one value is a number to torch (which refuses a Dim with min == max)
    dims = {name: torch.export.Dim(name, min=low, max=high) for name, (low, high) in model.dims.items() if low < high}
    shapes = {s.name: s.shape for s in model.inputs}
    return tuple({i: dims[s] for i, s in enumerate(shapes[name]) if s in dims} or None for name in order)


def decompositions():
    table = torch.export.default_decompositions()
    # kept whole: kuma has one fused kernel for attention
    table.pop(torch.ops.aten.scaled_dot_product_attention.default, None)
    return table


def export(net: torch.nn.Module, model: ModelConfig) -> tuple[torch.export.ExportedProgram, list[str], list[str]]:
    """The exported program (core aten), its input names in call order, and its output names."""
    order = call_order(net, model)
    inputs = example_inputs(model)
    at_values = f" (at {', '.join(f'{n} = {example_value(*r)}' for n, r in model.dims.items())})" if model.dims else ""
    initial = buffer_values(net)  # forward() may update buffers in place (a KV cache): these are their initial values
    args = tuple(inputs[name] for name in order)
    with tracking_modules(net) as failed_module, \
            user_code(model, "running forward()", lambda e: f"the model fails in PyTorch on random inputs of the shapes in kuma.toml"
                      f"{at_values}: {type(e).__name__}: {_first_line(e)}. Check the input shapes and dtypes."), torch.no_grad():
        try:
            eager = net(*args)
        except Exception as e:  # inside a library module: name the module's definition, not only the call
            culprit = failed_module()
            if culprit is None:
                raise
            call = user_frame(e, model.source)
            raise KumaError(f"model {model.name}: {describe(culprit)}{f' (called at {Path(call[0]).name}:{call[1]})' if call else ''}. "
                            f"PyTorch says: {type(e).__name__}: {_first_line(e)}. Fix the module's definition, or what the "
                            f"model passes to it.", culprit.file, culprit.line) from None
    names = output_names(eager, model, net)
    restore_buffers(net, initial)
    with user_code(model, "torch.export", lambda e: f"torch.export could not capture the model: {type(e).__name__}: {_first_line(e)}. "
                   "kuma needs a model whose control flow does not depend on tensor values."):
        with guard_sites(model.source) if model.dims else nullcontext([]) as sites:
            try:
                program = torch.export.export(net, args, dynamic_shapes=dynamic_shapes(model, order))
            except torch._dynamo.exc.UserError as e:
                if not model.dims or "Constraints violated" not in str(e):
                    raise
                raise specialised_error(e, model, sites) from None
        program = program.run_decompositions(decompositions())
    return program, order, names


@contextmanager
def guard_sites(source: Path):
    """Yields a list that fills with (guard, file, line) for each guard on sizes torch adds while
    exporting, at the innermost line of `source` running then (torch logs each guard as it adds
    it; its error does not say where)."""
    sites = []
    source = source.resolve()

    class Recorder(logging.Handler):
        def emit(self, record):
            if "[guard added]" in record.msg and len(record.args) >= 2:
                frames = [f for f in traceback.extract_stack() if Path(f.filename).resolve() == source]
                if frames:
                    sites.append((str(record.args[1]), frames[-1].filename, frames[-1].lineno))

    logger = logging.getLogger("torch.fx.experimental.symbolic_shapes")
    handlers, level, propagate = logger.handlers, logger.level, logger.propagate
    logger.handlers, logger.propagate = [Recorder(logging.INFO)], False  # recorded, not printed
    logger.setLevel(logging.INFO)
    try:
        yield sites
    finally:
        logger.handlers, logger.propagate = handlers, propagate
        logger.setLevel(level)


def specialised_error(e: Exception, model: ModelConfig, sites: list) -> KumaError:
    """A dim torch.export would not keep dynamic: name it, its range, torch's reason, and the model's
    line that added the guard when torch recorded one in the model's file (else the kuma.toml line)."""
    text = str(e)
    named = re.search(r"Constraints violated \(([^)]*)\)", text)
    names = [n.strip() for n in named.group(1).split(",")] if named else list(model.dims)
    reasons = [line.strip()[2:] for line in text.splitlines() if line.strip().startswith("- ")]
    ranges = ", ".join(f"{n} in [{model.dims[n][0]}, {model.dims[n][1]}]" for n in names if n in model.dims)
    # the first guard that fails somewhere in the range (a guard that always holds is no culprit)
    culprits = [site for site in sites if not always_holds(site[0], [model.dims[n] for n in names if n in model.dims])] or sites
    site = ""
    if culprits:
        _, file, line = culprits[0]
        code = linecache.getline(file, line).strip()
        site = f" The guard comes from {Path(file).name}:{line}{f' (`{code}`)' if code else ''}."
    declared = f" ({model.config.name}:{model.lines['dims']})" if model.config and model.lines.get("dims") else ""
    message = (f"model {model.name}: torch.export cannot keep the dim {', '.join(names)} dynamic over its kuma.toml range "
               f"({ranges}{declared}): {' '.join(r.rstrip('.') + '.' for r in reasons[:2]) or _first_line(e)}{site} Remove the condition on that size from the model, "
               "or declare a range (or a fixed size) for which it always holds.")
    if culprits:
        return KumaError(message, culprits[0][1], culprits[0][2])
    return model.config_error(message, "dims")


def always_holds(guard: str, ranges: list[tuple[int, int]], most: int = 4096) -> bool:
    """Whether a guard torch logged (sympy text over one symbol) holds at every value of the one
    dim the error names; False when that cannot be told."""
    try:
        expr = sympy.sympify(guard)
    except (sympy.SympifyError, TypeError, SyntaxError):
        return False
    if len(ranges) != 1 or len(expr.free_symbols) != 1 or ranges[0][1] - ranges[0][0] > most:
        return False
    (symbol,), (low, high) = expr.free_symbols, ranges[0]
    return all(bool(expr.subs(symbol, value)) for value in range(low, high + 1))


def buffer_values(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the module's buffers, for restore_buffers."""
    return {name: b.clone() for name, b in net.named_buffers()}


def restore_buffers(net: torch.nn.Module, values: dict[str, torch.Tensor]) -> None:
    """Undo what forward() did to the module's buffers (a KV cache it updates in place)."""
    with torch.no_grad():
        for name, b in net.named_buffers():
            b.copy_(values[name])


def call_order(net: torch.nn.Module, model: ModelConfig) -> list[str]:
    """kuma.toml input names in the order forward() takes them: by name, else by position."""
    params = [p for p in inspect.signature(net.forward).parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    names = [s.name for s in model.inputs]
    by_name = [p.name for p in params if p.name in names]
    if len(by_name) == len(names):
        return by_name
    if len(params) >= len(names) and not any(n in [p.name for p in params] for n in names):
        return names  # none match by name (e.g. nn.Sequential's `input`): bind by position
    raise model.config_error(f"model {model.name}: kuma.toml inputs ({', '.join(names)}) do not match forward()'s parameters "
                             f"({', '.join(p.name for p in params)}); name them alike, or name none alike to bind by position.", "inputs")


def output_names(eager, model: ModelConfig, net: torch.nn.Module | None = None) -> list[str]:
    leaves, spec = torch.utils._pytree.tree_flatten(eager)
    if not leaves:
        raise KumaError(f"model {model.name}: forward() returns no tensors ({_first_line(repr(eager))}); return the tensors "
                        "the page should get, e.g. return logits.", *_defined_at(type(net).forward if net else None, model))
    if model.outputs is not None:
        if len(model.outputs) != len(leaves):
            raise model.config_error(f"model {model.name}: kuma.toml names {len(model.outputs)} outputs but forward() returns {len(leaves)}; "
                                     "name each output once.", "outputs")
        return list(model.outputs)
    if isinstance(eager, dict):
        return [str(k) for k in eager.keys()] if len(eager) == len(leaves) else [f"output{i}" for i in range(len(leaves))]
    return ["output"] if len(leaves) == 1 else [f"output{i}" for i in range(len(leaves))]


def _defined_at(function, model: ModelConfig) -> tuple:
    """The file and line where a function or class of the user's is defined (the model file when not found)."""
    try:
        _, line = inspect.getsourcelines(function)
        return inspect.getsourcefile(function), line
    except (OSError, TypeError):
        return model.source, None


def _first_line(e) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _user_error(e: BaseException, model: ModelConfig, message: str) -> KumaError:
    frame = user_frame(e, model.source)
    file, line = frame if frame else (model.source, None)
    return KumaError(f"model {model.name}: {message}", file, line)
