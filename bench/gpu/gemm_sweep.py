"""Sweep the tiled GEMM's tile and split-K over ResNet-18's convolutions, a large matmul and the
linear layers of BERT-base and ViT-B/16.

The tile cost model (kernels/gemm.py: cost) guesses; this measures. `build` (here, where torch
compiles) writes one program per (shape, tile, split[, knob]) with the weights as inputs, so the
folders carry no weights; `run` (on the GPU machine) times each with pass timestamps and prints,
per shape, every variant and what the cost model would pick, then the best time per shape for the
default kernel and each knob value. docs/performance.md has the results.

A knob is a module constant of kernels/gemm.py (VECTOR_LOADS, DOUBLE_BUFFER, STEP, K_GROUPS, ...) set
for one program (a setting: one or several): it is timed on each tile of the shape's grid that fits,
at the split the cost model gives that tile (with --near-splits also at half and twice that split),
where it changes the kernel's code (from the default's and the earlier settings'), and so is the
default kernel, for a like-for-like comparison (with --knob-grid-only only there and at the cost
model's pick, not at every tile and split of the shapes with FULL_GRID_ROWS).

    python bench/gpu/gemm_sweep.py build bench/gpu/sweep [--cases bert,vit] [--picked-only] [--knob VECTOR_LOADS=True]
        [--setting VECTOR_LOADS=True,DOUBLE_BUFFER=True] [--near-splits] [--knob-grid-only] [--tiles 32x32,64x64]
    python bench/gpu/gemm_sweep.py run bench/gpu/sweep [--runs 10]
"""

import argparse
import ast
import json
from contextlib import contextmanager
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
# (name, rows M, K, N): BERT-base's linear layers at seq 128 and 512 and ViT-B/16's at 197 tokens,
# activations [M, K] times a [K, N] weight plus a bias: a linear layer's constant weight is stored
# packed [K, N] (passes/constants.py), so this is its kernel (merged queries, keys and values:
# passes/merge_products.py)
LINEARS = [("qkv", 768, 2304), ("attention out", 768, 768), ("ffn up", 768, 3072), ("ffn down", 3072, 768)]
TRANSFORMERS = [(f"{model} M{m} {name} {k}x{n}", m, k, n) for model, m in (("bert", 128), ("vit", 197), ("bert", 512))
                for name, k, n in LINEARS]
FULL_GRID_ROWS = (128, 512)  # ViT's 197 rows: only the knob grid (each tile at its split)
TILES = [(32, 32), (32, 64), (64, 64), (64, 128), (128, 64), (128, 128)]
TRANSFORMER_TILES = [(32, 32), (32, 64), (64, 32), (64, 64), (64, 128), (128, 64), (128, 128)]
SPLITS = [1, 2, 4, 8, 16, 32]
HEAT_SECONDS = 0.2  # of GPU work before each timing: an idle H100 drops its SM clock to 345 MHz
TIMED_SECONDS = 0.1  # of back-to-back runs timed per variant


