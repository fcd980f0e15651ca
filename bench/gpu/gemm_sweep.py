"""Sweep the tiled GEMM's tile and split-K over ResNet-18's convolutions and a large matmul.

The tile cost model (kernels/gemm.py: cost) guesses; this measures. `build` (here, where torch
compiles) writes one program per (shape, tile, split) with the weights as inputs, so the folders
carry no weights; `run` (on the GPU machine) times each with pass timestamps and prints, per
shape, every variant and what the cost model would pick. docs/performance.md has the results.

    python bench/gpu/gemm_sweep.py build bench/gpu/sweep [--picked-only] [--knob STEP_FUNCTION=True,False]
    python bench/gpu/gemm_sweep.py run bench/gpu/sweep [--runs 10]
"""

import argparse
import ast
import json
from dataclasses import replace
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

# (name, input shape NCHW, weight shape, stride, padding): ResNet-18 at 1x3x224x224
CONVS = [
    ("conv1 3-64 k7s2 112", (1, 3, 224, 224), (64, 3, 7, 7), 2, 3),
    ("l1 64-64 k3 56", (1, 64, 56, 56), (64, 64, 3, 3), 1, 1),
    ("l2 128-128 k3 28", (1, 128, 28, 28), (128, 128, 3, 3), 1, 1),
    ("l2 64-128 k1s2 28", (1, 64, 56, 56), (128, 64, 1, 1), 2, 0),
    ("l3 256-256 k3 14", (1, 256, 14, 14), (256, 256, 3, 3), 1, 1),
    ("l4 512-512 k3 7", (1, 512, 7, 7), (512, 512, 3, 3), 1, 1),
    ("l4 256-512 k3s2 7", (1, 256, 14, 14), (512, 256, 3, 3), 2, 1),
]
MATMULS = [("matmul 4096", 4096, 4096, 4096)]
TILES = [(32, 32), (32, 64), (64, 64), (64, 128), (128, 64), (128, 128)]
SPLITS = [1, 2, 4, 8, 16, 32]
HEAT_SECONDS = 0.2  # of GPU work before each timing: an idle H100 drops its SM clock to 345 MHz
TIMED_SECONDS = 0.1  # of back-to-back runs timed per variant


