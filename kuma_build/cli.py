"""The `kuma` command: build and verify the models named in kuma.toml.

Log lines start with "[kuma]" and keep a stable shape, because tools parse them.
"""

import argparse
import json
import sys
import warnings
from pathlib import Path

from kuma_build import __version__
from kuma_build.config import find_config, load_project
from kuma_build.errors import KumaError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="kuma", description="Compile PyTorch models into WebGPU ES modules.")
    parser.add_argument("--version", action="version", version=f"kuma-build {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build", help="compile the models in kuma.toml")
    build.add_argument("models", nargs="*", metavar="MODEL", help="models to build (default: all)")
    build.add_argument("--config", type=Path, help="path of kuma.toml (default: search upwards from here)")
    build.add_argument("--json", action="store_true", help="print one JSON object per model instead of log lines")

    verify = commands.add_parser("verify", help="run the built models on the local WebGPU adapter and compare with PyTorch")
    verify.add_argument("models", nargs="*", metavar="MODEL", help="models to verify (default: all)")
    verify.add_argument("--config", type=Path, help="path of kuma.toml (default: search upwards from here)")
    verify.add_argument("--tolerance", type=float, default=1e-5, help="largest relative L2 error accepted (default 1e-5)")
    verify.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")

    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch's deprecation chatter is not the user's concern
    try:
        project = load_project(args.config or find_config(Path.cwd()))
        names = select_models(project, args.models)
        if args.command == "build":
            return run_build(project, names, args.json)
        return run_verify(project, names, args.tolerance, args.seed)
    except KumaError as e:
        print(f"[kuma] error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def select_models(project, names: list[str]) -> list[str]:
    unknown = [n for n in names if n not in project.models]
    if unknown:
        raise KumaError(f"no model named {', '.join(unknown)}; kuma.toml declares {', '.join(project.models)}.", project.path)
    return names or list(project.models)


def run_build(project, names: list[str], as_json: bool) -> int:
    from kuma_build.compiler import compile_model  # imports torch: keep `kuma --help` fast

    for name in names:
        compiled = compile_model(project, project.models[name])
        folder = compiled.write(project.out_dir)
        s = compiled.stats
        if as_json:
            print(json.dumps({"event": "built", "model": name, "out": str(folder), **s}), flush=True)
        else:
            print(f"[kuma] built {name} in {s['seconds'] * 1000:.0f} ms -> {_relative(folder)} "
                  f"(ops {s['ops']}, kernels {s['kernels']}, dispatches {s['dispatches']}, "
                  f"weights {_size(s['weight_bytes'])} in {s['chunks']} chunk{'s' if s['chunks'] != 1 else ''}, activations {_size(s['activation_bytes'])})", flush=True)
    return 0


def run_verify(project, names: list[str], tolerance: float, seed: int) -> int:
    from kuma_build.verify import verify_model

    failed = 0
    for name in names:
        report = verify_model(project, project.models[name], seed)
        for output, (max_abs, rel) in report.items():
            ok = rel <= tolerance
            failed += not ok
            print(f"[kuma] verify {name}.{output}: max abs error {max_abs:.3g}, relative L2 error {rel:.3g} "
                  f"{'ok' if ok else f'FAILED (> {tolerance:g})'}", flush=True)
    return 1 if failed else 0


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
