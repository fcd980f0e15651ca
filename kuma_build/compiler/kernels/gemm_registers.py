"""Register-blocked GEMM without workgroup memory: the "cpu" device class's kernel for every shape.

On software WebGPU (SwiftShader, lavapipe) every workgroupBarrier switches between all the
threads of a workgroup, so the tiled kernel's two barriers per K step and the thin kernel's
reduction cost more than their arithmetic. Here each thread computes a block of outputs on its
own, reading A and B straight from memory through gemm.functions' loads (the CPU's caches do
what workgroup memory does on a GPU): each A value it loads serves all the block's columns, each
B value all its rows. On SwiftShader a load costs several FMAs, so blocks are as big as the
registers allow (8 x 8 beat 4 x 4 with half the workgroups; 12 x 8 and 16 x 8 spilled and ran
slower), and workgroups are small enough to spread evenly over the cores (nothing is shared in a
workgroup: it is only the unit the cores take in turn). choose_block weighs the two. Accumulators
are vec4s along the columns with names fixed by the generator (gemm.py says why).

When a dim sets a size, the block is chosen for the max sizes and the threads are laid out on a
3-D grid the runtime sizes (column blocks along x, row blocks along y, slots along z), as a flat
thread count would need a ceiling of a Sym (gemm.py's Gemm.largest, ir/sizes.py).
"""

from math import ceil

from kuma_build.errors import KumaError
from kuma_build.compiler.ir.sizes import Sym, ceil_div_count, wgsl as u32
from kuma_build.compiler.kernels.gemm import Gemm, functions, loop
from kuma_build.compiler.kernels.wgsl import MAX_WORKGROUPS_PER_DIM, indent, threads, unravel

BLOCKS = ((8, 8), (8, 4), (4, 4), (2, 4), (1, 4))  # rows x columns per thread (columns: whole vec4s)
SIZES = (64, 32, 16)  # threads per workgroup
LOAD = 4  # a load's cost in FMAs


def cost(g: Gemm, rows: int, cols: int, size: int) -> float:
    """Estimated time per k: waves of device.parallel workgroups, each thread loading
    rows + cols values and doing rows x cols FMAs."""
    batch, g_rows, g_cols, _ = g.largest
    groups = ceil(batch * g.splits * ceil(g_rows / rows) * ceil(g_cols / cols) / size)
    return ceil(groups / g.device.parallel) * size * (LOAD * (rows + cols) + rows * cols)


def choose_block(g: Gemm) -> tuple[int, int, int]:
    """(rows, columns, workgroup size) of least estimated cost (ties: the bigger block and workgroup)."""
    return min(((rows, cols, size) for rows, cols in BLOCKS for size in SIZES), key=lambda o: cost(g, *o))


def registers(g: Gemm) -> tuple[str, tuple[int, int, int]]:
    """A rows x cols block per thread; thread gid = (slot, row block, column block), column blocks
    fastest, so a workgroup's threads share A's rows. As in tiled, slot = split * batch + b sums one
    slice of K. (No `half` variant: the "cpu" class has no f16 build's "-f16" program, devices.py.)"""
    rows, cols, size = choose_block(g)
    accs = [(i, j) for i in range(rows) for j in range(cols // 4)]  # a vec4 per row and run of 4 columns
    if any(isinstance(x, Sym) for x in (g.batch, g.rows, g.cols, g.depth)):
        size = min([s for s in SIZES if s >= ceil(g.largest[2] / cols)], default=SIZES[0])  # threads along columns only
        header, workgroups, lines, (slot, row_block, col_block) = dynamic_grid(g, rows, cols, size)
        span = g.span()
    else:
        slots, span = g.batch * g.splits, f"{ceil(g.depth / g.splits)}u"
        header, workgroups = threads(slots * ceil(g.rows / rows) * ceil(g.cols / cols), size)
        lines, (slot, row_block, col_block) = unravel("gid", (slots, ceil(g.rows / rows), ceil(g.cols / cols)))

    step = [f"let a{i} = gemm_a(batch, r + {i}u, k);" for i in range(rows)]
    step += [f"let b{j} = vec4<f32>({', '.join(f'gemm_b(batch, k, c + {4 * j + lane}u)' for lane in range(4))});"
             for j in range(cols // 4)]
    step += [f"acc_{i}_{j} = fma(vec4<f32>(a{i}), b{j}, acc_{i}_{j});" for i, j in accs]
    ks = loop("k", "k_begin", "k_end", 1, step)
    # 4 columns stored per call: the unrolled stores are most of the source
    put4 = """
fn gemm_put4(batch: u32, slot: u32, r: u32, c: u32, run: vec4<f32>) {
""" + indent(f"gemm_put(batch, slot, r, c + {lane}u, run.{'xyzw'[lane]});" for lane in range(4)) + "\n}\n"
    puts = [f"gemm_put4(batch, {slot}, r + {i}u, c + {4 * j}u, acc_{i}_{j});" for i, j in accs]
    body = [*lines, f"let batch = {slot} % {u32(g.batch)};", f"let k_begin = ({slot} / {u32(g.batch)}) * {span};",
            f"let k_end = min(k_begin + {span}, {u32(g.depth)});",
            f"let r = {row_block} * {rows}u;", f"let c = {col_block} * {cols}u;",
            *[f"var acc_{i}_{j} = vec4<f32>();" for i, j in accs], *ks, *puts]
    return functions(g) + put4 + header + indent(body) + "\n}\n", workgroups


def dynamic_grid(g: Gemm, rows: int, cols: int, size: int):
    """(header, workgroups, lines, (slot, row block, column block)) when a dim sets a size: a
    workgroup's threads take neighbouring column blocks, workgroup y a row block, z a slot."""
    if -(-g.largest[1] // rows) > MAX_WORKGROUPS_PER_DIM:
        raise KumaError(f"a product of up to {g.largest[1]} rows (at the dims' max) needs more workgroups than one dispatch "
                        f"dimension holds ({MAX_WORKGROUPS_PER_DIM}); lower the max of the dims in kuma.toml.")
    header = (f"@compute @workgroup_size({size})\n"
              "fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {\n"
              f"  if ((wg.x * {size}u + li) * {cols}u >= {u32(g.cols)}) {{ return; }}\n")
    workgroups = (ceil_div_count(g.cols, cols * size), ceil_div_count(g.rows, rows), ceil_div_count(g.batch * g.splits, 1))
    return header, workgroups, [f"let col_block = wg.x * {size}u + li;"], ("wg.z", "wg.y", "col_block")
