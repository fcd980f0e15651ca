"""The GPU benchmark, run by bench/gpu/run_on_device.sh on the lent H100/H200 (docs/performance.md).

In one process: check the WebGPU adapter is the NVIDIA Vulkan driver with the features we use;
measure the card's two ceilings (device-to-device copy bandwidth counting bytes read and written;
fp32 matmul peak with TF32 off, 8192^3); run `kuma bench` on the models prebuilt in bench/gpu/out;
run PyTorch eager CUDA fp32 (TF32 off) on the same models, weights and inputs, timed with CUDA
events; check the outputs agree; print one table. Everything also goes to $OUT as JSON and Markdown.
Without CUDA (a local dry run) torch runs on the CPU and the ceilings are skipped.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from kuma_build import __version__  # noqa: E402
from kuma_build.bench import bench_folder, markdown, random_inputs  # noqa: E402
from kuma_build.compiler.export import build_module, call_order  # noqa: E402
from kuma_build.config import load_project  # noqa: E402
from kuma_build.devices import F16_PROGRAM  # noqa: E402
from kuma_build.outfolder import program_classes, read_program  # noqa: E402
from kuma_build.webgpu import GpuModel, adapter_and_device  # noqa: E402

WANTED_FEATURES = ("shader-f16", "subgroup", "timestamp-query", "timestamp-query-inside-passes")
CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"


def timed(fn, runs: int, warmup: int = 3) -> list[float]:
    """Milliseconds per call: CUDA events around each call (host clock on the CPU)."""
    for _ in range(warmup):
        fn()
    if not CUDA:
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            fn()
            times.append((time.perf_counter() - started) * 1e3)
        return times
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(runs)]
    torch.cuda.synchronize()
    for start, end in events:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return [start.elapsed_time(end) for start, end in events]


def ceilings() -> dict:
    if not CUDA:
        return {}
    n = 256 << 20  # 1 GiB of fp32, far past the L2
    src, dst = torch.randn(n, device="cuda"), torch.empty(n, device="cuda")
    copy_ms = statistics.median(timed(lambda: dst.copy_(src), 20))
    del src, dst
    size = 8192
    a, b = torch.randn(size, size, device="cuda"), torch.randn(size, size, device="cuda")
    mm_ms = statistics.median(timed(lambda: torch.mm(a, b), 10))
    return {"copy_gbps": 2 * 4 * n / (copy_ms * 1e6), "copy_ms": copy_ms,
            "fp32_gflops": 2 * size**3 / (mm_ms * 1e6), "fp32_mm_ms": mm_ms}


def check_adapter() -> dict:
    import wgpu
    adapter, device = adapter_and_device()
    info = dict(adapter.info)
    missing = [f for f in WANTED_FEATURES if f not in adapter.features]
    nvidia = info.get("vendor_id") == 0x10DE or "nvidia" in (str(info.get("vendor")) + str(info.get("device"))).lower()
    return {"wgpu": wgpu.__version__, "adapter": info, "features_missing": missing, "nvidia": nvidia,
            "device_features": sorted(device.features)}


def torch_eager(project, name: str, inputs: dict, runs: int) -> tuple[dict, list]:
    model = project.models[name]
    net = build_module(model, project.root).to(DEVICE)
    args = [torch.from_numpy(inputs[n]).to(DEVICE) for n in call_order(net, model)]
    args = [a.long() if a.dtype == torch.int32 else a for a in args]  # token ids, as torch's embedding takes them
    host = [a.cpu() for a in args]
    with torch.no_grad(), torch.device(DEVICE):  # tensors made inside forward (e.g. torch.arange) on the GPU too
        gpu_ms = statistics.median(timed(lambda: net(*args), runs))

        def end_to_end():  # upload, forward, readback: what kuma's end-to-end time covers
            outputs = net(*[a.to(DEVICE) for a in host])
            return [o.cpu() for o in torch.utils._pytree.tree_leaves(outputs)]
        end_to_end()
        wall = []
        for _ in range(runs):
            started = time.perf_counter()
            expected = end_to_end()
            wall.append((time.perf_counter() - started) * 1e3)
    return {"torch_ms": gpu_ms, "torch_e2e_ms": statistics.median(wall)}, expected


def rel_l2(got: np.ndarray, want: np.ndarray) -> float:
    diff = got.astype(np.float64) - want.astype(np.float64)
    return float(np.linalg.norm(diff) / max(np.linalg.norm(want.astype(np.float64)), 1e-30))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="*")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/kuma-gpu-bench")))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 against fp32: no tensor-core tf32 on either side
    torch.backends.cudnn.allow_tf32 = False

    env = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "kuma": __version__, "torch": torch.__version__,
           "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name() if CUDA else "cpu"}
    try:
        env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                       capture_output=True, text=True).stdout.strip()
    except OSError:
        env["driver"] = "n/a"
    env.update(check_adapter())
    print(json.dumps(env, indent=1), flush=True)
    if CUDA and not env["nvidia"]:
        print("ERROR: the WebGPU adapter is not the NVIDIA driver; the numbers would be meaningless", flush=True)
        return 1
    env["ceilings"] = ceilings()
    print("ceilings:", json.dumps(env["ceilings"]), flush=True)

    project = load_project(Path(__file__).with_name("kuma.toml"))
    results, tables = [], []
    for name in args.models or list(project.models):
        folder = project.out_dir / name
        try:
            # an f16 build with a "-f16" program runs twice: its f16-math kernels (wgpu has no subgroup
            # matrices), then the widened program (f32 kernels, what every other device takes)
            classes = program_classes(folder)
            for label, device_class in [(name, classes[0])] + [(f"{name} (widened)", c) for c in classes[1:2] if classes[0].endswith(F16_PROGRAM)]:
                program = read_program(folder, device_class)
                row = dict(bench_folder(folder, runs=args.runs, device_class=device_class), model=label)
                tables.append(markdown(row))
                print(tables[-1], flush=True)
                inputs = random_inputs(program)  # the inputs bench_folder ran
                timings, expected = torch_eager(project, name, inputs, args.runs)
                row.update(timings)
                gpu = GpuModel(program, folder)
                try:
                    actual = gpu.run(inputs)
                finally:
                    gpu.release()
                row["rel_l2"] = max(rel_l2(got, want.numpy()) for got, want in zip(actual.values(), expected))
                results.append(row)
        except Exception as e:  # one model's failure must not cost the others' numbers
            row = {"model": name, "error": f"{type(e).__name__}: {e}"}
            print(f"ERROR {name}: {row['error']}", flush=True)
            results.append(row)
        (args.out / "results.json").write_text(json.dumps({"env": env, "results": results}, indent=1))
    (args.out / "kuma_bench.md").write_text("\n".join(tables))
    print(summary(env, results), flush=True)
    return 0


def summary(env: dict, results: list[dict]) -> str:
    """The one table of the run, then the two probes against the ceilings."""
    lines = [f"## {env['gpu']}, driver {env['driver']}, {env['date']}",
             f"torch {env['torch']} (CUDA {env['cuda']}), wgpu {env['wgpu']}, kuma {env['kuma']}; "
             f"adapter {env['adapter'].get('device')} ({env['adapter'].get('backend_type')})", "",
             "| model | dispatches | kuma e2e ms | kuma GPU ms | kuma GPU ms back to back | torch eager ms | torch e2e ms | kuma GPU / torch | kuma e2e / torch e2e | rel L2 |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    ms = lambda value: "-" if value is None else f"{value:.3f}"
    ratio = lambda a, b: "-" if a is None or not b else f"{a / b:.2f}"
    for r in results:
        if "error" in r:
            lines.append(f"| {r['model']} | error: {r['error'][:80]} | | | | | | | | |")
            continue
        lines.append(f"| {r['model']} | {r['dispatches']} | {ms(r['e2e_ms'])} | {ms(r['gpu_ms'])} | {ms(r.get('gpu_busy_ms'))} | {ms(r['torch_ms'])} | "
                     f"{ms(r['torch_e2e_ms'])} | {ratio(r['gpu_ms'], r['torch_ms'])} | {ratio(r['e2e_ms'], r['torch_e2e_ms'])} | {r['rel_l2']:.1e} |")
    ceiling = env.get("ceilings") or {}
    if ceiling:
        lines += ["", f"ceilings: copy {ceiling['copy_gbps']:.0f} GB/s (read + write), fp32 matmul {ceiling['fp32_gflops'] / 1e3:.1f} TFLOP/s (TF32 off)"]
    for r in results:
        rows = r.get("kernels") or []
        if not rows or not ceiling or rows[0]["gflops"] is None:
            continue
        top = rows[0]  # the kernel that takes the most time
        lines.append(f"{r['model']}: top kernel {top['name']} {top['share']:.0%} of GPU time, {top['gflops']:.0f} GFLOP/s "
                     f"= {top['gflops'] / ceiling['fp32_gflops']:.1%} of fp32 peak, {top['gbps']:.0f} GB/s "
                     f"= {top['gbps'] / ceiling['copy_gbps']:.1%} of copy bandwidth")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
