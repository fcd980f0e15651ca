"""Decode benchmark: greedy tokens/s of a Llama-style step model (tests/models/llama.py: one
token and its position per run, the KV cache in state buffers) in headless Chromium, at two sizes
with random weights, and of the example site's text generator (example-site/models/lm.py with its
trained weights, the prompt a text's bytes): `site` built as kuma.toml builds it, with a `seq` dim
(the prompt in one run, then one byte per run), `site-static` for one byte per run only.

Each model is compiled for the "cpu" device class (software WebGPU), then tests/browser/decode.mjs
loads it in a fresh page, feeds the prompt (in one run with a dim, else its runs queued token by
token, only the last read back) and times it (prefill), then times the decode steps: each feeds the
last token back as a GPUBuffer and reads back 4 bytes (`run(..., { read: ["output0"] })`, awaited
every step, as a page showing tokens as they come would). The tokens are checked against PyTorch
eager stepping the same module, whose own step time on this machine's CPU is shown for scale.
Prints a Markdown table.
Not part of the test suite; uses tests/browser's playwright-core (cd tests/browser && npm ci).

    .venv/bin/python bench/decode_bench.py [--steps 100] [--models test small site site-static gpt2-size qwen-0.5b] [--site-prompt TEXT]
"""

import argparse
import copy
import dataclasses
import datetime
import importlib.util
import os
import platform
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "models")]

from browser_support import Browser  # noqa: E402
from kuma_build.compiler import compile_module  # noqa: E402
from llama import Llama  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from kuma_build.config import InputSpec  # noqa: E402
from support import model_config  # noqa: E402

PROMPT = [5, 9, 2, 33, 17]
SITE_PROMPT = "Return the "  # the page's default prompt; --site-prompt sets another


def random_llama(steps: int, **sizes):
    """tests/models/llama.py's Llama(**sizes) with seeded random weights, and PROMPT."""
    torch.manual_seed(0)
    return Llama(**sizes, context=len(PROMPT) + steps).eval(), PROMPT


def gpu_machine_model(name: str, steps: int):
    """A model of the GPU machine's decode benchmark (bench/gpu/dawn/decode.py: the same module, the
    same seeded weights, its context), and PROMPT."""
    return gpu_machine_benchmark().build(name, small=False), PROMPT


def gpu_machine_benchmark():
    spec = importlib.util.spec_from_file_location("dawn_decode", REPO / "bench" / "gpu" / "dawn" / "decode.py")
    source = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(source)
    return source


def site_lm(steps: int, text: str = SITE_PROMPT):
    """The example site's text generator with its trained weights, and text's bytes; its context is fixed at 256."""
    spec = importlib.util.spec_from_file_location("site_lm", REPO / "example-site" / "models" / "lm.py")
    source = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # registered: kuma reads its source
    spec.loader.exec_module(source)
    module = source.build_model().eval()
    module.load_state_dict(load_file(REPO / "example-site" / "weights" / "lm.safetensors"))
    assert source.CONTEXT == SITE_CONTEXT, "update SITE_CONTEXT to models/lm.py's CONTEXT"
    prompt = list(text.encode())
    if len(prompt) + steps > source.CONTEXT:
        raise SystemExit(f"the example site's LM holds {source.CONTEXT} positions: use --steps {source.CONTEXT - len(prompt)} or fewer")
    return module, prompt


# --models name -> (row label, a function of steps that returns (module, prompt tokens), the seq
# dim's maximum for a one-run prefill as kuma.toml declares it, or None: a static build, one token per run)
SITE_CONTEXT = 256  # example-site/models/lm.py's CONTEXT (site_lm checks it)
MODELS = {
    "test": ("test model (2 layers, dim 48)", partial(random_llama, vocab=67, dim=48, layers=2, heads=4, kv_heads=2, hidden=100), None),
    "small": ("small (4 layers, dim 256)", partial(random_llama, vocab=256, dim=256, layers=4, heads=8, kv_heads=2, hidden=688), None),
    "site": ("example site's LM (4 layers, dim 96, trained), seq dim: prompt in one run", site_lm, SITE_CONTEXT),
    "site-static": ("example site's LM, static: prompt a byte per run", site_lm, None),
    # the GPU machine's sizes (docs/benchmarks.md, "Decode on the GPU machine"): minutes each on SwiftShader
    "gpt2-size": ("GPT-2-small-sized (12 layers, dim 768, tied head, context 1024)", partial(gpu_machine_model, "gpt2-size"), None),
    "qwen-0.5b": ("Qwen2.5-0.5B-sized (24 layers, dim 896, f16 weights, context 1024)", partial(gpu_machine_model, "qwen-0.5b"), None),
}
PRECISION = {"qwen-0.5b": "f16"}  # as the GPU machine's benchmark builds it


