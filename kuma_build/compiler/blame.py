"""Which of the user's modules a failing eager run failed in, and where that module was defined.

A shape mismatch inside a library module (nn.Linear given 32 features where it was built for 64)
surfaces as a traceback whose innermost user frame is the call, `x = self.fc(x)`, though the cause
is usually the definition, `self.fc = nn.Linear(4*4*4, 32)`. So while the factory runs, each
module's construction site is recorded (the innermost frame of the model's folder that is not the
module's own __init__), and during the eager run global forward hooks keep the stack of modules
being run; when the run raises, the innermost one is the module that failed.
"""

import linecache
import sys
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

_defined_at = weakref.WeakKeyDictionary()  # module -> (file, line) of its construction


@dataclass
class Culprit:
    name: str  # its path in the model, e.g. "fc"
    module: torch.nn.Module
    file: str
    line: int
    got: list[list[int]]  # the shapes of the tensors it was given


@contextmanager
def recording_definitions(folder: Path):
    """Record where each module built inside the block was constructed, if that is in `folder`."""
    folder = folder.resolve()
    original = torch.nn.Module.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        frame = sys._getframe(1)
        while frame is not None:
            file = frame.f_code.co_filename
            if frame.f_locals.get("self") is not self and _in_folder(file, folder):
                _defined_at[self] = (file, frame.f_lineno)
                break
            frame = frame.f_back

    torch.nn.Module.__init__ = init
    try:
        yield
    finally:
        torch.nn.Module.__init__ = original


@contextmanager
def tracking_modules(root: torch.nn.Module):
    """Yields a function that, after the block raised, names the library module that failed (or None)."""
    running = []  # (module, input shapes), outermost first
    names = {id(m): name for name, m in root.named_modules()}

    def before(module, args):
        running.append((module, [list(a.shape) for a in args if isinstance(a, torch.Tensor)]))

    def after(module, args, output):
        running.pop()

    handles = [torch.nn.modules.module.register_module_forward_pre_hook(before),
               torch.nn.modules.module.register_module_forward_hook(after)]

    def culprit() -> Culprit | None:
        if not running:
            return None
        module, got = running[-1]
        site = _defined_at.get(module)
        # a module whose class the user wrote failed in the user's own code: the traceback says where
        written_by_user = _in_folder(type(module).forward.__code__.co_filename, Path(site[0]).parent) if site else True
        if module is root or written_by_user:
            return None
        return Culprit(names.get(id(module), type(module).__name__), module, site[0], site[1], got)

    try:
        yield culprit
    finally:
        for handle in handles:
            handle.remove()


def expected_input(module: torch.nn.Module) -> str | None:
    """The input shape a library module was built for, as a pattern."""
    if isinstance(module, torch.nn.Linear):
        return f"[..., {module.in_features}]"
    if isinstance(module, torch.nn.modules.conv._ConvNd):
        return f"[N, {module.in_channels}{', *' * len(module.kernel_size)}]"
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
        return f"[N, {module.num_features}, ...]"
    if isinstance(module, torch.nn.GroupNorm):
        return f"[N, {module.num_channels}, ...]"
    if isinstance(module, torch.nn.LayerNorm):
        return f"[..., {', '.join(map(str, module.normalized_shape))}]"
    return None


def describe(culprit: Culprit) -> str:
    """`self.fc = nn.Linear(4*4*4, 32)` (model.py:11, Linear(in_features=64, ...)) expected [..., 64] but got [1, 32]."""
    code = linecache.getline(culprit.file, culprit.line).strip()
    got = " and ".join(f"[{', '.join(map(str, s))}]" for s in culprit.got) or "no tensor"
    expected = expected_input(culprit.module)
    wanted = f"expected an input of shape {expected}" if expected else "could not run"
    return (f"module {culprit.name} (`{code}` at {Path(culprit.file).name}:{culprit.line}, which is {culprit.module!r}) "
            f"{wanted} but got {got}")


def _in_folder(file: str, folder: Path) -> bool:
    path = Path(file)
    return path.is_absolute() and folder in path.resolve().parents and "site-packages" not in path.parts
