"""Dispatch counts per kernel of the Dawn benchmark's models for one device class, without running
anything: export, import, passes and plan only (no weights packed, no files written), so the
full-size models can be counted on a CPU machine in about a minute each.

    PYTHONPATH=. .venv/bin/python bench/gpu/dawn/dispatches.py [--small] [--target gpu] [--precision f16] [--models bert-base-seq128,gpt2-small-seq128]
        [--gemm-knob split_sum.NORM_STORES_SUM=False ...]  (bench.py's knobs: the counts of its A/B runs)

Each model prints one line: its total and the dispatches of each kernel name (split_sum, attention, ...).
Dawn pays about 5 us of host time per dispatch (docs/performance.md), so these are counted before
any device time is spent.
"""

import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import dawn_models  # noqa: E402
from bench import apply_knobs, gemm_knobs  # noqa: E402
from kuma_build.compiler import compile_for  # noqa: E402
from kuma_build.compiler.export import export  # noqa: E402
from kuma_build.config import InputSpec, ModelConfig  # noqa: E402
from kuma_build.devices import DEVICE_CLASSES  # noqa: E402


def counts(case: dawn_models.Case, target: str, precision: str = "f32") -> Counter:
    """precision "f16": the "<target>-f16" program (devices.F16_PROGRAM: tensor cores)."""
    config = ModelConfig(name=case.name, source=Path(dawn_models.__file__), factory=case.name, weights=None, precision=precision,
                         inputs=[InputSpec(n, tuple(s), d) for n, (s, d) in case.inputs.items()], outputs=None, section={},
                         target=target)
    exported, input_names, output_names = export(dawn_models.instantiate(case), config)
    build = compile_for(DEVICE_CLASSES[target], exported, config, input_names, output_names, None)
    return Counter(build.plan.kernels[dispatch[0]].name for dispatch in build.plan.dispatches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="the tiny configs of the same classes")
    parser.add_argument("--target", default="gpu", choices=sorted(DEVICE_CLASSES))
    parser.add_argument("--precision", default="f32", choices=("f32", "f16"), help='f16: the "-f16" program (subgroup matrices)')
    parser.add_argument("--models", help="comma-separated case names, as bench.py's (default: all)")
    parser.add_argument("--gemm-knob", action="append", default=[], metavar="NAME=VALUE",
                        help="a constant of kernels/gemm.py (NAME) or kernels/MODULE.py (MODULE.NAME), or a field of the \"gpu\" class (GPU.field), set first, as bench.py's")
    options = parser.parse_args()
    apply_knobs(gemm_knobs(parser, options.gemm_knob))
    for case in dawn_models.cases(options.small):
        if options.models and case.name not in options.models.split(","):
            continue
        per_kernel = counts(case, options.target, options.precision)
        detail = ", ".join(f"{name} {n}" for name, n in per_kernel.most_common())
        print(f"{case.name}: {sum(per_kernel.values())} dispatches ({detail})", flush=True)


if __name__ == "__main__":
    main()