def eager_tokens(module, prompt: list[int], steps: int) -> tuple[list[int], float]:
    """PyTorch eager's greedy tokens, and its ms per decode step (on this machine's CPU)."""
    tokens, decode_s = [], 0.0
    with torch.no_grad():
        for pos in range(len(prompt) + steps - 1):
            token = prompt[pos] if pos < len(prompt) else tokens[-1]
            started = time.perf_counter()
            next_token, _ = module(torch.tensor([[token]]), torch.tensor([pos]))
            if pos >= len(prompt):
                decode_s += time.perf_counter() - started
            if pos >= len(prompt) - 1:
                tokens.append(int(next_token))
    return tokens, 1000 * decode_s / (steps - 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=[m for m in MODELS if m not in ("gpt2-size", "qwen-0.5b")])
    parser.add_argument("--site-prompt", default=SITE_PROMPT, help="the example site's LM's prompt (its bytes and --steps: at most 256)")
    args = parser.parse_args()
    rows = []
    browser = Browser("decode.mjs", "--serve")
    try:
        with tempfile.TemporaryDirectory() as out:
            for key in args.models:
                name, build, seq_max = MODELS[key]
                module, prompt = build(args.steps, args.site_prompt) if build is site_lm else build(args.steps)
                precision = PRECISION.get(key, "f32")
                # the reference computes what Kuma does: with f16 weights, fp32 on the weights rounded to f16
                reference = gpu_machine_benchmark().f16_rounded(module, precision) if precision != "f32" else copy.deepcopy(module)
                inputs = (torch.tensor([[3]]), torch.tensor([0]))
                config = dataclasses.replace(model_config(module, inputs, name=f"llama{len(rows)}"), precision=precision)
                if seq_max:  # as example-site/kuma.toml: token [1, "seq"], pos ["seq"]
                    config = dataclasses.replace(config, dims={"seq": (1, seq_max)},
                                                 inputs=[InputSpec("token", (1, "seq"), "int64"), InputSpec("pos", ("seq",), "int64")])
                compiled = compile_module(module, config)
                folder = compiled.write(Path(out))
                reply = browser.request({"root": out, "model": folder.name, "prompt": prompt, "steps": args.steps,
                                         "prefill": bool(seq_max)}, f"decoding with {name}")
                if not reply["ok"]:
                    raise SystemExit(f"{name} failed in Chromium: {reply['error']}")
                expected, eager_ms = eager_tokens(reference, prompt, args.steps)
                same = reply["again"] == expected
                params = sum(p.numel() for p in module.parameters())
                timed = args.steps - 1  # the steps that feed a generated token back
                rows.append(f"| {name} | {params / 1e6:.2f} M | {compiled.stats['dispatches']} | "
                            f"{len(prompt) / (reply['prefillMs'] / 1000):.1f} | {timed / (reply['decodeMs'] / 1000):.1f} | {reply['decodeMs'] / timed:.2f} | {eager_ms:.2f} | {'yes' if same else 'NO'} |")
                adapter = reply["adapter"]
    finally:
        browser.close()
    print(f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; Chromium {browser.chromium}; "
          f"adapter {adapter['vendor']} {adapter['architecture']} {adapter['description']}".rstrip())
    print(f"- machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}")
    print(f"- a {len(PROMPT)}-token prompt ({len(args.site_prompt.encode())} bytes for the example site's LM), then {args.steps - 1} "
          "greedy decode steps after the first generated token\n")
    print(f"| model | parameters | dispatches per step | prefill tokens/s | decode tokens/s | ms per step | PyTorch eager ms per step (CPU, {torch.get_num_threads()} threads) | tokens = PyTorch |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
