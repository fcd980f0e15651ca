"""The Dawn benchmark (issue 12): full-size models through the browser's own WebGPU engine, in one go.

For each model of dawn_models.py (batch 1, fp32, random weights, built here from `transformers` classes):
  prepare   (one process per model, in parallel, CPU only) build the module, draw its inputs, compile
            it with Kuma (target "gpu") and export it with torch.onnx (dynamo)
  torch     PyTorch eager on the GPU with TF32 off: the reference output every engine is checked
            against, and its GPU time (CUDA events, median after warm-up)
  kuma      the emitted index.js in Node on Dawn (run.mjs): run() end to end, back to back, plus a
            per-dispatch profile from timestamp queries
  wgpu      the same folder through wgpu-py (kuma_build.bench: end to end, pass and back-to-back GPU)
  ort       ONNX Runtime Web's WebGPU EP on the same Dawn, for the ONNX export (run.mjs)
  compile   torch.compile(mode="reduce-overhead"), last (its compiles are the slow part): GPU time
Then Dawn's cost per dispatch (run.mjs probe), and one table: Markdown and JSON in --out, printed last.
Without CUDA (the local run, `--small` on SwiftShader) torch runs on the CPU and times the wall clock.
A step that fails is a cell of the table, not the end of the run; --deadline skips what is left.

    python bench/gpu/dawn/bench.py [--small] [--models a,b] [--out DIR] [--deadline S]
"""

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import dawn_models  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
# rel L2 against PyTorch eager (fp32) for a pass; kuma's own tests hold 1e-5 against CPU fp32, and f16
# weights are within docs/precision.md's bounds (ORT Web and torch.compile stay fp32 either way)
TOLERANCE = {"f32": 1e-4, "f16": 5e-3}
# exact stamps for the profile; and shader-f16, which dawn.node offers only with allow_unsafe_apis
# (Chrome offers it on this GPU without; a program asks for it only when it has f16 kernels)
DAWN_FLAGS = ["disable-dawn-features=timestamp_quantization", "enable-dawn-features=allow_unsafe_apis"]
ENGINES = ("kuma", "wgpu", "ort", "compile")  # beside PyTorch eager
STARTED = time.monotonic()


def say(*parts):
    print(f"[dawn-bench {time.monotonic() - STARTED:6.1f}s]", *parts, file=sys.stderr, flush=True)


def rel_l2(got: np.ndarray, want: np.ndarray) -> float:
    got, want = np.asarray(got, np.float64).ravel(), np.asarray(want, np.float64).ravel()
    if got.shape != want.shape or not np.isfinite(got).all():
        return float("inf")
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


# ---- prepare: one process per model ----

def prepare(case_name: str, small: bool, work: str, precision: str = "f32", onnx: bool = True, knobs: dict | None = None) -> dict:
    """Build, draw inputs, compile with Kuma (its kernels' constants set to `knobs`, gemm_knobs'),
    export ONNX. Runs in a worker process."""
    warnings.filterwarnings("ignore")
    apply_knobs(knobs or {})
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 6))
    from kuma_build.compiler import compile_module
    from kuma_build.config import InputSpec, ModelConfig
    case = dawn_models.named(small)[case_name]
    folder = Path(work) / case.name
    folder.mkdir(parents=True, exist_ok=True)
    net = dawn_models.instantiate(case)
    inputs = dawn_models.random_inputs(case)
    files = {}
    for name, tensor in inputs.items():
        files[name] = {"file": str(folder / f"input-{name}.bin"), "dtype": str(tensor.dtype).removeprefix("torch."),
                       "shape": list(tensor.shape)}
        tensor.numpy().tofile(files[name]["file"])
    done = {"model": case.name, "inputs": files, "errors": {}}
    started = time.perf_counter()
    try:
        config = ModelConfig(name=case.name, source=HERE / "dawn_models.py", factory=case.name, weights=None, precision=precision,
                             inputs=[InputSpec(n, tuple(s), d) for n, (s, d) in case.inputs.items()], outputs=None, section={}, target="gpu")
        compiled = compile_module(net, config)
        done["kuma"] = str(compiled.write(folder / "kuma"))
        done["kuma_compile_s"] = time.perf_counter() - started
    except Exception as e:
        done["errors"]["kuma"] = f"compile: {type(e).__name__}: {first_line(e)}"
    if not onnx:
        return done
    started = time.perf_counter()
    try:
        onnx_file = folder / f"{case.name}.onnx"
        with torch.no_grad():
            torch.onnx.export(net, tuple(inputs.values()), str(onnx_file), dynamo=True, input_names=list(inputs),
                              output_names=["output"], external_data=False, verbose=False)
        done["onnx"] = str(onnx_file)
        done["onnx_export_s"] = time.perf_counter() - started
    except Exception as e:
        done["errors"]["ort"] = f"onnx export: {type(e).__name__}: {first_line(e)}"
    return done


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]


