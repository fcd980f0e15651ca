"""Matrix products through each GEMM kernel (for the "gpu" class thin in rows, thin in columns,
tiled with each tile size the cost model picks; for the "cpu" class register-blocked, with each
block from 1 x 4 to 8 x 8 outputs per thread), with transposed, sliced and broadcast operands, on
real WebGPU."""

import pytest
import torch
import torch.nn.functional as F

from kuma_build.compiler.kernels.gemm import Gemm, choose_tile
from kuma_build.compiler.kernels.products import gemm_code
from kuma_build.devices import DEVICE_CLASSES
from support import Fn, assert_matches



CASES = {  # name -> (fn, x shape, y shape)
    "vector_times_matrix": (lambda x, y: x @ y, (1, 300), (300, 77)),
    "thin_rows_transposed_b": (lambda x, y: x @ y.t(), (3, 70), (45, 70)),
    "thin_columns": (lambda x, y: x @ y, (90, 37), (37, 5)),
    # decoding's single-row products: K past, short of and not a multiple of the unrolled k per thread
    "vector_wide_odd_depth": (lambda x, y: x @ y, (1, 1203), (1203, 301)),
    "vector_two_columns": (lambda x, y: x @ y, (1, 37), (37, 2)),
    "vector_linear_many_columns": (lambda x, y: F.linear(x, y), (1, 75), (2100, 75)),
    "rows_times_one_column": (lambda x, y: x @ y, (3, 513), (513, 1)),
    "thin_columns_transposed_a": (lambda x, y: x.t() @ y, (37, 90), (37, 3)),
    "thin_one_column": (lambda x, y: x @ y[:, 1:2], (70, 33), (33, 4)),
    "tiled_small": (lambda x, y: x @ y, (37, 96), (96, 29)),
    "tiled_mid": (lambda x, y: x @ y, (130, 75), (75, 141)),
    "tiled_large": (lambda x, y: x @ y, (250, 40), (40, 260)),
    "tiled_transposed_both": (lambda x, y: x.t() @ y.t(), (50, 41), (23, 50)),
    "tiled_sliced": (lambda x, y: x[1:, ::2] @ y[:, 3:], (20, 34), (17, 30)),
    "batched": (lambda x, y: x @ y, (2, 3, 17, 20), (2, 3, 20, 19)),
    "batched_thin": (lambda x, y: x @ y, (4, 2, 40), (4, 40, 30)),
    "shared_weight_batch_fold": (lambda x, y: torch.bmm(x, y.expand(5, 31, 12)), (5, 6, 31), (31, 12)),
    "addmm_alpha_beta": (lambda x, y: torch.addmm(y[0, :19], x, y[:, 1:20], beta=0.5, alpha=-2.0), (11, 30), (30, 21)),
    "baddbmm_thin": (lambda x, y: torch.baddbmm(y[:, :2, :7], x, y, alpha=0.3), (3, 2, 9), (3, 9, 7)),
    "linear_relu_epilogue_thin": (lambda x, y: F.relu(F.linear(x, y, y[:, 0])) * 2, (2, 24), (50, 24)),
    "linear_tanh_epilogue_tiled": (lambda x, y: torch.tanh(F.linear(x, y)) + x[:, :1], (40, 24), (50, 24)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matmul(name, device_class):
    fn, x_shape, y_shape = CASES[name]
    assert_matches(Fn(fn), torch.randn(x_shape), torch.randn(y_shape), device=device_class)


def test_cost_model_prefers_big_tiles_for_big_products_and_on_cpus():
    def tile(device_class, rows, cols, depth):
        return choose_tile(Gemm(1, rows, cols, depth, None, None, None, device=DEVICE_CLASSES[device_class]))
    assert tile("cpu", 1024, 1024, 1024) == (64, 64)  # a CPU has too few registers for more per thread
    assert tile("gpu", 4096, 4096, 4096) == (64, 64)  # keeps twice the workgroups in flight (DeviceClass.small_tile_occupancy)
    assert tile("cpu", 37, 96, 96) == (64, 64)  # a CPU runs few workgroups at once: fewer, bigger tiles
    assert tile("gpu", 37, 96, 96)[0] < 64  # a GPU would sit idle: more, smaller tiles


def test_cpu_class_gemm_has_no_barriers_and_fills_both_cores():
    load = lambda var, *index: [f"{var} = 1.0;"]
    code, workgroups = gemm_code(Gemm(1, 64, 96, 96, load, load, lambda total, *at: ([], total), device=DEVICE_CLASSES["cpu"]))
    assert "workgroupBarrier" not in code and "var<workgroup>" not in code
    assert "@workgroup_size(16)" in code and workgroups == (6, 1, 1)  # 8 x 8 outputs per thread, 3 workgroups a core


def test_thin_kernel_gives_a_decode_step_hundreds_of_workgroups():
    """A single-row product streams its weight: few columns per workgroup, so an H200's 132
    multiprocessors all have some (DeviceClass.parallel), and 16 loads in flight per thread."""
    load = lambda var, *index: [f"{var} = 1.0;"]

    def workgroups(cols, depth, cols_contiguous):
        g = Gemm(1, 1, cols, depth, load, load, lambda total, *at: ([], total), cols_contiguous=cols_contiguous, device=DEVICE_CLASSES["gpu"])
        return gemm_code(g)[1][0]
    assert workgroups(768, 768, True) == 192  # 4 columns each: below 256, the fewest
    assert workgroups(3072, 768, True) == 384  # 8 columns each
    assert workgroups(50257, 768, True) == 1571  # 32 columns each: a GPT-2 head
    assert workgroups(768, 3072, False) == 384  # an [N, K] weight: 2 columns each, 128 threads along K