def build(out: Path, picked_only: bool, knobs: dict) -> None:
    import torch
    import torch.nn.functional as F

    from kuma_build.compiler import compile_module
    from kuma_build.compiler.kernels import gemm
    from kuma_build.devices import GPU
    from kuma_build.config import InputSpec, ModelConfig

    class Conv(torch.nn.Module):
        def __init__(self, stride, padding):
            super().__init__()
            self.stride, self.padding = stride, padding

        def forward(self, x, w):
            return F.conv2d(x, w, stride=self.stride, padding=self.padding)

    class MatMul(torch.nn.Module):
        def forward(self, x, w):
            return x @ w

    cases = [(name, Conv(stride, pad), x, w, (w[0], x[2] // stride * x[3] // stride, w[1] * w[2] * w[3]))
             for name, x, w, stride, pad in CONVS]
    cases += [(name, MatMul(), (m, k), (k, n), (m, n, k)) for name, m, n, k in MATMULS]
    choose_split, choose_tile = gemm.choose_split, gemm.choose_tile  # the cost model's picks; forced below
    index = []
    for case, (name, net, x_shape, w_shape, (rows, cols, depth)) in enumerate(cases):
        specs = [InputSpec("x", x_shape, "float32"), InputSpec("w", w_shape, "float32")]
        config = ModelConfig(f"case{case}", Path(__file__), "", None, "f32", specs, None, {}, target="gpu")
        picked_split = choose_split(GPU, 1, rows, cols, depth)
        picked_tile = choose_tile(gemm.Gemm(1, rows, cols, depth, None, None, None, splits=picked_split, device=GPU))
        splits = [s for s in SPLITS if s == 1 or depth >= s * gemm.STEP * gemm.MIN_SPLIT_STEPS]
        runs = [(tile, split, {}) for tile in TILES for split in ([1] if name.startswith("matmul") else splits)]
        runs += [(picked_tile, picked_split, {knob: value}) for knob, values in knobs.items() for value in values]
        for tile, split, setting in runs:
            if picked_only and (tile, split) != (picked_tile, picked_split):
                continue
            gemm.choose_tile = lambda g, tile=tile: tile
            gemm.choose_split = lambda *shape, split=split: split
            saved = {knob: getattr(gemm, knob) for knob in setting}
            for knob, value in setting.items():
                setattr(gemm, knob, value)
            folder = f"case{case}-{tile[0]}x{tile[1]}-s{split}" + "".join(f"-{k}={v}" for k, v in setting.items())
            compile_module(net, replace(config, name=folder)).write(out / "programs")
            for knob, value in saved.items():
                setattr(gemm, knob, value)
            index.append({"case": name, "tile": tile, "split": split, "folder": folder, "setting": setting,
                          "picked": tile == picked_tile and split == picked_split and not setting, "flops": 2 * rows * cols * depth})
        print(f"{name}: cost model picks {picked_tile} split {picked_split}", flush=True)
    (out / "index.json").write_text(json.dumps(index, indent=1))


def run(out: Path, runs: int, results: Path, heater_case: str = "l4 512") -> None:
    """Time every program of out/index.json; the first variant of heater_case (a case name's start)
    keeps the GPU busy before each timing."""
    from kuma_build.bench import random_inputs
    from kuma_build.outfolder import read_program
    from kuma_build.webgpu import GpuModel

    index = json.loads((out / "index.json").read_text())
    # the heater: GPU work with a tiny readback (a late convolution for the GEMM sweep)
    heater_folder = out / "programs" / next(e["folder"] for e in index if e["case"].startswith(heater_case))
    heater = GpuModel(read_program(heater_folder), heater_folder)
    heater_inputs = random_inputs(heater.program)
    heater_ns = min(heater.time_repeats(heater_inputs, 3))
    print("| shape | tile | split | GPU µs (median) | TFLOP/s | cost model's pick |\n| --- | --- | ---: | ---: | ---: | --- |", flush=True)
    best = {}
    for entry in index:
        folder = out / "programs" / entry["folder"]
        program = read_program(folder)
        gpu = GpuModel(program, folder)
        try:
            inputs = random_inputs(program)
            once = min(gpu.time_repeats(inputs, 3))
            heater.time_repeats(heater_inputs, min(2000, max(3, int(HEAT_SECONDS * 1e9 / heater_ns))))
            times = gpu.time_repeats(inputs, min(2000, max(runs, int(TIMED_SECONDS * 1e9 / once))))
        finally:
            gpu.release()
        us = statistics.median(times[len(times) // 2:]) / 1e3  # the later half: clocks have settled
        entry["us"] = us
        if entry["case"] not in best or us < best[entry["case"]]["us"]:
            best[entry["case"]] = entry
        print(f"| {entry['case']} | {entry['tile'][0]}x{entry['tile'][1]} | {entry['split']} {entry['setting'] or ''} | {us:.1f} | "
              f"{entry['flops'] / us / 1e6:.2f} | {'picked' if entry['picked'] else ''} |", flush=True)
    print("\n| shape | best tile | best split | best µs | picked µs |\n| --- | --- | ---: | ---: | ---: |")
    for case, entry in best.items():
        picked = next((e for e in index if e["case"] == case and e["picked"]), None)
        print(f"| {case} | {entry['tile'][0]}x{entry['tile'][1]} | {entry['split']} | {entry['us']:.1f} | {picked['us'] if picked else float('nan'):.1f} |")
    results.write_text(json.dumps(index, indent=1))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["build", "run"])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--results", type=Path, help="run: where to write results.json (default: the folder)")
    parser.add_argument("--picked-only", action="store_true", help="build: only the cost model's tile and split")
    parser.add_argument("--knob", action="append", default=[], metavar="NAME=V1,V2",
                        help="build: also the picked tile with each value of a gemm.py constant (Python literals)")
    args = parser.parse_args()
    if args.mode == "build":
        knobs = {name: [ast.literal_eval(v) for v in values.split(",")] for name, values in (k.split("=") for k in args.knob)}
        build(args.folder, args.picked_only, knobs)
    else:
        run(args.folder, args.runs, args.results or args.folder / "results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
