"""Browser benchmark: Kuma's emitted module vs ONNX Runtime Web (WebGPU EP), same headless Chromium run.

For each model of tests/models (imported through tests/models/kuma.toml, so the weights are the
seeded ones `kuma build` uses), at the benchmark's input shapes: compile with Kuma, export the same
module and weights with torch.onnx, run both in one page (bench/browser/run.mjs), check both outputs against
PyTorch, and print a Markdown table (median latency, load time, bytes shipped, ratios).
Not part of the test suite. Setup: `pip install -e .[bench]` and `cd bench/browser && npm ci`.

    .venv/bin/python bench/browser_bench.py [--models mlp,gpt] [--json results.json]
"""

import argparse
import base64
import dataclasses
import datetime
import json
import os
import platform
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
BROWSER_DIR = REPO / "bench" / "browser"
sys.path.insert(0, str(REPO / "tests"))

from kuma_build import __version__ as KUMA_VERSION  # noqa: E402
from kuma_build.compiler import compile_module  # noqa: E402
from kuma_build.compiler.export import build_module, call_order, output_names  # noqa: E402
from kuma_build.config import InputSpec, load_project  # noqa: E402
from support import rel_l2  # noqa: E402

# model -> {input: (shape, dtype)}; the convnets below 224x224 so that SwiftShader (a CPU) runs them
# in seconds: ResNet-18 at 224x224 takes over 10 s a run here
MODELS = {
    "mlp": {"x": ((1, 50), "float32")},
    "resnet": {"image": ((1, 3, 112, 112), "float32")},
    "mobilenet": {"image": ((1, 3, 112, 112), "float32")},
    "transformer": {"src": ((1, 64, 96), "float32")},
    "gpt": {"tokens": ((1, 64), "int64")},
}
VOCAB = 211  # tests/models/gpt.py
TIMING = {"warmup": 3, "minRuns": 7, "maxRuns": 100, "budgetMs": 8000}  # budget and runs: rounds of both engines
CASE_TIMEOUT_S = 480  # per model, both engines
TOLERANCE = 1e-4  # relative L2 against PyTorch; Kuma's own tests hold 1e-5
NUMPY_DTYPES = {"float32": "<f4", "int32": "<i4", "int64": "<i8"}


@dataclasses.dataclass
class Prepared:
    name: str
    shapes: str
    expected: list  # PyTorch outputs, in output order
    engines: dict  # engine -> {path, inputs}, for run.mjs
    failures: dict  # engine -> reason, for engines that could not even be prepared


def encode(array: np.ndarray, dtype: str) -> dict:
    data = np.ascontiguousarray(array).astype(NUMPY_DTYPES[dtype]).tobytes()
    return {"dtype": dtype, "shape": list(array.shape), "data": base64.b64encode(data).decode()}


def decode(spec: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(spec["data"]), dtype=NUMPY_DTYPES[spec["dtype"]]).reshape(spec["shape"])


def model_case(name: str, project):
    """(module, config at the benchmark's shapes, seeded input tensors by name) for one model."""
    config = dataclasses.replace(project.models[name], inputs=[InputSpec(n, s, d) for n, (s, d) in MODELS[name].items()])
    net = build_module(config, project.root)
    generator = torch.Generator().manual_seed(7)
    tensors = {s.name: torch.randn(s.shape, generator=generator) if s.dtype == "float32"
               else torch.randint(0, VOCAB, s.shape, generator=generator) for s in config.inputs}
    return net, config, tensors


def kuma_inputs(tensors: dict) -> dict:
    return {n: encode(t.numpy(), "int32" if t.dtype == torch.int64 else "float32") for n, t in tensors.items()}


