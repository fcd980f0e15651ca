"""Decode on the GPU machine (issue 10): greedy tokens/s of Llama-style step models through Dawn,
against PyTorch on the same GPU, and each model's bound.

The models are tests/models/llama.py (forward(token, pos): one token and its position per run, a
static KV cache in registered buffers updated with index_copy_, ending in argmax) at three sizes,
random weights from torch.manual_seed(0), built where the benchmark runs (no weights travel):

  demo-lm    the example site's text generator's size: bytes, dim 128, 4 layers, context 256
  gpt2-size  GPT-2 small's size: 12 layers, dim 768, 12 heads, vocab 50257, context 1024, the head
             tied to the embedding; SwiGLU 2048 wide holds GPT-2's 768 x 3072 MLP's weights (124 M)
  qwen-0.5b  Qwen2.5-0.5B's size: 24 layers, dim 896, 14 heads, 2 kv heads, SwiGLU 4864, vocab
             151936, tied, precision "f16" (494 M parameters, 1 GB of f16 weights)

The steps, one after another (a step that fails is a cell of the table, --deadline skips the rest):
  prepare  (worker processes, CPU) Kuma compiles each model (target "gpu"); meanwhile the main
           process builds the same modules for PyTorch
  probes   Dawn's device-to-device copy bandwidth, a compute kernel's read bandwidth and the cost
           per dispatch (run.mjs copy, read and probe), and torch's copy bandwidth
  eager    PyTorch eager on the GPU stepping the same module from the same prompt, free greedy,
           each token read back to the CPU as Kuma's loop reads it (fp32, TF32 off; the f16 model in
           f16, weights and arithmetic, as a PyTorch user runs it); also without the per-step read
  kuma     run.mjs's decode engine: the docs/generative.md loop in Node on Dawn (prompt one token
           per run, then each step feeds the token back as model.outputBuffer("token") and reads 4
           bytes, awaited), a warm-up generation then a timed one, and the GPU time of one step
           (run.mjs's profile: timestamp queries). Its tokens are checked against PyTorch eager
           fp32 (for the f16 model: with Kuma's f16-rounded weights) fed Kuma's own tokens: the
           share of steps whose argmax agrees, and whether all do.
  compile  torch.compile(mode="reduce-overhead") (CUDA graphs) stepping the same module, last
The bound of a decode step: the weight bytes a step reads (each parameter once at its stored
precision; of an untied embedding table one row) over
what a compute kernel on Dawn reads a second (16-byte loads; without that probe, Dawn's copy
bandwidth, bytes read plus written), plus Kuma's dispatches per step times Dawn's host cost per
dispatch. Markdown and JSON go to --out; the Markdown is printed last.

Here (no CUDA), tiny configs on SwiftShader prove the whole pipeline, torch on the CPU:

    VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json .venv/bin/python bench/gpu/dawn/decode.py --small

On the GPU machine, in one device call carrying .dawn (bench/gpu/dawn/pack.sh makes .dawn/kit.tar.xz):

    bash bench/gpu/dawn/run_on_device.sh decode

    python bench/gpu/dawn/decode.py [--small] [--models a,b] [--out DIR] [--deadline S] [--no-compile] [--gemm-knob NAME=VALUE ...]
"""

import argparse
import concurrent.futures
import copy
import json
import multiprocessing
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path[:0] = [str(ROOT), str(HERE), str(ROOT / "tests" / "models")]

import bench  # noqa: E402  (the Dawn benchmark: node_job, environment, say)
from llama import Llama  # noqa: E402

CUDA = bench.CUDA
DEVICE = bench.DEVICE
F16_MIN_VALUES = 1024  # docs/precision.md: matrix and embedding weights with at least this many values are stored f16

# name -> (Llama arguments, precision, head tied to the embedding)
CASES = {
    "demo-lm": (dict(vocab=256, dim=128, layers=4, heads=4, kv_heads=2, hidden=352, context=256), "f32", False),
    "gpt2-size": (dict(vocab=50257, dim=768, layers=12, heads=12, kv_heads=12, hidden=2048, context=1024), "f32", True),
    "qwen-0.5b": (dict(vocab=151936, dim=896, layers=24, heads=14, kv_heads=2, hidden=4864, context=1024), "f16", True),
}
SMALL = {
    "demo-lm": dict(vocab=67, dim=48, layers=2, heads=4, kv_heads=2, hidden=100, context=48),
    "gpt2-size": dict(vocab=500, dim=64, layers=2, heads=4, kv_heads=4, hidden=172, context=48),
    "qwen-0.5b": dict(vocab=1000, dim=64, layers=2, heads=4, kv_heads=2, hidden=172, context=48),
}
PROMPT, STEPS = 32, 200  # 8 and 24 with --small


