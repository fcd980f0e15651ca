"""`kuma bench`: time built models on the local WebGPU adapter, per kernel, with timestamp queries.

Each model folder runs through GpuModel (what `kuma verify` runs): warm-ups, then
    end-to-end  wall clock around one run: input upload, the compute pass, readback
    GPU         the compute pass's start and end stamps (feature "timestamp-query")
    GPU busy    runs back to back in one pass, a stamp after each, for at least BUSY_SECONDS
                ("timestamp-query-inside-passes"): the GPU at the clocks of steady work
                (an idle GPU runs the first runs after a pause at a fraction of its clock)
    per kernel  a stamp after every dispatch ("timestamp-query-inside-passes"); a
                dispatch takes the gap since the previous stamp, its median over runs
Each is its own set of runs, so stamps never slow the numbers they don't measure.
Without the features the columns fall back (GPU time, then per kernel) and the report
says so. GB/s and GFLOP/s divide manifest.json's per-dispatch bytes and flops
(compiler/cost.py, estimates) by those times. torch is never imported.
"""

import json
import statistics
import time
from pathlib import Path

import numpy as np

from kuma_build.errors import KumaError
from kuma_build.outfolder import program_classes, read_manifest, read_program
from kuma_build.webgpu import GpuModel, adapter_and_device, why_not_here

MAX_QUERIES = 4096  # wgpu's largest query set
BUSY_SECONDS = 0.2