def prepare(name: str, project, work: Path) -> Prepared:
    """Compile with Kuma and export to ONNX, from the same module and weights."""
    net, config, tensors = model_case(name, project)
    order = call_order(net, config)
    args = tuple(tensors[n] for n in order)
    with torch.no_grad():
        eager = net(*args)
    expected = [t.numpy() for t in torch.utils._pytree.tree_leaves(eager)]
    shapes = ", ".join(f"{s.name} {'x'.join(map(str, s.shape))}" for s in config.inputs)
    prepared = Prepared(name, shapes, expected, {}, {})
    try:
        folder = compile_module(net, config).write(work / "kuma")
        prepared.engines["kuma"] = {"path": str(folder), "inputs": kuma_inputs(tensors)}
    except Exception as e:  # a model Kuma cannot compile is a result, not a crash
        prepared.failures["kuma"] = f"compile: {type(e).__name__}: {first_line(e)}"
    try:
        onnx_file = work / "onnx" / f"{name}.onnx"
        onnx_file.parent.mkdir(parents=True, exist_ok=True)
        torch.onnx.export(net, args, str(onnx_file), dynamo=True, input_names=order, external_data=False,
                          output_names=output_names(eager, config), verbose=False)
        ort_inputs = {n: encode(t.numpy(), "int64" if t.dtype == torch.int64 else "float32") for n, t in tensors.items()}
        prepared.engines["ort"] = {"path": str(onnx_file), "inputs": ort_inputs}
    except Exception as e:
        prepared.failures["ort"] = f"onnx export: {type(e).__name__}: {first_line(e)}"
    return prepared


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


def run_browser(cases: list, work: Path) -> tuple[dict, dict]:
    """(run.mjs hello, {(model, engine): result}); engines of cases without a reply are missing."""
    job = work / "job.json"
    job.write_text(json.dumps({"timing": TIMING, "timeoutMs": CASE_TIMEOUT_S * 1000, "cases": cases}))
    process = subprocess.Popen(["node", str(BROWSER_DIR / "run.mjs"), str(job)], cwd=BROWSER_DIR, stdout=subprocess.PIPE,
                               stderr=sys.stderr, text=True, start_new_session=True)
    lines = queue.Queue()

    def read():  # in a thread, so that a silent run.mjs can be timed out
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 90 + (CASE_TIMEOUT_S + 30) * len(cases)  # run.mjs keeps its own per-case deadline
    hello, results = {}, {}
    try:
        while True:
            try:
                line = lines.get(timeout=max(1.0, deadline - time.monotonic()))
            except queue.Empty:
                print("browser_bench: run.mjs missed its deadline; stopping it", file=sys.stderr)
                break
            if line is None:
                break
            reply = json.loads(line)
            if reply.get("ready"):
                hello = reply
            elif reply["ok"]:
                for engine, result in reply["engines"].items():
                    results[reply["model"], engine] = {**result, "adapter": reply["adapter"], "console": reply["console"]}
            else:  # the page failed or hung: both engines are out
                case = next(c for c in cases if c["model"] == reply["model"])
                results.update({(reply["model"], engine): reply for engine in case["engines"]})
    finally:
        stop(process)
    return hello, results


def stop(process: subprocess.Popen):
    """SIGTERM lets playwright close Chromium; the process group is killed if that hangs."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def check(result: dict, expected: list) -> tuple[float | None, str | None]:
    """(worst relative L2 error over the outputs, problem or None)."""
    actual = [decode(spec) for spec in result["outputs"].values()]
    if [a.shape for a in actual] != [e.shape for e in expected]:
        return None, f"output shapes {[a.shape for a in actual]} != {[e.shape for e in expected]}"
    error = max(rel_l2(a, e) for a, e in zip(actual, expected))
    return error, None if error <= TOLERANCE else f"wrong output: rel. L2 error {error:.2g}"


def outcome(prepared: Prepared, engine: str, result: dict | None) -> dict:
    """One engine's numbers for one model; `failed` is set when there are none."""
    failed = prepared.failures.get(engine)
    if failed is None and result is None:
        failed = "no result (the browser run stopped)"
    elif failed is None and not result["ok"]:
        failed = result["error"].splitlines()[0][:300]
    if failed:
        print(f"browser_bench: {prepared.name} on {engine} failed: {failed}", file=sys.stderr)
        return {"failed": failed}
    error, problem = check(result, prepared.expected)
    print(f"browser_bench: {prepared.name} on {engine}: rel. L2 error vs PyTorch {error if error is None else f'{error:.2g}'}"
          + (f" -- {problem}" if problem else ""), file=sys.stderr)
    return {"failed": None, "median": result["medianMs"], "load": result["loadMs"], "runs": result["runs"],
            "gzip": result["shipped"]["gzip"], "shipped": result["shipped"], "error": error, "problem": problem,
            "console": result["console"]}