def case(name: str, small: bool) -> tuple[dict, str, bool]:
    sizes, precision, tied = CASES[name]
    return (SMALL[name] if small else sizes), precision, tied


def build(name: str, small: bool) -> nn.Module:
    sizes, _, tied = case(name, small)
    torch.manual_seed(0)
    module = Llama(**sizes).eval()
    if tied:
        # N(0, 0.02), as GPT-2 and Qwen initialise it (initializer_range): with nn.Embedding's N(0, 1)
        # the residual stream is the input token's row, and a tied head predicts that token forever
        nn.init.normal_(module.embed.weight, std=0.02)
        module.head.weight = module.embed.weight
    return module


def prompt_tokens(name: str, small: bool, length: int) -> list[int]:
    generator = torch.Generator().manual_seed(7)
    return torch.randint(0, case(name, small)[0]["vocab"], (length,), generator=generator).tolist()


def stored_f16(module: nn.Module, precision: str) -> set[int]:
    """ids of the parameters Kuma stores as f16 (docs/precision.md)."""
    if precision != "f16":
        return set()
    return {id(m.weight) for m in module.modules() if isinstance(m, (nn.Linear, nn.Embedding)) and m.weight.numel() >= F16_MIN_VALUES}


def weight_bytes(module: nn.Module, precision: str) -> int:
    """Bytes of the weights a decode step reads, at their stored precision: every parameter once, but
    of an embedding table one row, unless the head is tied to it (then the head reads it all)."""
    f16 = stored_f16(module, precision)
    linear = {id(m.weight) for m in module.modules() if isinstance(m, nn.Linear)}
    rows = {id(m.weight): m.embedding_dim for m in module.modules() if isinstance(m, nn.Embedding) and id(m.weight) not in linear}
    return sum(rows.get(id(p), p.numel()) * (2 if id(p) in f16 else 4) for p in module.parameters())


def cache_bytes(module: nn.Module) -> int:
    return sum(b.numel() * b.element_size() for n, b in module.named_buffers() if n.endswith("_cache"))


# ---- prepare: Kuma's build, one worker process per model ----

def prepare(name: str, small: bool, work: str, knobs: dict | None = None) -> dict:
    warnings.filterwarnings("ignore")
    bench.apply_knobs(knobs or {})  # kernels' constants for an A/B (bench.py's --gemm-knob)
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 4))
    from kuma_build.compiler import compile_module
    from kuma_build.config import InputSpec, ModelConfig
    started = time.perf_counter()
    module = build(name, small)
    built_s = time.perf_counter() - started
    config = ModelConfig(name=name, source=ROOT / "tests" / "models" / "llama.py", factory="Llama", weights=None,
                         precision=case(name, small)[1], inputs=[InputSpec("token", (1, 1), "int64"), InputSpec("pos", (1,), "int64")],
                         outputs=["token", "logits"], section={}, target="gpu")
    compiled = compile_module(module, config)
    folder = compiled.write(Path(work) / name)
    return {"kuma": str(folder), "build_s": built_s, "kuma_compile_s": time.perf_counter() - started - built_s,
            "dispatches": compiled.stats["dispatches"], "kuma_weight_file_bytes": compiled.stats["weight_bytes"]}


# ---- PyTorch ----

def reset(module: nn.Module) -> None:
    for name, buffer in module.named_buffers():
        if name.endswith("_cache"):
            buffer.zero_()


def sync():
    if CUDA:
        torch.cuda.synchronize()


