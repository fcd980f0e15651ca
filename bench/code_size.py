"""Code bytes a page downloads per model and device class: index.js (the runtime and what the
classes share) plus the class's own module (its kernels and plan), gzip -9, weights excluded.

    .venv/bin/python bench/code_size.py [--precision f16] [MODEL ...]     (default: the benchmark models, f32)

Builds tests/models/ with target = "auto" (both classes) in a temporary folder and prints a
Markdown table (what a page loads in bytes, against the 10 kB target; the rest in kB; with
--precision f16, the gpu-f16.js a page on a device with tensor cores loads instead of gpu.js where
the build has one);
docs/benchmarks.md ("Code per device class") records it. The chunk table column is
what index.js's table of weight chunks (an id and a size per chunk, the chunk URLs, and the digest of
them all) adds to it: it grows with the weights over chunk_size, 6 bytes of id per chunk at least.
"""

import argparse
import dataclasses
import gzip
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kuma_build.compiler import compile_model  # noqa: E402
from kuma_build.config import load_project  # noqa: E402
from kuma_build.jsmodule import render_js, runtime_needs  # noqa: E402
from kuma_build.outfolder import class_file, program_from_js  # noqa: E402

MODELS = ["mlp", "convnet", "resnet", "mobilenet", "transformer", "gpt", "unet"]


def gzipped(path: Path) -> int:
    return len(gzip.compress(path.read_bytes(), 9, mtime=0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", default=MODELS)
    parser.add_argument("--precision", default="f32", choices=("f32", "f16", "int8"))
    args = parser.parse_args()
    project = load_project(REPO / "tests" / "models" / "kuma.toml")
    rows = ["| model | index.js | of which the chunk table | gpu.js | cpu.js | a GPU page loads | a software-WebGPU page loads | both classes in one module | gpu-f16.js |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as out:
        for name in args.models:
            model = dataclasses.replace(project.models[name], target="auto", precision=args.precision)
            folder = compile_model(project, model).write(Path(out))
            index, gpu, cpu = (gzipped(folder / f) for f in ("index.js", "gpu.js", "cpu.js"))
            tensor_cores = kb(gzipped(folder / "gpu-f16.js")) if (folder / "gpu-f16.js").is_file() else "none"
            both = gzipped_text(folder)
            shared = program_from_js((folder / "index.js").read_text())
            parts = {c: program_from_js((folder / class_file(c)).read_text()) for c in shared["classes"]}
            table = index - len(gzip.compress(render_js({**shared, "chunks": []}, runtime_needs(shared, parts)).encode(), 9, mtime=0))
            rows.append(f"| {name} | {kb(index)} | {kb(table)} ({len(shared['chunks'])} chunks) | {kb(gpu)} | {kb(cpu)} "
                        f"| **{index + gpu:,} B** | **{index + cpu:,} B** | {kb(both)} | {tensor_cores} |")
            print(f"code_size: {name} done", file=sys.stderr, flush=True)
    print("\n".join(rows))


def gzipped_text(folder: Path) -> int:
    """What one module holding both classes would weigh (the cost of not splitting them)."""
    text = b"".join((folder / f).read_bytes() for f in ("index.js", "gpu.js", "cpu.js"))
    return len(gzip.compress(text, 9, mtime=0))


def kb(n: int) -> str:
    return f"{n / 1000:.1f} kB"


if __name__ == "__main__":
    main()