def build(out: Path, picked_only: bool, settings: list[dict], only: list[str], near_splits: bool = False,
          knob_grid_only: bool = False, only_tiles: list[tuple[int, int]] | None = None) -> None:
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

    class Linear(torch.nn.Module):
        def forward(self, x, w, b):
            return x @ w + b

    # (name, module, input shapes, (rows, cols, depth), tiles, whether to time every tile and split)
    cases = [(name, Conv(stride, pad), [x, w], (w[0], x[2] // stride * x[3] // stride, w[1] * w[2] * w[3]), TILES, True)
             for name, x, w, stride, pad in CONVS]
    cases += [(name, MatMul(), [(m, k), (k, n)], (m, n, k), TILES, False) for name, m, n, k in MATMULS]
    cases += [(name, Linear(), [(m, k), (k, n), (n,)], (m, n, k), TRANSFORMER_TILES, m in FULL_GRID_ROWS)
              for name, m, k, n in TRANSFORMERS]
    cases = [case for case in cases if not only or any(case[0].startswith(prefix) for prefix in only)]
    if only_tiles:  # the grids' tiles (the cost model's pick is timed wherever it is)
        cases = [(*case[:4], [t for t in case[4] if t in only_tiles], case[5]) for case in cases]
    choose_split, choose_tile = gemm.choose_split, gemm.choose_tile  # the cost model's picks; forced below
    index = []
    for case, (name, net, shapes, (rows, cols, depth), tiles, full) in enumerate(cases):
        specs = [InputSpec(n, shape, "float32") for n, shape in zip("xwb", shapes)]
        config = ModelConfig(f"case{case}", Path(__file__), "", None, "f32", specs, None, {}, target="gpu")
        sliced = gemm.sliced_shape(GPU, rows, cols)  # an f32 linear layer's (matmul.py: sliced)
        picked_split = choose_split(GPU, 1, rows, cols, depth, sliced=sliced)
        picked_tile = choose_tile(gemm.Gemm(1, rows, cols, depth, None, None, None, splits=picked_split, device=GPU, sliced=sliced))

        def splits_of(tile):
            """The splits of K the sweep times for a tile (each slice at least MIN_SPLIT_STEPS steps)."""
            return [s for s in SPLITS if gemm.fits(GPU, *tile) and (s == 1 or depth >= s * gemm.STEP * gemm.MIN_SPLIT_STEPS)]

        def knob_grid():
            """Each tile at the split the cost model gives it (under the current knobs), and at half
            and twice that split with near_splits."""
            grid = []
            for tile in (tile for tile in tiles if splits_of(tile)):
                split = min(splits_of(tile), key=lambda s: (gemm.cost(GPU, 1, rows, cols, depth, *tile, s), s))
                grid += [(tile, s) for s in splits_of(tile) if s == split or near_splits and s in (split // 2, 2 * split)]
            return grid

        if name.startswith("matmul"):
            pairs = [(tile, 1) for tile in tiles]
        elif full and not (knob_grid_only and settings):
            pairs = [(tile, split) for tile in tiles for split in splits_of(tile)]
        else:
            pairs = []
        knob_pairs = []
        for setting in settings:  # the default kernel is timed on every pair a knob is
            with knob_set(gemm, setting):
                knob_pairs.append(list(dict.fromkeys(knob_grid())))
        pairs = list(dict.fromkeys([(picked_tile, picked_split)] + pairs + [p for grid in knob_pairs for p in grid]))
        runs = [(tile, split, {}) for tile, split in pairs]
        runs += [(tile, split, setting) for setting, grid in zip(settings, knob_pairs) for tile, split in grid]
        built = {}  # (tile, split) -> the kernels of the programs built for it: a setting that changes none is not timed
        for tile, split, setting in runs:
            if picked_only and (tile, split) != (picked_tile, picked_split):
                continue
            gemm.choose_tile = lambda g, tile=tile: tile
            gemm.choose_split = lambda *shape, split=split, **_: split
            folder = f"case{case}-{tile[0]}x{tile[1]}-s{split}" + "".join(f"-{k}={v}" for k, v in setting.items())
            with knob_set(gemm, setting):
                compiled = compile_module(net, replace(config, name=folder))
            code = [k["code"] for k in compiled.program["kernels"]]
            if setting and code in built.get((tile, split), []):
                continue
            built.setdefault((tile, split), []).append(code)
            compiled.write(out / "programs")
            index.append({"case": name, "tile": tile, "split": split, "folder": folder, "setting": setting,
                          "picked": tile == picked_tile and split == picked_split and not setting, "flops": 2 * rows * cols * depth})
        gemm.choose_tile, gemm.choose_split = choose_tile, choose_split
        print(f"{name}: cost model picks {picked_tile} split {picked_split}; {sum(e['case'] == name for e in index)} programs", flush=True)
    (out / "index.json").write_text(json.dumps(index, indent=1))
    print(f"{len(index)} programs", flush=True)


@contextmanager
def knob_set(module, setting: dict):
    """The module's constants set to `setting` inside the block, restored after it."""
    saved = {knob: getattr(module, knob) for knob in setting}
    for knob, value in setting.items():
        setattr(module, knob, value)
    try:
        yield
    finally:
        for knob, value in saved.items():
            setattr(module, knob, value)


def run(out: Path, runs: int, results: Path, heater_case: str = "l4 512") -> None:
    """Time every program of out/index.json; the first variant of heater_case (a case name's start)
    keeps the GPU busy before each timing."""
    from kuma_build.bench import random_inputs
    from kuma_build.outfolder import read_program
    from kuma_build.webgpu import GpuModel

    index = json.loads((out / "index.json").read_text())
    # the heater: GPU work with a tiny readback (a late convolution for the GEMM sweep; else the
    # largest product built)
    heater_entry = next((e for e in index if e["case"].startswith(heater_case)), None) or max(index, key=lambda e: e["flops"])
    heater_folder = out / "programs" / heater_entry["folder"]
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
        print(f"| {case} | {entry['tile'][0]}x{entry['tile'][1]} | {entry['split']} {entry['setting'] or ''} | {entry['us']:.1f} | "
              f"{picked['us'] if picked else float('nan'):.1f} |")
    print_knobs(index)
    results.write_text(json.dumps(index, indent=1))


def print_knobs(index: list[dict]) -> None:
    """Per shape, the best time of the default kernel and of each knob value, over the same
    (tile, split) pairs as the knob's (and the default's best over all its pairs), with the tile
    and split where each was best."""
    settings = list(dict.fromkeys(json.dumps(e["setting"], sort_keys=True) for e in index if e["setting"]))
    if not settings:
        return
    print("\n| shape | default best µs (all) | " + " | ".join(f"default µs / {s} µs (same tiles)" for s in settings) + " |")
    print("| --- | ---: |" + " ---: |" * len(settings))
    for case in dict.fromkeys(e["case"] for e in index):
        entries = [e for e in index if e["case"] == case]
        default = {(tuple(e["tile"]), e["split"]): e for e in entries if not e["setting"]}
        cells = [describe(min(default.values(), key=lambda e: e["us"]))]
        for setting in settings:
            knob = [e for e in entries if json.dumps(e["setting"], sort_keys=True) == setting]
            same = [default[(tuple(e["tile"]), e["split"])] for e in knob if (tuple(e["tile"]), e["split"]) in default]
            if knob and same:
                cells.append(f"{describe(min(same, key=lambda e: e['us']))} / {describe(min(knob, key=lambda e: e['us']))}")
            else:
                cells.append("")
        print(f"| {case} | " + " | ".join(cells) + " |")
    print_layers(index, settings)


def print_layers(index: list[dict], settings: list[str]) -> None:
    """Per model and row count (bert M128, ...), the four linear layers' times summed: the cost
    model's picks, the default's best, and each setting's best (over its tiles)."""
    groups = {}
    for e in index:
        if e["case"].startswith(("bert", "vit")):
            groups.setdefault(" ".join(e["case"].split()[:2]), []).append(e)
    if not groups:
        return
    print("\n| layer's products | picked µs | default best µs | " + " | ".join(f"{s} best µs" for s in settings) + " |")
    print("| --- | ---: | ---: |" + " ---: |" * len(settings))
    for group, entries in groups.items():
        cases = list(dict.fromkeys(e["case"] for e in entries))

        def total(keep) -> str:
            best = [min((e["us"] for e in entries if e["case"] == case and keep(e)), default=float("nan")) for case in cases]
            return f"{sum(best):.1f}"
        cells = [total(lambda e: e["picked"]), total(lambda e: not e["setting"])]
        cells += [total(lambda e, s=s: json.dumps(e["setting"], sort_keys=True) == s) for s in settings]
        print(f"| {group} | " + " | ".join(cells) + " |")


def describe(entry: dict) -> str:
    return f"{entry['us']:.1f} ({entry['tile'][0]}x{entry['tile'][1]} s{entry['split']})"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["build", "run"])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--results", type=Path, help="run: where to write results.json (default: the folder)")
    parser.add_argument("--picked-only", action="store_true", help="build: only the cost model's tile and split")
    parser.add_argument("--cases", default="", help="build: only the shapes whose names start so (comma-separated: bert,vit,l4)")
    parser.add_argument("--knob", action="append", default=[], metavar="NAME=V1,V2",
                        help="build: also each value of a gemm.py constant (Python literals), each tile at its split")
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=V,NAME2=V2",
                        help="build: also these gemm.py constants together (as --knob does one)")
    parser.add_argument("--near-splits", action="store_true", help="build: each setting's tiles also at half and twice the split the cost model gives them")
    parser.add_argument("--tiles", default="", help="build: only these tiles in the grids (comma-separated: 32x32,64x64)")
    parser.add_argument("--knob-grid-only", action="store_true", help="build: the default kernel only where a setting is timed and at the cost model's pick")
    args = parser.parse_args()
    if args.mode == "build":
        settings = [{name: ast.literal_eval(v)} for name, values in (k.split("=") for k in args.knob) for v in values.split(",")]
        settings += [{name: ast.literal_eval(v) for name, v in (pair.split("=") for pair in s.split(","))} for s in args.setting]
        build(args.folder, args.picked_only, settings, [c for c in args.cases.split(",") if c], args.near_splits, args.knob_grid_only,
              [tuple(int(x) for x in t.split("x")) for t in args.tiles.split(",") if t])
    else:
        run(args.folder, args.runs, args.results or args.folder / "results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