def generate(step, module: nn.Module, prompt: list[int], steps: int, read_each: bool = True, forced: list[int] | None = None) -> dict:
    """Greedy decoding with step(token, pos) -> (next token, logits), as Kuma's loop does it: the
    prompt one token per step, then each step feeds the last token back (on the GPU). read_each: the
    token comes to the CPU every step (Kuma's loop awaits it); else once at the end. forced: the
    tokens to feed after the prompt instead of the model's own (teacher forcing, for the check).
    Wall-clock ms per step, the device synchronised before each clock read."""
    reset(module)
    positions = [torch.tensor([p], device=DEVICE) for p in range(len(prompt) + steps)]
    fed = [torch.tensor([[t]], device=DEVICE) for t in prompt + (forced or [])]
    tokens = []
    with torch.no_grad():
        sync()
        started = time.perf_counter()
        for pos in range(len(prompt)):
            token, _ = step(fed[pos], positions[pos])
            token = token.clone()  # a CUDA graph's output is overwritten by its next replay
            if read_each:
                int(token)
        sync()
        prefill_ms = (time.perf_counter() - started) * 1e3 / len(prompt)
        tokens.append(token)
        started = time.perf_counter()
        for pos in range(len(prompt), len(prompt) + steps - 1):
            token, logits = step(fed[pos] if forced else token, positions[pos])
            token = token.clone()
            if read_each:
                int(token)
            tokens.append(token)
        sync()
        decode_ms = (time.perf_counter() - started) * 1e3 / (steps - 1)
    return {"tokens": [int(t) for t in tokens], "prefill_ms": prefill_ms, "decode_ms": decode_ms, "last_logits": logits.float().flatten().cpu()}


def timed_generate(step, module, prompt, steps, read_each=True) -> dict:
    """A warm-up generation, then the timed one."""
    generate(step, module, prompt, min(steps, 8), read_each)
    return generate(step, module, prompt, steps, read_each)


def f16_rounded(module: nn.Module, precision: str) -> nn.Module:
    """The fp32 module with the weights Kuma stores f16 rounded to f16: the function Kuma computes."""
    f16 = stored_f16(module, precision)
    rounded = copy.deepcopy(module)
    with torch.no_grad():
        for original, param in zip(module.parameters(), rounded.parameters()):
            if id(original) in f16:
                param.copy_(param.half().float())
    return rounded


def torch_copy_gbps() -> float | None:
    """torch's device-to-device copy of 1 GiB: GB/s, bytes read plus written (bench/gpu/device.py)."""
    if not CUDA:
        return None
    src = torch.rand(2 ** 28, device="cuda")
    dst = torch.empty_like(src)
    ms = bench.timed_ms(lambda: dst.copy_(src), 3, 20)
    return 2 * src.numel() * 4 / (ms * 1e6)


