"""Register-blocked GEMM without workgroup memory, for the "cpu" device class (gemm.DEVICE).

On software WebGPU (SwiftShader, lavapipe) every workgroupBarrier switches between all the
threads of a workgroup, so the tiled kernel's two barriers per K step cost more than its
arithmetic, and its few big tiles leave cores idle. Here each thread computes a block of
outputs on its own, reading A and B straight from memory through gemm.functions' loads (the CPU's
caches do what workgroup memory does on a GPU): each A value it loads serves all the block's
columns, each B value all its rows. Workgroups of 64 threads, as the direct convolution's, and the
biggest block that still leaves the cores several workgroups each. Accumulators are vectors along
the columns with names fixed by the generator (gemm.py says why), and no thread waits for another.
"""

from math import ceil

from kuma_build.compiler.kernels.conv import CPU_WORKGROUP, CPU_WORKGROUPS
from kuma_build.compiler.kernels.gemm import STEP, Gemm, functions, loop
from kuma_build.compiler.kernels.wgsl import indent, threads, unravel

BLOCKS = ((4, 8), (4, 4), (2, 4), (1, 4))  # rows x columns per thread, the most loads saved first


def choose_block(g: Gemm) -> tuple[int, int]:
    """The biggest block that gives at least CPU_WORKGROUPS workgroups (the smallest when none does)."""
    for rows, cols in BLOCKS:
        if g.batch * g.splits * ceil(g.rows / rows) * ceil(g.cols / cols) >= CPU_WORKGROUPS * CPU_WORKGROUP:
            return rows, cols
    return BLOCKS[-1]


def registers(g: Gemm) -> tuple[str, tuple[int, int, int]]:
    """A rows x cols block per thread; thread gid = (slot, row block, column block), column blocks
    fastest, so a workgroup's threads share A's rows. As in tiled, slot = split * batch + b sums one
    slice of K. With g.half, each STEP of k is summed into f16 `part_` values, then into the f32 `acc_` ones."""
    rows, cols = choose_block(g)
    width = min(4, cols)  # columns per accumulator vector
    vector = lambda element: element if width == 1 else f"vec{width}<{element}>"
    accs = [(i, j) for i in range(rows) for j in range(cols // width)]
    slots, span = g.batch * g.splits, ceil(g.depth / g.splits)
    header, workgroups = threads(slots * ceil(g.rows / rows) * ceil(g.cols / cols), CPU_WORKGROUP)
    lines, (slot, row_block, col_block) = unravel("gid", (slots, ceil(g.rows / rows), ceil(g.cols / cols)))

    sums = "part" if g.half else "acc"  # what a k adds to
    step = [f"let a{i} = {g.convert(f'gemm_a(batch, r + {i}u, k)')};" for i in range(rows)]
    step += [f"let b{j} = {vector(g.element)}({', '.join(g.convert(f'gemm_b(batch, k, c + {j * width + lane}u)') for lane in range(width))});"
             for j in range(cols // width)]
    step += [f"{sums}_{i}_{j} = fma({vector(g.element)}(a{i}), b{j}, {sums}_{i}_{j});" for i, j in accs]
    ks = loop("k", "k_begin", "k_end", 1, step)
    if g.half:
        ks = loop("k0", "k_begin", "k_end", STEP, [
            *[f"var part_{i}_{j} = {vector('f16')}();" for i, j in accs],
            *loop("k", "k0", f"min(k0 + {STEP}u, k_end)", 1, step),
            *[f"acc_{i}_{j} += {vector('f32')}(part_{i}_{j});" for i, j in accs]])
    # a run of `width` columns stored per call: the unrolled stores are most of the source
    put_run = f"""
fn gemm_put_run(batch: u32, slot: u32, r: u32, c: u32, run: {vector('f32')}) {{
{indent(f"gemm_put(batch, slot, r, c + {lane}u, run{'.' + 'xyzw'[lane] if width > 1 else ''});" for lane in range(width))}
}}
"""
    puts = [f"gemm_put_run(batch, {slot}, r + {i}u, c + {j * width}u, acc_{i}_{j});" for i, j in accs]
    body = [*lines, f"let batch = {slot} % {g.batch}u;", f"let k_begin = ({slot} / {g.batch}u) * {span}u;",
            f"let k_end = min(k_begin + {span}u, {g.depth}u);",
            f"let r = {row_block} * {rows}u;", f"let c = {col_block} * {cols}u;",
            *[f"var acc_{i}_{j} = {vector('f32')}();" for i, j in accs], *ks, *puts]
    return functions(g) + put_run + header + indent(body) + "\n}\n", workgroups
