"""Per-dispatch profile of Kuma's emitted modules in headless Chromium (WebGPU on SwiftShader here).

Compiles each model as bench/browser_bench.py does (same shapes, weights and inputs), then
bench/browser/profile.mjs replays every dispatch of the plan alone with the model's real buffers
(min of --runs tries; see its header for what each number means). Prints the fixed costs, a table by
kernel name and the slowest dispatches; --wgsl DIR also writes each kernel's WGSL there.
Not part of the test suite. Setup as for browser_bench.py.

    .venv/bin/python bench/browser_profile.py [--models transformer,gpt] [--runs 5] [--top 12] [--wgsl DIR]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import warnings
from collections import defaultdict
from pathlib import Path

from browser_bench import BROWSER_DIR, MODELS, REPO, kuma_inputs, model_case, model_names

from kuma_build.compiler import compile_module
from kuma_build.config import load_project


def profile(names: list[str], runs: int, repeat: int, work: Path) -> tuple[dict, list]:
    """({model: compiled program}, profile.mjs's replies)."""
    project = load_project(REPO / "tests" / "models" / "kuma.toml")
    programs, cases = {}, []
    for name in names:
        print(f"browser_profile: compiling {name}", file=sys.stderr, flush=True)
        net, config, tensors = model_case(name, project)
        compiled = compile_module(net, config)
        compiled.write(work)
        programs[name] = compiled.program
        cases.append({"model": name, "root": str(work), "inputs": kuma_inputs(tensors)})
    job = work / "job.json"
    job.write_text(json.dumps({"runs": runs, "repeat": repeat, "cases": cases}))
    env = {**os.environ, "KUMA_BROWSER_TIMEOUT_MS": str(600_000 * len(names))}
    out = subprocess.run(["node", str(BROWSER_DIR / "profile.mjs"), str(job)], cwd=BROWSER_DIR, env=env,
                         stdout=subprocess.PIPE, stderr=sys.stderr, text=True, check=True).stdout
    return programs, [json.loads(line) for line in out.splitlines() if line.strip()]


def report(program: dict, result: dict, top: int) -> str:
    dispatches = [(program["dispatches"][i], d) for i, d in enumerate(result["dispatches"])]
    alone = sum(d["aloneMs"] for _, d in dispatches)
    in_pass = sum(d["inPassMs"] for _, d in dispatches)
    lines = [f"### {program['model']}: {len(dispatches)} dispatches, {len(program['kernels'])} kernels",
             f"- run() {result['runMs']:.2f} ms; all dispatches in one pass, awaited {result['wholeMs']:.2f} ms; "
             f"empty submit, awaited {result['floorMs']:.2f} ms; 4-byte read back {result['readbackMs']:.2f} ms",
             f"- sum over dispatches: alone (minus the empty submit) {alone:.2f} ms, one more in a pass {in_pass:.2f} ms",
             f"- adapter {result['adapter']['vendor']} {result['adapter']['architecture']}, timestamp-query: {result['timestampQuery']}",
             "", "| kernel | calls | alone ms | share | in pass ms |", "|---|--:|--:|--:|--:|"]
    groups = defaultdict(lambda: [0, 0.0, 0.0])
    for (kernel, _, _), d in dispatches:
        g = groups[program["kernels"][kernel]["name"]]
        g[0] += 1
        g[1] += d["aloneMs"]
        g[2] += d["inPassMs"]
    for name, (calls, ms, pass_ms) in sorted(groups.items(), key=lambda item: -item[1][1]):
        lines.append(f"| {name} | {calls} | {ms:.2f} | {ms / alone:.0%} | {pass_ms:.2f} |")
    lines += ["", f"slowest {top} dispatches:", "", "| # | kernel | workgroups | alone ms | in pass ms |", "|--:|---|---|--:|--:|"]
    order = sorted(range(len(dispatches)), key=lambda i: -dispatches[i][1]["aloneMs"])
    for i in order[:top]:
        (kernel, _, groups_xyz), d = dispatches[i]
        lines.append(f"| {i} | {program['kernels'][kernel]['name']} (kernel {kernel}) | {'x'.join(map(str, groups_xyz))} "
                     f"| {d['aloneMs']:.2f} | {d['inPassMs']:.2f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="transformer,gpt,resnet,mobilenet", help=f"comma-separated, from {', '.join(MODELS)}")
    parser.add_argument("--runs", type=int, default=5, help="tries per measurement (the minimum is reported)")
    parser.add_argument("--repeat", type=int, default=4, help="copies of a dispatch in one pass, for the in-pass cost")
    parser.add_argument("--top", type=int, default=12, help="slowest dispatches listed per model")
    parser.add_argument("--wgsl", type=Path, help="write each model's kernels here as <model>/<index>_<name>.wgsl")
    options = parser.parse_args()
    names = model_names(parser, options.models)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory(prefix="kuma-profile-") as tmp:
        programs, results = profile(names, options.runs, options.repeat, Path(tmp))
    for result in results:
        program = programs[result["model"]]
        if not result["ok"]:
            print(f"### {result['model']}: failed: {result['error']}\n")
            continue
        print(report(program, result, options.top) + "\n")
        if options.wgsl:
            folder = options.wgsl / result["model"]
            folder.mkdir(parents=True, exist_ok=True)
            for i, kernel in enumerate(program["kernels"]):
                (folder / f"{i}_{kernel['name']}.wgsl").write_text(kernel["code"])


if __name__ == "__main__":
    main()