def table(prepared: list, results: dict) -> tuple[str, list]:
    """The Markdown table, and one record per model and engine."""
    rows = ["| model | input | Kuma median | ORT Web median | **latency Kuma/ORT** | Kuma load | ORT Web load "
            "| Kuma shipped (gzip) | ORT Web shipped (gzip) | **size Kuma/ORT** | rel. L2 error Kuma / ORT | timed runs Kuma / ORT |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    records = []
    for p in prepared:
        k, o = (outcome(p, engine, results.get((p.name, engine))) for engine in ("kuma", "ort"))
        records += [{"model": p.name, "engine": engine, "input": p.shapes, **c} for engine, c in (("kuma", k), ("ort", o))]
        both = not k["failed"] and not o["failed"]
        cells = [p.name, p.shapes, latency(k), latency(o), f"**{k['median'] / o['median']:.2f}**" if both else "–",
                 ms(k, "load"), ms(o, "load"), size(k), size(o), f"**{k['gzip'] / o['gzip']:.2g}**" if both else "–",
                 f"{error(k)} / {error(o)}", f"{k.get('runs', '–')} / {o.get('runs', '–')}"]
        rows.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows), records


def ms(c: dict, key: str) -> str:
    return "–" if c["failed"] else f"{c[key]:,.1f} ms"


def latency(c: dict) -> str:
    if c["failed"]:
        return f"failed: {c['failed']}"
    return ms(c, "median") + (f" ({c['problem']})" if c["problem"] else "")


def size(c: dict) -> str:
    if c["failed"]:
        return "–"
    n = c["gzip"]
    return f"{n / 1000:,.1f} kB" if n < 1e6 else f"{n / 1e6:,.2f} MB"


def error(c: dict) -> str:
    return f"{c['error']:.1e}" if not c["failed"] and c["error"] is not None else "–"


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        name = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except Exception:
        name = platform.processor() or "unknown CPU"
    return f"{name}, {os.cpu_count()} cores"


def model_names(parser, text: str) -> list[str]:
    """The comma-separated --models list, checked against MODELS."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown models: {', '.join(unknown)}")
    return names


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    options = parser.parse_args()
    names = model_names(parser, options.models)
    if not (BROWSER_DIR / "node_modules" / "onnxruntime-web").is_dir():
        sys.exit(f"onnxruntime-web is not installed: run `npm ci` in {BROWSER_DIR}")
    warnings.filterwarnings("ignore")
    project = load_project(REPO / "tests" / "models" / "kuma.toml")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="kuma-bench-") as tmp:
        work = Path(tmp)
        prepared = []
        for name in names:
            print(f"browser_bench: preparing {name}", file=sys.stderr, flush=True)
            try:
                prepared.append(prepare(name, project, work))
            except Exception as e:  # the model itself failed in PyTorch: both engines are out
                reason = f"PyTorch: {type(e).__name__}: {first_line(e)}"
                prepared.append(Prepared(name, "", [], {}, {"kuma": reason, "ort": reason}))
        cases = [{"model": p.name, "engines": p.engines} for p in prepared if p.engines]
        hello, results = run_browser(cases, work)
    markdown, records = table(prepared, results)
    adapter = next((r["adapter"] for r in results.values() if r.get("ok") and r.get("adapter")), None)
    facts = {
        "date": datetime.date.today().isoformat(), "machine": cpu_model(),
        "chromium": hello.get("chromium", "?"), "onnxruntime-web": hello.get("ort", "?"), "torch": torch.__version__,
        "kuma": KUMA_VERSION, "load average (1 min) before / after": f"{load_before:.1f} / {os.getloadavg()[0]:.1f}",
        "webgpu adapter": f"{adapter['vendor']} {adapter['architecture']}" if adapter else "?",
        "timing": f"both engines in one page, run in turn: {TIMING['warmup']} warm-up runs each, then timed rounds "
                  f"until at least {TIMING['minRuns']} rounds and {TIMING['budgetMs'] / 1000:g} s (at most {TIMING['maxRuns']} rounds)",
    }
    print("\n".join(f"- {k}: {v}" for k, v in facts.items()) + "\n\n" + markdown)
    if options.json:
        options.json.write_text(json.dumps({"facts": facts, "results": records}, indent=1))


if __name__ == "__main__":
    main()