# ---- the run ----

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny configs of the same models (the local run on SwiftShader)")
    parser.add_argument("--models", help=f"comma-separated, from {', '.join(CASES)} (default: all)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/kuma-decode-bench")))
    parser.add_argument("--work", type=Path, help="built models and logs (default: a folder beside --out)")
    parser.add_argument("--node", default=os.environ.get("KUMA_NODE", "node"))
    parser.add_argument("--deadline", type=float, default=float("inf"), help="seconds: steps not started by then are skipped")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--steps", type=int, help=f"generated tokens per generation (default {STEPS}; 24 with --small)")
    parser.add_argument("--prompt", type=int, help=f"prompt tokens (default {PROMPT}; 8 with --small)")
    parser.add_argument("--dawn-toggles", default="", help="comma-separated Dawn toggles to enable too, as bench.py's")
    parser.add_argument("--gemm-knob", action="append", default=[], metavar="NAME=VALUE",
                        help="a constant of kernels/gemm.py (NAME) or kernels/MODULE.py (MODULE.NAME) for Kuma's builds, as bench.py's")
    options = parser.parse_args()
    small = options.small
    steps = options.steps or (24 if small else STEPS)
    prompt = options.prompt or (8 if small else PROMPT)
    options.timing = None  # run.mjs's decode engine times itself
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 against fp32
    torch.backends.cudnn.allow_tf32 = False
    warnings.filterwarnings("ignore")
    names = options.models.split(",") if options.models else list(CASES)
    if unknown := [n for n in names if n not in CASES]:
        parser.error(f"unknown models {unknown}; from {', '.join(CASES)}")
    options.out.mkdir(parents=True, exist_ok=True)
    work = options.work or options.out.parent / (options.out.name + "-work")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    knobs = bench.gemm_knobs(parser, options.gemm_knob)
    env = bench.environment(options)
    env.update(prompt=prompt, steps=steps, gemmKnobs=knobs)
    bench.say(json.dumps(env))
    rows = {n: {"model": n, "errors": {}} for n in names}
    late = lambda: time.monotonic() - bench.STARTED > options.deadline

    def step(name: str | None, what: str, fn):
        """One cell: fn() -> dict merged into the row (or env); its failure is recorded, not raised."""
        target = rows[name] if name else env
        errors = target.setdefault("errors", {})
        if late():
            errors[what] = "skipped: past --deadline"
            return
        started = time.monotonic()
        try:
            target.update(fn())
        except Exception as e:
            errors[what] = f"{type(e).__name__}: {bench.first_line(e)}"
        bench.say(f"{name or 'machine'} {what}: {time.monotonic() - started:.1f}s {errors.get(what, 'ok')}")
        write(options.out, env, rows)

    pool = concurrent.futures.ProcessPoolExecutor(len(names), mp_context=multiprocessing.get_context("spawn"))
    futures = {n: pool.submit(prepare, n, small, str(work), knobs) for n in names}

    # the same modules for PyTorch, while Kuma compiles
    modules, prompts = {}, {n: prompt_tokens(n, small, prompt) for n in names}
    for name in names:
        def describe():
            module = build(name, small)
            precision = case(name, small)[1]
            modules[name] = module
            return {"precision": precision, "parameters": sum(p.numel() for p in module.parameters()),
                    "weight_bytes": weight_bytes(module, precision), "cache_bytes": cache_bytes(module)}
        step(name, "build", describe)

    for name in names:
        def wait():
            prepared = futures[name].result()
            bench.say(f"prepared {name}: {prepared}")
            return prepared
        step(name, "prepare", wait)
    pool.shutdown()

    # the machine's two costs, with nothing else running
    def dawn(engine: str, job: dict, tag: str, timeout: float) -> dict:
        result = bench.node_job(options, {"engine": engine, **job}, work, tag, timeout)
        if not result["ok"]:
            raise RuntimeError(result["error"])
        return result
    step(None, "dawn copy", lambda: {"dawn_copy": dawn("copy", {"bytes": (64 if small else 512) << 20}, "copy", 120)})
    step(None, "dawn read", lambda: {"dawn_read": dawn("read", {"bytes": (64 if small else 512) << 20}, "read", 120)})
    step(None, "dawn probe", lambda: {"dispatch_probe": dawn("probe", {}, "probe", 120)})
    step(None, "torch copy", lambda: {"torch_copy_gbps": torch_copy_gbps()})

    def for_torch(name: str) -> nn.Module:
        """A copy of the module on the GPU as PyTorch runs it: the f16 model in f16, weights and arithmetic."""
        module = copy.deepcopy(modules[name])
        return (module.half() if case(name, small)[1] == "f16" else module).to(DEVICE)

    def eager(name: str) -> dict:
        timed = for_torch(name)
        prompt = prompts[name]
        read = timed_generate(timed, timed, prompt, steps)
        free = timed_generate(timed, timed, prompt, steps, read_each=False)
        return {"eager_ms": read["decode_ms"], "eager_prefill_ms": read["prefill_ms"], "eager_unread_ms": free["decode_ms"],
                "eager_tokens": read["tokens"]}
    for name in names:
        if name in modules:
            step(name, "eager", lambda: eager(name))

    def kuma(name: str) -> dict:
        job = {"path": rows[name]["kuma"], "prompt": prompts[name], "steps": steps, "rounds": 2, "profile": True}
        result = dawn("decode", job, f"{name}.decode", 300)
        bench.add_rates(result.get("profile"), Path(rows[name]["kuma"]), result["deviceClass"])
        # the check: PyTorch eager fp32 (Kuma's f16-rounded weights) fed Kuma's own tokens
        reference = f16_rounded(modules[name], case(name, small)[1]).to(DEVICE)
        forced = generate(reference, reference, prompts[name], steps, read_each=False, forced=result["tokens"][:-1])
        agree = [a == b for a, b in zip(forced["tokens"], result["tokens"])]
        logits_error = bench.rel_l2(result["lastLogits"], forced["last_logits"].numpy())
        return {"dawn_ms": result["decodeMsMean"], "dawn_median_ms": result["decodeMsMedian"], "dawn_tokens_per_s": result["decodeTokensPerS"],
                "dawn_prefill_tokens_per_s": result["prefillTokensPerS"], "dawn_first_round_ms": result["firstRoundDecodeMsMedian"],
                "dawn_load_ms": result["loadMs"], "dawn_dispatches": result["dispatches"], "dawn_repeatable": result["repeatable"],
                "dawn_adapter": result["adapter"], "dawn_device_class": result["deviceClass"], "profile": result.get("profile"),
                "dawn_tokens": result["tokens"],
                "agreement": sum(agree) / len(agree), "first_disagreement": agree.index(False) if not all(agree) else None,
                "logits_rel_l2": logits_error,
                "same_as_free_eager": result["tokens"] == rows[name].get("eager_tokens")}  # the f16 model's eager runs f16 math
    for name in names:
        if "kuma" in rows[name] and name in modules:
            step(name, "kuma", lambda: kuma(name))

    def compiled(name: str) -> dict:
        module = for_torch(name)
        for buffer_name, buffer in module.named_buffers():
            if buffer_name.endswith("_cache"):
                torch._dynamo.mark_static_address(buffer)  # the caches keep their address: CUDA graphs update them in place
        skipped = torch._dynamo.utils.counters["inductor"]["cudagraph_skips"]
        started = time.perf_counter()
        fn = torch.compile(module, mode="reduce-overhead")

        def step_fn(token, pos):
            torch.compiler.cudagraph_mark_step_begin()
            return fn(token, pos)
        generate(step_fn, module, prompts[name], 4)  # compiles, then records the CUDA graph
        compile_s = time.perf_counter() - started
        timed = timed_generate(step_fn, module, prompts[name], steps)
        skipped = torch._dynamo.utils.counters["inductor"]["cudagraph_skips"] - skipped  # 0: it ran as CUDA graphs
        torch._dynamo.reset()
        return {"compile_ms": timed["decode_ms"], "compile_prefill_ms": timed["prefill_ms"], "compile_s": compile_s,
                "compile_tokens": timed["tokens"], "compile_same_as_eager": timed["tokens"] == rows[name].get("eager_tokens"),
                "compile_cudagraph_skips": skipped}
    if not options.no_compile:
        for name in sorted(names, key=lambda n: n != "gpt2-size"):  # the target's model first, in case --deadline comes
            if name in modules:
                step(name, "compile", lambda: compiled(name))
    print(write(options.out, env, rows), flush=True)
    return 0