def bench_folder(folder: Path, runs: int = 20, warmup: int = 3, seed: int = 0, device_class: str | None = None) -> dict:
    """Timings of one built model folder's kernels of `device_class` (default: the build's first, an
    f16 build's "<class>-f16" program where it has one): medians in ms, per-kernel rows in µs."""
    if not (folder / "index.js").is_file():
        raise KumaError(f"model {folder.name} has not been built; run `kuma build {folder.name}` first.", folder)
    device_class = device_class or program_classes(folder)[0]
    program = read_program(folder, device_class)
    costs = (read_manifest(folder) or {}).get("classes", {}).get(device_class, {}).get("dispatch_costs")
    adapter, device = adapter_and_device()
    inputs = random_inputs(program, seed)
    timing = "dispatch" if "timestamp-query-inside-passes" in device.features and len(program["dispatches"]) < MAX_QUERIES \
        else "pass" if "timestamp-query" in device.features else "wall"
    gpu = GpuModel(program, folder)
    try:
        for _ in range(warmup):
            gpu.run(inputs)
        wall = []
        for _ in range(runs):
            started = time.perf_counter()
            gpu.run(inputs)
            wall.append((time.perf_counter() - started) * 1e3)
        stamps = {"pass": [], "dispatch": []}
        for mode in {"wall": [], "pass": ["pass"], "dispatch": ["pass", "dispatch"]}[timing]:
            for _ in range(runs):
                gpu.run(inputs, timestamps=mode)
                stamps[mode].append(gpu.stamps)
        busy = None
        if timing == "dispatch":
            once = min(gpu.time_repeats(inputs, 3))
            repeats = min(MAX_QUERIES - 1, max(runs, int(BUSY_SECONDS * 1e9 / max(once, 1.0))))
            busy = statistics.median(gpu.time_repeats(inputs, repeats)[repeats // 2:]) / 1e6  # the later half: clocks settled
    finally:
        gpu.release()
    result = {"model": folder.name, "device_class": device_class, "adapter": f"{adapter.info['device']} ({adapter.info['backend_type']})", "runs": runs,
              "timing": timing, "dispatches": len(program["dispatches"]), "e2e_ms": statistics.median(wall),
              "gpu_ms": statistics.median((s[1] - s[0]) / 1e6 for s in stamps["pass"]) if stamps["pass"] else None,
              "gpu_busy_ms": busy,
              "kernels_ms": None, "kernels": []}
    if stamps["dispatch"]:
        gaps = np.diff(np.array(stamps["dispatch"]), axis=1)  # [run, dispatch] ns
        result["kernels"] = kernel_rows(program, costs, np.median(gaps, axis=0) / 1e3)
        result["kernels_ms"] = sum(row["us"] for row in result["kernels"]) / 1e3
    return result


def random_inputs(program: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs of the program's shapes: normal floats, and 0/1 integers (valid token ids); a
    dim (kuma.toml dims) at its max, the largest run the build serves."""
    rng = np.random.default_rng(seed)
    dims = program.get("dims", {})
    shape = lambda s: [dims[d]["max"] if isinstance(d, str) else d for d in s["shape"]]
    return {s["name"]: rng.standard_normal(shape(s), dtype=np.float32) if s["dtype"] == "float32"
            else rng.integers(0, 2, shape(s), dtype=np.int32) for s in program["inputs"]}


def kernel_rows(program: dict, costs: list | None, dispatch_us) -> list[dict]:
    """Per kernel name: calls, total µs, share, and GB/s and GFLOP/s where costs are known."""
    rows: dict[str, dict] = {}
    for i, (kernel, *_) in enumerate(program["dispatches"]):
        row = rows.setdefault(program["kernels"][kernel]["name"], {"calls": 0, "us": 0.0, "bytes": 0, "flops": 0})
        row["calls"] += 1
        row["us"] += float(dispatch_us[i])
        if costs:
            row["bytes"] += costs[i][0]
            row["flops"] += costs[i][1]
    total = sum(row["us"] for row in rows.values()) or 1.0
    table = []
    for name, row in sorted(rows.items(), key=lambda item: -item[1]["us"]):
        rate = lambda amount: amount / (row["us"] * 1e3) if costs and row["us"] > 0 else None  # per µs -> G per s
        table.append({"name": name, "calls": row["calls"], "us": row["us"], "share": row["us"] / total,
                      "bytes": row["bytes"] if costs else None, "flops": row["flops"] if costs else None,
                      "gbps": rate(row["bytes"]), "gflops": rate(row["flops"])})
    return table


def markdown(result: dict) -> str:
    """A heading line and the per-kernel Markdown table of one bench result."""
    gpu = f"{result['gpu_ms']:.3f} ms" if result["gpu_ms"] is not None else "n/a (adapter lacks timestamp-query)"
    lines = [f"[kuma] bench {result['model']} ({result['device_class']} kernels) on {result['adapter']}: {result['runs']} runs, end-to-end {result['e2e_ms']:.3f} ms "
             f"(median, wall clock incl. upload and readback), GPU {gpu} (pass timestamps)"
             + (f", {result['gpu_busy_ms']:.3f} ms back to back" if result.get("gpu_busy_ms") else "")]
    if not result["kernels"]:
        lines.append("[kuma] no per-kernel times: the adapter lacks timestamp-query-inside-passes, or the model has 4096 dispatches or more")
        return "\n".join(lines)
    number = lambda value: "-" if value is None else f"{value:.1f}"
    lines += ["", "| kernel | calls | total µs | share | GB/s | GFLOP/s |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in result["kernels"]:
        lines.append(f"| {row['name']} | {row['calls']} | {row['us']:.1f} | {row['share']:.1%} | {number(row['gbps'])} | {number(row['gflops'])} |")
    us = result["kernels_ms"] * 1e3
    known = all(row["bytes"] is not None for row in result["kernels"]) and us > 0
    total_rate = lambda key: f"{sum(row[key] for row in result['kernels']) / (us * 1e3):.1f}" if known else "-"
    lines.append(f"| **total** | {sum(row['calls'] for row in result['kernels'])} | {us:.1f} | 100.0% | "
                 f"{total_rate('bytes')} | {total_rate('flops')} |")
    return "\n".join(lines) + "\n"


def run_bench(project, names: list[str], runs: int, warmup: int, as_json: bool) -> int:
    """Each class's program of each model, reported; a program the adapter cannot run (an f16 build's
    tensor-core one without shader-f16, or over its workgroup memory) is reported as not run, as
    `kuma verify` does."""
    for name in names:
        folder = project.out_dir / name
        for device_class in program_classes(folder) if (folder / "index.js").is_file() else [None]:
            if device_class and (reason := why_not_here(read_program(folder, device_class))):
                print(json.dumps({"event": "bench", "model": name, "device_class": device_class, "not_run": reason}) if as_json
                      else f"[kuma] bench {name} ({device_class} kernels): not run: {reason}", flush=True)
                continue
            result = bench_folder(folder, runs, warmup, device_class=device_class)
            print(json.dumps({"event": "bench", **result}) if as_json else markdown(result), flush=True)
    return 0