# ---- torch ----

def timed_ms(fn, warmup: int, runs: int) -> float:
    """Median ms per call: CUDA events around each call on the GPU, the wall clock on the CPU."""
    for _ in range(warmup):
        fn()
    times = []
    if CUDA:
        torch.cuda.synchronize()
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(runs)]
        for start, end in events:
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize()
        times = [start.elapsed_time(end) for start, end in events]
    else:
        for _ in range(runs):
            started = time.perf_counter()
            fn()
            times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def torch_case(case, inputs: dict):
    net = dawn_models.instantiate(case).to(DEVICE)
    args = [torch.from_numpy(np.fromfile(s["file"], dtype=s["dtype"]).reshape(s["shape"])).to(DEVICE) for s in inputs.values()]
    return net, args


def run_eager(case, prepared: dict, runs: int) -> tuple[dict, np.ndarray]:
    net, args = torch_case(case, prepared["inputs"])
    with torch.no_grad():
        expected = net(*args).float().cpu().numpy()
        ms = timed_ms(lambda: net(*args), 3, runs)
    return {"eager_ms": ms}, expected


def run_compile(case, prepared: dict, expected: np.ndarray, runs: int) -> dict:
    net, args = torch_case(case, prepared["inputs"])
    started = time.perf_counter()
    compiled = torch.compile(net, mode="reduce-overhead")
    with torch.no_grad():
        for _ in range(3):  # compiles, then records the CUDA graph
            out = compiled(*args)
        compile_s = time.perf_counter() - started
        got = out.float().cpu().numpy()
        ms = timed_ms(lambda: compiled(*args), 3, runs)
    torch._dynamo.reset()
    return {"compile_ms": ms, "compile_rel_l2": rel_l2(got, expected), "compile_s": compile_s}


# ---- kuma through wgpu-py ----

def run_wgpu(prepared: dict, expected: np.ndarray, runs: int) -> dict:
    from kuma_build.bench import bench_folder
    from kuma_build.outfolder import read_program
    from kuma_build.webgpu import run_program
    folder = Path(prepared["kuma"])
    result = bench_folder(folder, runs=runs)
    program = read_program(folder)
    feed = {}
    for spec in program["inputs"]:
        given = prepared["inputs"][spec["name"]]
        feed[spec["name"]] = np.fromfile(given["file"], dtype=given["dtype"]).reshape(given["shape"]).astype(spec["dtype"])
    got = next(iter(run_program(program, feed, folder).values()))
    return {"wgpu_e2e_ms": result["e2e_ms"], "wgpu_gpu_ms": result["gpu_ms"], "wgpu_busy_ms": result["gpu_busy_ms"],
            "wgpu_rel_l2": rel_l2(got, expected), "wgpu_adapter": result["adapter"]}


# ---- Node on Dawn ----

def dawn_flags(options) -> list[str]:
    """DAWN_FLAGS, with --dawn-toggles' toggles in its one enable-dawn-features flag (dawn.node keeps
    only the last flag of a name)."""
    extra = [t for t in (getattr(options, "dawn_toggles", None) or "").split(",") if t]
    return [",".join([flag, *extra]) if flag.startswith("enable-dawn-features=") else flag for flag in DAWN_FLAGS]