def bound_ms(env: dict, row: dict) -> float | None:
    """weight bytes / Dawn's read bandwidth (else its copy bandwidth) + dispatches x Dawn's host cost per dispatch."""
    gbps = bandwidth(env)[1]
    per_dispatch = (env.get("dispatch_probe") or {}).get("usPerDispatchWall")
    if not gbps or per_dispatch is None or not row.get("weight_bytes") or not row.get("dispatches"):
        return None
    return row["weight_bytes"] / (gbps * 1e6) + row["dispatches"] * per_dispatch / 1e3


def bandwidth(env: dict) -> tuple[str, float | None]:
    """(which, GB/s) the bound divides by: a kernel's reads where the probe ran and checked, else the copy's."""
    read = env.get("dawn_read") or {}
    return ("read", read["gbps"]) if read.get("same") and read.get("gbps") else ("copy", (env.get("dawn_copy") or {}).get("gbps"))


def write(out: Path, env: dict, rows: dict) -> str:
    for row in rows.values():
        row["bound_ms"] = bound_ms(env, row)
    (out / "decode_bench.json").write_text(json.dumps({"env": env, "rows": list(rows.values())}, indent=1))
    text = markdown(env, list(rows.values()))
    (out / "decode_bench.md").write_text(text)
    return text


def markdown(env: dict, rows: list[dict]) -> str:
    num = lambda value, form=".3f": format(value, form) if value is not None else "–"
    ratio = lambda a, b: f"{a / b:.2f}×" if a and b else "–"
    lines = [f"## Decode: {env['gpu']}, driver {env['driver']}, {env['date']}{' (--small)' if env['small'] else ''}"
             f"{''.join(f', {k}={v}' for k, v in (env.get('gemmKnobs') or {}).items())}", "",
             f"torch {env['torch']} (CUDA {env['cuda']}), kuma {env['kuma']}, Node {env['node']}, webgpu (dawn.node) "
             f"{env['webgpu (dawn.node)']}; {env['cpus']} CPUs; {env['prompt']}-token prompt, then {env['steps']} greedy tokens", "",
             "| model | parameters | weights read per step | dispatches per step | Kuma decode tokens/s | Kuma ms/step | Kuma GPU ms/step "
             "| bound ms/step | **Kuma / bound** | Kuma prefill tokens/s | torch eager ms/step | torch.compile ms/step "
             "| **Kuma / eager** | Kuma / compile | tokens = eager |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"]
    for r in rows:
        profile = r.get("profile") or {}
        if r.get("agreement") is None:
            same = "–"
        elif r["agreement"] == 1:
            same = "yes" + ("" if r.get("dawn_repeatable", True) else " (reset() not repeatable)")
        else:
            same = f"{r['agreement']:.1%} of steps (first differs at {r['first_disagreement']})"
        if r.get("logits_rel_l2") is not None:
            same += f"; logits rel L2 {r['logits_rel_l2']:.1e}"
        params = f"{r['parameters'] / 1e6:.3g} M" + (" (f16)" if r.get("precision") == "f16" else "") if r.get("parameters") else "–"
        weights = f"{r['weight_bytes'] / 1e6:,.3g} MB" if r.get("weight_bytes") else "–"
        lines.append(" | ".join([f"| {r['model']}", params, weights, str(r.get("dispatches", "–")), num(r.get("dawn_tokens_per_s"), ".1f"),
                                 num(r.get("dawn_ms")), num(profile.get("passMs")), num(r.get("bound_ms")),
                                 f"**{ratio(r.get('dawn_ms'), r.get('bound_ms'))}**", num(r.get("dawn_prefill_tokens_per_s"), ".1f"),
                                 num(r.get("eager_ms")), num(r.get("compile_ms")), f"**{ratio(r.get('dawn_ms'), r.get('eager_ms'))}**",
                                 ratio(r.get("dawn_ms"), r.get("compile_ms")), same]) + " |")
    copy_ = env.get("dawn_copy") or {}
    probe = env.get("dispatch_probe") or {}
    read = env.get("dawn_read") or {}
    which = "a compute kernel's read bandwidth" if bandwidth(env)[0] == "read" else "Dawn's copy bandwidth"
    lines += ["", f"Bound = weights read per step / {which} + dispatches × Dawn's host cost per dispatch "
                  f"({num(probe.get('usPerDispatchWall'), '.2f')} µs; {num(probe.get('usPerDispatchGpu'), '.2f')} µs of GPU time). "
                  f"Dawn reads {num(read.get('gbps'), ',.0f')} GB/s in a compute kernel (16-byte loads, "
                  f"{read.get('bytes', 0) / 2 ** 20:.0f} MiB, checked: {read.get('same', '–')}) and copies {num(copy_.get('gbps'), ',.0f')} GB/s "
                  f"(read + written, copyBufferToBuffer of {copy_.get('bytes', 0) / 2 ** 20:.0f} MiB); torch's 1 GiB copy: "
                  f"{num(env.get('torch_copy_gbps'), ',.0f')} GB/s."]
    errors = [f"- {r['model']} {what}: {e}" for r in rows for what, e in (r.get("errors") or {}).items()]
    errors += [f"- {what}: {e}" for what, e in (env.get("errors") or {}).items()]
    if errors:
        lines += ["", "Failures:", *errors]
    for r in rows:
        profile = r.get("profile") or {}
        if not profile.get("kernels"):
            continue
        lines += ["", f"{r['model']}: one step on Dawn, one pass {profile['passMs']:.3f} ms, back to back {profile['backToBackMs']:.3f} ms; "
                      f"KV cache {r.get('cache_bytes', 0) / 1e6:,.3g} MB (attention reads all of it); top kernels, each dispatch in a pass of its own:", "",
                  *bench.kernel_table(profile, flops=False)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
