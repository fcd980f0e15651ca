"""Sweep the attention kernels over the transformer shapes of issue 12 (docs/performance.md).

For BERT-base at 128 and 512 tokens, ViT-B/16's 197 tokens and GPT-2's causal 128 (12 heads of
64), `build` (here, where torch compiles) writes one program per kernel variant with q, k and v as
inputs, so the folders carry no weights: the register-tiled kernel (kernels/attention.py:
flash_tiled, the default) with each count of query rows per workgroup and of key splits that fits
(tiled16x2: two groups of threads a query tile, each walking its own key tiles), the kernel it replaced
(flash_split, setting "kernel": "flash_split") with each of its counts, and the row-per-workgroup
kernel before that. `run` (on the GPU machine, with wgpu-py: bench/gpu/run_on_device.sh runs it
when the folder exists) times each with gemm_sweep.py's timing and prints a table per shape; "tile"
is query rows x keys per tile (flash_tiled) or x key splits (flash_split) per workgroup, "split"
flash_tiled's key splits, and "picked" marks tiled_shape's choice, what the
compiler emits.

    python bench/gpu/attention_sweep.py build bench/gpu/attention_sweep
    python bench/gpu/attention_sweep.py run bench/gpu/attention_sweep [--runs 10]
"""

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import gemm_sweep  # noqa: E402

HEATER = "bert 512"  # the case whose first variant keeps the GPU busy between timings
# (name, heads, query rows, keys, head dim, causal)
SHAPES = [
    ("bert 128", 12, 128, 128, 64, False),
    ("bert 512", 12, 512, 512, 64, False),
    ("vit 197", 12, 197, 197, 64, False),
    ("gpt2 128 causal", 12, 128, 128, 64, True),
]


def build(out: Path) -> None:
    import torch
    import torch.nn.functional as F

    from kuma_build.compiler import compile_module
    from kuma_build.compiler.kernels import attention
    from kuma_build.config import InputSpec, ModelConfig
    from kuma_build.devices import GPU

    class Attention(torch.nn.Module):
        def __init__(self, causal: bool):
            super().__init__()
            self.causal = causal

        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)

    saved = attention.TILED, attention.tiled_rows, attention.flash_rows, attention.FLASH_MIN_ROWS, attention.tiled_splits
    # (folder suffix, setting, tile, TILED, rows, key splits): rows None is a row per workgroup
    variants = ([(f"tiled{rows}" + (f"x{splits}" if splits > 1 else ""), {}, (rows, attention.TILED_KEYS), True, rows, splits)
                 for rows in attention.TILED_ROWS for splits in range(1, attention.TILED_SPLITS + 1) if attention.splits_fit(GPU, rows, splits)]
                + [(f"split{rows}", {"kernel": "flash_split"}, (rows, attention.FLASH_THREADS // rows), False, rows, 1)
                   for rows in attention.FLASH_ROWS]
                + [("row", {"kernel": "row per workgroup"}, (1, attention.SIZE), False, None, 1)])
    index = []
    for case, (name, heads, length, keys, dim, causal) in enumerate(SHAPES):
        specs = [InputSpec(n, (1, heads, rows, dim), "float32") for n, rows in (("q", length), ("k", keys), ("v", keys))]
        config = ModelConfig(f"attention{case}", Path(__file__), "", None, "f32", specs, None, {}, target="gpu")
        picked, picked_splits = attention.tiled_shape(GPU, heads, length, keys)
        for suffix, setting, tile, tiled, rows, splits in variants:
            attention.TILED = tiled
            attention.tiled_rows = attention.flash_rows = lambda *shape, rows=rows: rows
            attention.tiled_splits = lambda *shape, splits=splits: splits
            attention.FLASH_MIN_ROWS = saved[3] if rows else 1 << 30
            folder = f"attention{case}-{suffix}"
            compile_module(Attention(causal), replace(config, name=folder)).write(out / "programs")
            index.append({"case": name, "tile": tile, "split": splits, "folder": folder, "setting": setting,
                          "picked": tiled and (rows, splits) == (picked, picked_splits), "flops": 4 * heads * length * keys * dim})
        attention.TILED, attention.tiled_rows, attention.flash_rows, attention.FLASH_MIN_ROWS, attention.tiled_splits = saved
        print(f"{name}: tiled_shape picks {picked} rows, {picked_splits} key splits", flush=True)
    (out / "index.json").write_text(json.dumps(index, indent=1))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["build", "run"])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--results", type=Path, help="run: where to write results.json (default: the folder)")
    args = parser.parse_args()
    if args.mode == "build":
        build(args.folder)
    else:
        gemm_sweep.run(args.folder, args.runs, args.results or args.folder / "results.json", heater_case=HEATER)
    return 0


if __name__ == "__main__":
    sys.exit(main())
