"""The `kuma` command: build, watch, verify, bench, and manage the build cache.

Log lines start with "[kuma]" and keep a stable shape, because tools parse
them; --json prints one JSON object per line instead (both in log.py).
"""

import argparse
import sys
import warnings
from pathlib import Path

from kuma_build import __version__
from kuma_build.config import find_config, load_project
from kuma_build.errors import KumaError
from kuma_build.log import error, event, report, size


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="kuma", description="Compile PyTorch models into WebGPU ES modules.")
    parser.add_argument("--version", action="version", version=f"kuma-build {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name, help_text, models=True):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if models:
            sub.add_argument("models", nargs="*", metavar="MODEL", help="models to process (default: all in kuma.toml)")
        sub.add_argument("--config", type=Path, help="path of kuma.toml (default: search upwards from here)")
        return sub

    build = command("build", "compile the models in kuma.toml (only what changed)")
    build.add_argument("--json", action="store_true", help="print one JSON event per line instead of log lines")
    build.add_argument("--force", action="store_true", help="compile even when the output or a cache is up to date")
    build.add_argument("--remote-read-only", action="store_true", help="read the remote cache but never write to it")

    verify = command("verify", "run the built models on the local WebGPU adapter and compare with PyTorch")
    verify.add_argument("--tolerance", type=float, default=None,
                        help="largest relative L2 error accepted (default by the model's precision: f32 1e-5, f16 1e-2, int8 5e-2)")
    verify.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")

    bench = command("bench", "time the built models on the local WebGPU adapter, per kernel (timestamp queries)")
    bench.add_argument("--runs", type=int, default=20, help="timed runs of each kind; medians are reported (default 20)")
    bench.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    bench.add_argument("--json", action="store_true", help="print one JSON object per model instead of Markdown tables")

    watch = command("watch", "build, then rebuild the models whose files change", models=False)
    watch.add_argument("--json", action="store_true", help="print one JSON event per line instead of log lines")

    cache = command("cache", "inspect or clean the build cache", models=False)
    cache.add_argument("action", choices=["stats", "explain", "prune", "clear"],
                       help="stats: size and entries; explain MODEL: what changed since its last build; "
                            "prune: drop old entries and unreferenced files; clear: empty the cache")
    cache.add_argument("models", nargs="*", metavar="MODEL")

    init = commands.add_parser("init", help="add a kuma.toml and a first model to a web project",
                               description="add a kuma.toml and a first model to a web project")
    init.add_argument("folder", nargs="?", type=Path, default=Path("."), help="the web project's root (default: here)")
    init.add_argument("--force", action="store_true", help="overwrite kuma.toml and models/model.py if they exist")

    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch's deprecation chatter is not the user's concern
    try:
        if args.command == "init":
            from kuma_build.init import init
            return init(args.folder, args.force)
        if args.command == "watch":
            from kuma_build.watch import watch
            return watch(args.config or find_config(Path.cwd()), args.json)
        project = load_project(args.config or find_config(Path.cwd()))
        names = select_models(project, args.models)
        if args.command == "build":
            return run_build(project, names, args)
        if args.command == "verify":
            return run_verify(project, names, args.tolerance, args.seed)
        if args.command == "bench":
            from kuma_build.bench import run_bench
            return run_bench(project, names, args.runs, args.warmup, args.json)
        return run_cache(project, args.action, args.models)
    except KumaError as e:
        error(e, getattr(args, "json", False))
        return 1
    except KeyboardInterrupt as e:  # Ctrl-C, or a model that raised it: say so, and where (export.py notes user code)
        file, line = getattr(e, "kuma_where", (None, None))
        where = f" in {file}:{line}" if line else f" in {file}" if file else ""
        print(f"[kuma] interrupted{where}; the model being built keeps its previous output.", file=sys.stderr, flush=True)
        return 130


def select_models(project, names: list[str]) -> list[str]:
    unknown = [n for n in names if n not in project.models]
    if unknown:
        raise KumaError(f"no model named {', '.join(unknown)}; kuma.toml declares {', '.join(project.models)}.", project.path)
    return names or list(project.models)


def run_build(project, names: list[str], args) -> int:
    from kuma_build.builder import Builder

    builder = Builder(project, force=args.force, remote_read_only=args.remote_read_only)
    if args.json:  # for the bundlers' watch modes (vite build --watch): what to watch, even if a build fails
        from kuma_build.cache.keys import model_inputs
        files = [project.path.resolve(), *(f for name in names for f in model_inputs(project, project.models[name]))]
        event({"event": "inputs", "files": sorted({str(f) for f in files})}, None, True)
    for name in names:
        report(builder.build(name), args.json)
    return 0


def run_verify(project, names: list[str], tolerance: float, seed: int) -> int:
    from kuma_build.verify import DEFAULT_TOLERANCE, verify_model

    failed = 0
    for name in names:
        limit = tolerance if tolerance is not None else DEFAULT_TOLERANCE[project.models[name].precision]
        for ran, errors in verify_model(project, project.models[name], seed).items():
            if isinstance(errors, str):
                print(f"[kuma] verify {name} ({ran}): not run: {errors}", flush=True)
                continue
            for output, (max_abs, rel) in errors.items():
                ok = rel <= limit
                failed += not ok
                print(f"[kuma] verify {name}.{output} ({ran}): max abs error {max_abs:.3g}, relative L2 error {rel:.3g} "
                      f"{'ok' if ok else f'FAILED (> {limit:g})'}", flush=True)
    return 1 if failed else 0


def run_cache(project, action: str, names: list[str]) -> int:
    from kuma_build.builder import Builder

    builder = Builder(project)
    cache = builder.cache
    if action == "stats":
        s = cache.stats()
        print(f"[kuma] cache {s['path']}: {s['models']} model builds, {s['kernels']} kernels, "
              f"{s['blobs']} files, {size(s['bytes'])}", flush=True)
    elif action == "explain":
        for name in select_models(project, names):
            changes, _ = builder.explain(name)
            if changes is None:
                print(f"[kuma] {name}: never built with this cache", flush=True)
            elif changes:
                print(f"[kuma] {name}: changed since the last build: {', '.join(changes)}", flush=True)
            else:
                print(f"[kuma] {name}: nothing changed since the last build", flush=True)
    elif action == "prune":
        with cache.lock():
            result = cache.prune()
        print(f"[kuma] pruned {result['entries_removed']} builds, freed {size(result['bytes_freed'])}", flush=True)
    else:
        with cache.lock():
            cache.clear()
        print(f"[kuma] cleared {cache.root}", flush=True)
    return 0
