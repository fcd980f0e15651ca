"""Where run()'s host time goes on Dawn (issue 12): builds the models as bench.py does (Kuma only,
f32, target "gpu"), then runs host.mjs on them in one Node process (the basics, each model's
plain run(), its phases and its replays; host.mjs's comment says what each is). Writes host.json
(host.mjs's result) and host.md (the numbers that matter, in µs) to --out and prints host.md.

    python bench/gpu/dawn/host.py [--small] [--models a,b] [--runs N] [--out DIR]
    device: bash bench/gpu/dawn/run_on_device.sh host [--models ...]
"""

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench  # noqa: E402
import dawn_models  # noqa: E402

MODELS = "bert-base-seq128,bert-base-seq512,convnext-t-224,resnet50-224"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny configs of the same classes (the local run on SwiftShader)")
    parser.add_argument("--models", help=f"comma-separated names (default: {MODELS}; with --small, their tiny configs)")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per measurement")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/kuma-dawn-host")))
    parser.add_argument("--work", type=Path, help="built models (default: a folder beside --out)")
    parser.add_argument("--node", default=os.environ.get("KUMA_NODE", "node"))
    parser.add_argument("--deadline", type=float, help="accepted for run_on_device.sh; the Node run is bounded by --timeout")
    parser.add_argument("--timeout", type=float, default=420, help="seconds for the Node run")
    options = parser.parse_args()
    cases = [c.name for c in dawn_models.cases(options.small)]
    names = options.models.split(",") if options.models else [cases[[c.name for c in dawn_models.cases(False)].index(n)] for n in MODELS.split(",")]
    unknown = [n for n in names if n not in cases]
    if unknown:
        parser.error(f"unknown models {unknown}; from {', '.join(cases)}")
    options.out.mkdir(parents=True, exist_ok=True)
    work = options.work or options.out.parent / (options.out.name + "-work")
    work.mkdir(parents=True, exist_ok=True)
    folders = []
    with concurrent.futures.ProcessPoolExecutor(max(1, min(len(names), (os.cpu_count() or 2) // 2)), mp_context=multiprocessing.get_context("spawn")) as pool:
        for done in pool.map(bench.prepare, names, [options.small] * len(names), [str(work)] * len(names), ["f32"] * len(names), [False] * len(names)):
            if "kuma" not in done:
                print(f"[host] {done['model']}: {done['errors']}", file=sys.stderr)
            else:
                folders.append(done["kuma"])
    flags = [arg for flag in bench.dawn_flags(argparse.Namespace()) for arg in ("--flag", flag)]
    result_file = options.out / "host.json"
    result_file.unlink(missing_ok=True)
    try:
        process = subprocess.run([options.node, str(HERE / "host.mjs"), "--runs", str(options.runs), *flags, "--out", str(result_file), *folders],
                                 capture_output=True, text=True, timeout=options.timeout)
        (options.out / "host.log").write_text(process.stdout + process.stderr)
    except subprocess.TimeoutExpired as e:
        (options.out / "host.log").write_text(f"{e.stdout or ''}{e.stderr or ''}" if isinstance(e.stdout, str) else "")
        print(f"[host] host.mjs timed out after {options.timeout:.0f} s; what it measured by then follows", file=sys.stderr)
    if not result_file.is_file():
        print("[host] host.mjs wrote no result; see host.log", file=sys.stderr)
        return 1
    text = summary(json.loads(result_file.read_text()))
    (options.out / "host.md").write_text(text)
    print(text)
    return 0


def summary(result: dict) -> str:
    """host.md: the basics, then per model its phases (µs, medians) and replays; what a run cut short measured."""
    lines = [] if result.get("ok") else [f"host.mjs stopped early: {result.get('error') or 'out of time'}", ""]
    b = result.get("basics")
    if b:
        lines += [f"## host.mjs on {b['adapter']} (timestamp-query: {b['timestampQuery']})", "",
                  "basics (µs): " + ", ".join(f"{k} {v}" for k, v in b.items() if k not in ("adapter", "timestampQuery")), ""]
    for m in result["models"]:
        p = m["phases"]
        chunks = "; ".join(f"{c['dispatches']} dispatches: encode {c['encodeUs']}, submit {c['submitUs']}"
                           + (f", GPU idle before {c['gpuGapBeforeUs']}" if c.get("gpuGapBeforeUs") is not None else "") for c in p["chunks"])
        lines += [f"### {Path(m['folder']).name}", "",
                  f"- run() plain {m['plainUs']}; wrapped {p['totalUs']}: take {p['takeUs']}, before the first encoder {p['beforeEncoderUs']}, "
                  f"writeBuffer {p['writeUs']}, to the last submit {p['hostToLastSubmitUs']}, wait {p['waitUs']}, copy-out {p['copyOutUs']} "
                  f"(getMappedRange {p['getMappedRangeUs']}, unmap {p['unmapUs']}, after unmap {p['afterUnmapUs']})",
                  f"- command buffers: {chunks}",
                  f"- GPU: busy {p.get('gpuBusyUs')}, span {p.get('gpuSpanUs')}, idle between runs {p.get('gpuIdleToNextRunUs')}"]
        if m.get("replays"):
            lines.append("- replays: " + ", ".join(f"{k} {v}" for k, v in m["replays"]["medianUs"].items()))
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
