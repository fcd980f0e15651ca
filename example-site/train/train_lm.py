"""Trains the example site's text generator (models/lm.py) on the CPU in a few minutes, with
nothing downloaded: the text is the docstrings of the Python standard library that runs this.

The corpus: every public top-level module of sys.stdlib_module_names (in sorted order, a few
with side effects or a GUI skipped) is imported, and the cleaned docstrings (inspect.getdoc) of
the module, its own classes and functions and the classes' methods and properties are taken in
sorted order, each once. Every 20th docstring is held out for validation. The text is UTF-8
bytes; the model reads and writes bytes.

One thread, a fixed seed and a fixed number of steps: a rerun with the same Python and PyTorch
reproduces weights/lm.safetensors byte for byte. Prints the validation loss in bits per byte
(per character, for the ASCII text that nearly all of it is) and a greedy sample.

    cd example-site && python train/train_lm.py
"""

import argparse
import contextlib
import importlib
import inspect
import io
import math
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

SITE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(SITE / "models"))
from lm import CONTEXT, build_model, greedy  # noqa: E402

# modules that open windows or browsers, print on import, or are test suites and build tools
SKIP = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "test", "lib2to3", "ensurepip", "venv",
        "__main__", "pydoc_data", "xxlimited", "xxsubtype"}
HOLDOUT = 20  # every 20th docstring is validation text
STEPS, BATCH, LR, WARMUP = 1400, 16, 3e-3, 100
SAMPLE_PROMPT = "Return the "


def docstrings() -> list[str]:
    """The standard library's docstrings, in a fixed order, each once."""
    found, seen = [], set()
    names = sorted(name for name in sys.stdlib_module_names if not name.startswith("_") and name not in SKIP)
    for name in names:
        try:  # quietly: some modules warn or print when imported, some are missing on this platform
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                warnings.simplefilter("ignore")
                module = importlib.import_module(name)
        except Exception:
            continue
        objects = [module]
        for _, value in sorted(vars(module).items()):
            if getattr(value, "__module__", None) != name:
                continue  # imported from elsewhere: documented there
            if inspect.isclass(value):
                objects.append(value)
                for _, member in sorted(vars(value).items()):
                    if isinstance(member, (classmethod, staticmethod)):
                        objects.append(member.__func__)
                    elif inspect.isfunction(member) or inspect.ismethoddescriptor(member) or isinstance(member, property):
                        objects.append(member)
            elif inspect.isfunction(value) or inspect.isbuiltin(value):
                objects.append(value)
        for item in objects:
            doc = inspect.getdoc(item)
            if doc and doc not in seen:
                seen.add(doc)
                found.append(doc)
    return found


def encode(docs: list[str]) -> torch.Tensor:
    return torch.tensor(list("\n\n".join(docs).encode() + b"\n\n"), dtype=torch.long)


def batches(data: torch.Tensor, generator: torch.Generator):
    """Endless random windows of CONTEXT + 1 bytes: inputs and the next bytes."""
    while True:
        starts = torch.randint(0, len(data) - CONTEXT - 1, (BATCH,), generator=generator)
        windows = torch.stack([data[s:s + CONTEXT + 1] for s in starts.tolist()])
        yield windows[:, :-1], windows[:, 1:]


def bits_per_byte(model, data: torch.Tensor) -> float:
    """Mean loss over all whole windows of the validation text, in bits per byte."""
    windows = data[:len(data) // (CONTEXT + 1) * (CONTEXT + 1)].view(-1, CONTEXT + 1)
    total = 0.0
    with torch.no_grad():
        for chunk in windows.split(32):
            logits = model.sequence(chunk[:, :-1])
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1), reduction="sum").item()
    return total / (windows.shape[0] * CONTEXT) / math.log(2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=STEPS, help=f"optimizer steps (default {STEPS})")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)  # reproducible, and fair to a shared machine
    generator = torch.Generator().manual_seed(0)
    started = time.time()
    docs = docstrings()
    train = encode([doc for i, doc in enumerate(docs) if i % HOLDOUT != HOLDOUT - 1])
    valid = encode([doc for i, doc in enumerate(docs) if i % HOLDOUT == HOLDOUT - 1])
    print(f"Python {sys.version.split()[0]}: {len(docs)} docstrings, {len(train)} training bytes, "
          f"{len(valid)} validation bytes ({time.time() - started:.1f} s)")

    model = build_model()
    print(f"{sum(p.numel() for p in model.parameters())} parameters")
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01, betas=(0.9, 0.95))
    # linear warm-up, then a cosine down to a tenth
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1, (step + 1) / WARMUP) * (
        0.1 + 0.45 * (1 + math.cos(math.pi * min(step / args.steps, 1)))))
    stream = batches(train, generator)
    for step in range(1, args.steps + 1):
        inputs, targets = next(stream)
        loss = F.cross_entropy(model.sequence(inputs).reshape(-1, 256), targets.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 200 == 0 or step == args.steps:
            print(f"step {step}: training loss {loss.item() / math.log(2):.3f} bits/byte ({time.time() - started:.0f} s)")

    model.eval()
    print(f"validation: {bits_per_byte(model, valid):.3f} bits/byte ({time.time() - started:.0f} s)")
    print(f"greedy sample: {SAMPLE_PROMPT!r} -> {greedy(model, SAMPLE_PROMPT.encode(), 160).decode(errors='replace')!r}")
    save_file(model.state_dict(), str(SITE / "weights" / "lm.safetensors"))


if __name__ == "__main__":
    main()