def node_job(options, job: dict, work: Path, tag: str, timeout: float) -> dict:
    job = {**job, "dawnFlags": dawn_flags(options), "timing": options.timing}
    job_file, result_file = work / f"{tag}.job.json", work / f"{tag}.result.json"
    job_file.write_text(json.dumps(job))
    result_file.unlink(missing_ok=True)
    try:
        process = subprocess.run([options.node, str(HERE / "run.mjs"), str(job_file), str(result_file)], capture_output=True,
                                 text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout:.0f} s"}
    (work / f"{tag}.log").write_text(process.stdout + process.stderr)
    if not result_file.is_file():
        return {"ok": False, "error": f"node exited {process.returncode}: {(process.stderr or process.stdout).strip()[-300:]}"}
    return json.loads(result_file.read_text())


# ---- the run ----

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny configs of the same classes (the local run on SwiftShader)")
    parser.add_argument("--models", help="comma-separated names (default: the benchmark's models; dawn_models.probes' cases run only when named)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/kuma-dawn-bench")))
    parser.add_argument("--work", type=Path, help="built models, inputs and logs (default: a folder under --out's parent)")
    parser.add_argument("--node", default=os.environ.get("KUMA_NODE", "node"))
    parser.add_argument("--deadline", type=float, default=float("inf"), help="seconds: steps not started by then are skipped")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--precision", choices=["f32", "f16"], default="f32", help="Kuma's weight storage (f16: half the bytes, f16 math on shader-f16 adapters)")
    parser.add_argument("--runs", type=int, help="timed runs per engine (default 50; 5 with --small)")
    parser.add_argument("--dawn-toggles", default="", help="comma-separated Dawn toggles to enable too, e.g. vulkan_enable_f16_on_nvidia "
                        "(shader-f16 on NVIDIA's Vulkan driver, so f16 builds run their shader-f16 or subgroup-matrix kernels; "
                        "adapters.mjs lists what each toggle set offers)")
    parser.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated, of {','.join(ENGINES)} (PyTorch eager always runs: "
                        "it is the reference)")
    parser.add_argument("--gemm-knob", action="append", default=[], metavar="NAME=VALUE",
                        help="set a constant of kernels/gemm.py for Kuma's builds (as gemm_sweep.py's knobs), e.g. SPLIT_TRAFFIC=0, "
                        "or of another kernels module named before a dot, e.g. gemm_matrix.WEIGHT_LOADS=ahead, or a field of the "
                        "\"gpu\" device class, e.g. GPU.sliced_occupancy=2.0; VALUE a Python literal "
                        "(a bare word for a string constant); repeatable")
    options = parser.parse_args()
    knobs = gemm_knobs(parser, options.gemm_knob)
    engines = set(options.engines.split(","))
    if not engines <= set(ENGINES):
        parser.error(f"unknown engines {sorted(engines - set(ENGINES))}; from {', '.join(ENGINES)}")
    small = options.small
    runs = options.runs or (5 if small else 50)
    options.timing = {"warmup": 2 if small else 10, "minRuns": runs, "budgetMs": 500 if small else 2000}
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 against fp32
    torch.backends.cudnn.allow_tf32 = False
    warnings.filterwarnings("ignore")
    cases = dawn_models.named(small)
    names = options.models.split(",") if options.models else [c.name for c in dawn_models.cases(small)]
    unknown = [n for n in names if n not in cases]
    if unknown:
        parser.error(f"unknown models {unknown}; from {', '.join(cases)}")
    options.out.mkdir(parents=True, exist_ok=True)
    work = options.work or options.out.parent / (options.out.name + "-work")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {**environment(options), "precision": options.precision, "dawnFlags": dawn_flags(options), "gemmKnobs": knobs}
    say(json.dumps(env))

    # prepare, in parallel (CPU only: the workers never touch CUDA)
    workers = max(1, min(len(names), (os.cpu_count() or 2) // 2))
    rows = {n: {"model": n} for n in names}
    prepared = {}
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(prepare, n, small, str(work), options.precision, "ort" in engines, knobs): n for n in names}
        for future in concurrent.futures.as_completed(futures):
            name = futures[future]
            try:
                prepared[name] = future.result()
                rows[name]["errors"] = dict(prepared[name]["errors"])
                for key in ("kuma_compile_s", "onnx_export_s"):
                    rows[name][key] = prepared[name].get(key)
                say(f"prepared {name}: {prepared[name]['errors'] or 'ok'}")
            except Exception as e:
                rows[name]["errors"] = {"torch": f"prepare: {type(e).__name__}: {first_line(e)}"}
                say(f"prepare {name} failed: {e}")

    expected = {}
    late = lambda: time.monotonic() - STARTED > options.deadline

    def step(name: str, engine: str, fn):
        """One cell: fn() -> dict merged into the row; its failure is recorded, not raised."""
        if late():
            rows[name]["errors"][engine] = "skipped: past --deadline"
            return
        started = time.monotonic()
        try:
            rows[name].update(fn())
        except Exception as e:
            rows[name]["errors"][engine] = f"{type(e).__name__}: {first_line(e)}"
        say(f"{name} {engine}: {time.monotonic() - started:.1f}s {rows[name]['errors'].get(engine, 'ok')}")
        write(options.out, env, rows)

    for name in names:
        if name not in prepared:
            continue
        case, p = cases[name], prepared[name]

        def eager():
            timings, expected[name] = run_eager(case, p, runs)
            out_file = work / name / "expected.bin"
            expected[name].astype(np.float32).tofile(out_file)
            p["expected"] = {"file": str(out_file), "shape": list(expected[name].shape)}
            return timings
        step(name, "torch", eager)
        if name not in expected:
            continue
        if "kuma" in p and "kuma" in engines:
            step(name, "kuma", lambda: dawn_kuma(options, p, work, name, small))
        if "kuma" in p and "wgpu" in engines:
            step(name, "wgpu", lambda: run_wgpu(p, expected[name], runs))
        if "onnx" in p:
            step(name, "ort", lambda: dawn_ort(options, p, work, name, small))
    probe = node_job(options, {"engine": "probe"}, work, "probe", 120) if not late() else {"ok": False, "error": "skipped"}
    env["dispatch_probe"] = probe
    if not options.no_compile and "compile" in engines:
        for name in names:
            if name in expected:
                step(name, "compile", lambda: run_compile(cases[name], prepared[name], expected[name], runs))
    text = write(options.out, env, rows)
    print(text, flush=True)
    return 0


def knob_target(name: str):
    """(module or object, attribute) that a knob names: NAME is kernels/gemm.py's constant,
    MODULE.NAME kernels/MODULE.py's, GPU.field the "gpu" device class's field (devices.py: the cost
    models' occupancies, dispatch cost, split-sum folds)."""
    import importlib
    module, _, constant = name.rpartition(".")
    if module == "GPU":
        from kuma_build.devices import GPU
        return GPU, constant
    return importlib.import_module(f"kuma_build.compiler.kernels.{module or 'gemm'}"), constant


def apply_knobs(knobs: dict) -> None:
    """Set what gemm_knobs parsed, in this process (a build's worker)."""
    for name, value in knobs.items():
        target, attribute = knob_target(name)
        object.__setattr__(target, attribute, value)  # GPU is a frozen dataclass; a module takes it as setattr


def gemm_knobs(parser, given: list[str]) -> dict:
    """--gemm-knob NAME=VALUE, MODULE.NAME=VALUE or GPU.field=VALUE pairs as {name: value}; each
    name must be an upper-case constant of kernels/gemm.py or of kernels/MODULE.py, or a field of
    devices.py's DeviceClass."""
    import ast
    knobs = {}
    for pair in given:
        name, _, value = pair.partition("=")
        module, _, constant = name.rpartition(".")
        if module == "GPU":
            from dataclasses import fields
            from kuma_build.devices import DeviceClass
            if constant not in {f.name for f in fields(DeviceClass)}:
                parser.error(f"--gemm-knob {pair}: {constant!r} is not a field of kuma_build/devices.py's DeviceClass "
                             "(GPU.NAME=VALUE sets the \"gpu\" class's, e.g. GPU.sliced_occupancy=2.0)")
        else:
            path = f"kuma_build/compiler/kernels/{module or 'gemm'}.py"
            try:
                found = constant.isupper() and (module == "" or module.isidentifier()) and hasattr(knob_target(name)[0], constant)
            except ImportError:
                found = False
            if not found:
                parser.error(f"--gemm-knob {pair}: {constant or name!r} is not an upper-case constant of {path}; "
                             "give NAME=VALUE for kernels/gemm.py, MODULE.NAME=VALUE (e.g. gemm_matrix.WEIGHT_LOADS=start) "
                             "or GPU.field=VALUE (devices.py)")
        try:
            knobs[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            if not isinstance(getattr(knob_target(name)[0], constant), str):  # a string constant takes the bare word
                parser.error(f"--gemm-knob {pair}: {value!r} is not a Python literal (True, 0.003, (16, 32), ...)")
            knobs[name] = value
    return knobs


def dawn_kuma(options, p: dict, work: Path, name: str, small: bool) -> dict:
    job = {"engine": "kuma", "path": p["kuma"], "inputs": p["inputs"], "expected": p["expected"], "profile": True}
    result = node_job(options, job, work, f"{name}.kuma", 300 if small else 240)
    if not result["ok"]:
        raise RuntimeError(result["error"])
    add_rates(result.get("profile"), Path(p["kuma"]), result["program"])
    return {"dawn_ms": result["medianMs"], "dawn_min_ms": result["minMs"], "dawn_runs": result["runs"], "dawn_load_ms": result["loadMs"],
            "dispatches": result["dispatches"], "dawn_rel_l2": result["relL2"], "profile": result.get("profile"),
            "dawn_program": result["program"], "dawn_variant": result["variant"], "dawn_matrix_kernels": result["matrixKernels"], "dawn_adapter": result["adapter"]}


def add_rates(profile: dict | None, folder: Path, device_class: str) -> None:
    """GFLOP/s and GB/s per kernel: the compiler's per-dispatch estimates (the dispatch_costs of the
    device class in manifest.json, kuma_build/compiler/cost.py) over the profile's per-dispatch times."""
    from kuma_build.outfolder import read_manifest
    costs = ((read_manifest(folder) or {}).get("classes", {}).get(device_class) or {}).get("dispatch_costs")
    if not profile or not profile.get("kernels") or not costs or len(costs) != len(profile["dispatches"]):
        return
    totals = {}
    for (moved, flops), dispatch in zip(costs, profile["dispatches"]):
        total = totals.setdefault(dispatch["name"], [0, 0])
        total[0] += moved
        total[1] += flops
    for kernel in profile["kernels"]:
        moved, flops = totals[kernel["name"]]
        kernel["gbps"], kernel["gflops"] = moved / (kernel["us"] * 1e3), flops / (kernel["us"] * 1e3)


def dawn_ort(options, p: dict, work: Path, name: str, small: bool) -> dict:
    job = {"engine": "ort", "path": p["onnx"], "inputs": p["inputs"], "expected": p["expected"]}
    result = node_job(options, job, work, f"{name}.ort", 300 if small else 240)
    if not result["ok"]:
        raise RuntimeError(result["error"])
    return {"ort_ms": result["medianMs"], "ort_min_ms": result["minMs"], "ort_runs": result["runs"], "ort_load_ms": result["loadMs"],
            "ort_rel_l2": result["relL2"], "ort_version": result.get("ortVersion")}


def environment(options) -> dict:
    def command(*args):
        try:
            return subprocess.run(args, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "n/a"

    def package_version(name):
        modules = Path(os.environ.get("KUMA_DAWN_MODULES", HERE / "node_modules"))
        try:
            return json.loads((modules / name / "package.json").read_text())["version"]
        except OSError:
            return "n/a"
    import transformers
    import wgpu
    from kuma_build import __version__
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "small": options.small,
            "gpu": torch.cuda.get_device_name() if CUDA else platform.processor() or "cpu",
            "driver": command("nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader") if CUDA else "n/a",
            "cpus": os.cpu_count(), "torch": torch.__version__, "cuda": torch.version.cuda, "transformers": transformers.__version__,
            "wgpu": wgpu.__version__, "kuma": __version__, "node": command(options.node, "--version"),
            "webgpu (dawn.node)": package_version("webgpu"), "onnxruntime-web": package_version("onnxruntime-web"),
            "timing": options.timing, "dawn_flags": dawn_flags(options)}


def write(out: Path, env: dict, rows: dict) -> str:
    """results.json and the Markdown table; returns the Markdown."""
    (out / "dawn_bench.json").write_text(json.dumps({"env": env, "rows": list(rows.values())}, indent=1))
    text = markdown(env, list(rows.values()))
    (out / "dawn_bench.md").write_text(text)
    return text


def markdown(env: dict, rows: list[dict]) -> str:
    ms = lambda r, key: f"{r[key]:.3f}" if r.get(key) is not None else "–"
    err = lambda r, key: f"{r[key]:.1e}" if r.get(key) is not None else "–"
    ratio = lambda r, a, b: f"{r[a] / r[b]:.2f}×" if r.get(a) and r.get(b) else "–"
    lines = [f"## {env['gpu']}, driver {env['driver']}, {env['date']}{' (--small)' if env['small'] else ''}, Kuma weights {env.get('precision', 'f32')}{''.join(f', {k}={v}' for k, v in (env.get('gemmKnobs') or {}).items())}", "",
             f"torch {env['torch']} (CUDA {env['cuda']}), transformers {env['transformers']}, kuma {env['kuma']}, "
             f"Node {env['node']}, webgpu (dawn.node) {env['webgpu (dawn.node)']}, onnxruntime-web {env['onnxruntime-web']}, "
             f"wgpu-py {env['wgpu']}; {env['cpus']} CPUs", "",
             "| model | dispatches | Kuma run() on Dawn ms | Kuma GPU on Dawn, back to back ms | Kuma wgpu-py e2e ms | Kuma wgpu-py GPU ms "
             "| ORT Web (Dawn) ms | torch eager ms | torch.compile ms | Kuma Dawn / compile | Kuma Dawn / ORT Web "
             "| rel L2 Kuma Dawn / wgpu-py / ORT / compile |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        profile = r.get("profile") or {}
        lines.append(" | ".join([f"| {r['model']}", str(r.get("dispatches", "–")), ms(r, "dawn_ms"),
                                 f"{profile['backToBackMs']:.3f}" if profile.get("backToBackMs") else "–",
                                 ms(r, "wgpu_e2e_ms"), ms(r, "wgpu_gpu_ms"), ms(r, "ort_ms"), ms(r, "eager_ms"), ms(r, "compile_ms"),
                                 ratio(r, "dawn_ms", "compile_ms"), ratio(r, "dawn_ms", "ort_ms"),
                                 " / ".join(err(r, k) for k in ("dawn_rel_l2", "wgpu_rel_l2", "ort_rel_l2", "compile_rel_l2"))]) + " |")
    def variant(r):
        line = f"{r['model']} program {r.get('dawn_program', '?')}, {r['dawn_variant']} ({r['dawn_matrix_kernels']} kernels with a subgroup-matrix variant"
        instead = ((r.get("profile") or {}).get("insteadF16")) or {}
        if instead:  # the same pass and product dispatches on the shader-f16 variant
            line += (f"; one pass {r['profile']['passMs']:.3f} ms, {instead['passMs']:.3f} ms with the shader-f16 variant; its "
                     f"{instead['matrixDispatches']} dispatches {instead['matrixDispatchesUs']:.0f} µs, {instead['f16DispatchesUs']:.0f} µs")
        return line + ")"
    variants = [variant(r) for r in rows if r.get("dawn_variant")]
    if variants:  # which kernel variant the runtime picked (templates/runtime.js), and what the adapter offered
        adapter = next(r["dawn_adapter"] for r in rows if r.get("dawn_variant"))
        configs = ", ".join(f"{c['componentType']}x{c['componentType']}->{c['resultComponentType']} {c['M']}x{c['N']}x{c['K']}"
                            for c in adapter.get("subgroupMatrixConfigs") or []) or "none"
        lines += ["", f"Kuma's kernels on Dawn (flags {' '.join(env.get('dawn_flags', []))}): {'; '.join(variants)}. Adapter: subgroups "
                      f"{adapter.get('subgroupMinSize')}..{adapter.get('subgroupMaxSize')}, subgroup-matrix configs {configs}, "
                      f"shader-f16 {'shader-f16' in adapter['features']}."]
    tolerance = {k: TOLERANCE[env.get("precision", "f32") if k in ("dawn_rel_l2", "wgpu_rel_l2") else "f32"]
                 for k in ("dawn_rel_l2", "wgpu_rel_l2", "ort_rel_l2", "compile_rel_l2")}
    bad = [f"- {r['model']}: {k} rel L2 {r[k]:.1e} > {limit:g}" for r in rows
           for k, limit in tolerance.items() if r.get(k) is not None and not r[k] <= limit]
    errors = [f"- {r['model']} {engine}: {e}" for r in rows for engine, e in (r.get("errors") or {}).items()]
    if bad or errors:
        lines += ["", "Failures:", *bad, *errors]
    probe = env.get("dispatch_probe") or {}
    if probe.get("ok"):
        many, one = probe["dispatches1000"], probe["submit1"]
        gpu = f"{many['gpuMs']:.3f} ms GPU (pass stamps)" if many.get("gpuMs") is not None else "no stamps"
        lines += ["", f"Dawn per dispatch: 1000 tiny dispatches in one pass, one submit: {many['wallMs']:.3f} ms wall, {gpu}; "
                      f"one dispatch, one submit: {one['wallMs']:.3f} ms wall → **{probe['usPerDispatchWall']:.2f} µs per dispatch** "
                      f"(wall), {probe['usPerDispatchGpu']:.2f} µs (GPU); every dispatch ran: {probe['counted'] == probe['countedExpected']}"]
    elif probe:
        lines += ["", f"Dawn per dispatch: failed: {probe.get('error')}"]
    for r in rows:
        profile = r.get("profile") or {}
        if not profile.get("kernels"):
            continue
        lines += ["", f"{r['model']}: Dawn profile, one pass {profile['passMs']:.3f} ms, back to back {profile['backToBackMs']:.3f} ms, "
                      f"{r.get('dispatches')} dispatches each in a pass of its own {profile['dispatchSumMs']:.3f} ms:", "",
                  *kernel_table(profile)]
    return "\n".join(lines) + "\n"


def kernel_table(profile: dict, flops: bool = True) -> list[str]:
    """The profile's top kernels (each dispatch in a pass of its own, and each kernel's share of the
    back-to-back time) as Markdown table lines; the decode benchmark (decode.py) leaves out GFLOP/s."""
    total = profile["dispatchSumMs"] * 1e3
    rate = lambda k, key: f"{k[key]:,.0f}" if k.get(key) is not None else "–"
    head = ["kernel", "calls", "µs", "share", "back to back µs", *(["GFLOP/s"] if flops else []), "GB/s"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "--:|" * (len(head) - 1)]
    for k in profile["kernels"][:6]:
        b2b = f"{k['backToBackUs']:.1f}" if k.get("backToBackUs") is not None else "–"
        cells = [k["name"], str(k["calls"]), f"{k['us']:.1f}", f"{k['us'] / total:.0%}", b2b, *([rate(k, "gflops")] if flops else []), rate(k, "gbps")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":
    sys.exit(main())
