"""Load benchmark: a model's load() in headless Chromium against the pure download of its weights.

Builds one model of --mib MiB of weights (elementwise, so kernel compilation is not what is timed)
in --chunk-size chunks, then bench/browser/load.mjs measures, per network throttle (DevTools
protocol) in a fresh browser context: the pure download of the chunk files at the runtime's
concurrency, a cold load() (download, SHA-256 checks, GPU upload, kernels, warm-up) and when its Cache
API stores (which begin after load() resolves) are done, the peak growth of JS memory (heap +
ArrayBuffers) during both, a second load() from the cache and a
load({ cache: false, warmup: false }) (the download, checks and upload alone);
and, unthrottled, the time to hash every chunk. With --repeats N every throttle is measured N times
in turn and each cell is the median (the ratios are medians of each repeat's ratio). Prints a Markdown table.
Not part of the test suite; uses tests/browser's playwright-core (cd tests/browser && npm ci).

    .venv/bin/python bench/loading_bench.py [--mib 32] [--chunk-size 4MiB] [--repeats 1] [--throttles none,200,50]
"""

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from kuma_build import TEMPLATES, __version__  # noqa: E402
from kuma_build.compiler import compile_module  # noqa: E402
from kuma_build.config import parse_size  # noqa: E402
from support import model_config  # noqa: E402

THROTTLES = [{"name": "none", "mbps": 0, "latencyMs": 0},
             {"name": "200 Mbit/s, 20 ms", "mbps": 200, "latencyMs": 20},
             {"name": "50 Mbit/s, 40 ms", "mbps": 50, "latencyMs": 40}]


class Scaled(nn.Module):
    def __init__(self, rows: int):
        super().__init__()
        self.scale = nn.Parameter(torch.randn(rows, 65536))

    def forward(self, x):
        return (x * self.scale).sum(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=32, help="weight MiB (default 32)")
    parser.add_argument("--chunk-size", default="4MiB", help="chunk size as in kuma.toml (default 4MiB)")
    parser.add_argument("--repeats", type=int, default=1, help="measurements per throttle; cells are medians (default 1)")
    parser.add_argument("--throttles", default="none,200,50", help="Mbit/s of the throttles to run, none for unthrottled")
    args = parser.parse_args()
    wanted = args.throttles.split(",")
    throttles = [t for t in THROTTLES if str(t["mbps"] or "none") in wanted]
    chunk_size = parse_size(args.chunk_size)
    module = Scaled(args.mib * 4).eval()
    compiled = compile_module(module, model_config(module, (torch.randn(65536),), name="scaled"), chunk_size)
    concurrency = int(re.search(r"const CONCURRENCY = (\d+)", (TEMPLATES / "runtime.js").read_text()).group(1))
    with tempfile.TemporaryDirectory() as root:
        compiled.write(Path(root))
        request = {"root": root, "model": "scaled", "chunks": [c.file for c in compiled.chunks], "concurrency": concurrency,
                   "repeats": args.repeats, "throttles": throttles}
        load_before = os.getloadavg()[0]
        (Path(root) / "request.json").write_text(json.dumps(request))
        result = subprocess.run(["node", str(REPO / "bench" / "browser" / "load.mjs"), str(Path(root) / "request.json")],
                                capture_output=True, text=True, timeout=900)
    if result.returncode:
        sys.exit(f"load.mjs failed:\n{result.stderr}")
    data = json.loads(result.stdout)
    weights = sum(len(c.data) for c in compiled.chunks)
    mb = lambda n: f"{n / 2**20:.1f} MiB"  # noqa: E731
    print(f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; load average {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after")
    print(f"- chromium: {data['chromium']}; kuma {__version__}; torch {torch.__version__}")
    print(f"- model: {mb(weights)} of weights in {len(compiled.chunks)} chunks of {args.chunk_size}; runtime concurrency {concurrency}; "
          f"{args.repeats} repeat(s) per throttle, medians")
    print(f"- hashing (SHA-256, crypto.subtle, all chunks one after another): {data['hashMs']:.0f} ms "
          f"({weights / 2**20 / (data['hashMs'] / 1000):.0f} MiB/s)\n")
    print("| throttle | pure download | cold load() | **load / download** | stores done (model.cached) | load() without cache and warm-up | "
          "ratio | JS memory peak growth | second load() (cache) |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    for repeats in data["rows"]:
        def median(field):
            return statistics.median(field(r) for r in repeats)
        print(f"| {repeats[0]['name']} | {median(lambda r: r['downloadMs']):,.0f} ms | {median(lambda r: r['coldMs']):,.0f} ms "
              f"| **{median(lambda r: r['coldMs'] / r['downloadMs']):.2f}** | {median(lambda r: r['cachedMs']):,.0f} ms "
              f"| {median(lambda r: r['bareMs']):,.0f} ms "
              f"| {median(lambda r: r['bareMs'] / r['downloadMs']):.2f} | {mb(median(lambda r: r['peakBytes']))} "
              f"| {median(lambda r: r['secondMs']):,.0f} ms |")
        if len(repeats) > 1:
            each = ", ".join(f"{r['coldMs'] / r['downloadMs']:.2f}" for r in repeats)
            print(f"|  | each cold load / download: {each} ||||||||")


if __name__ == "__main__":
    main()
