"""One case per kernel family (and per WGSL helper) in Chromium: Chromium's WGSL compiler (Tint)
is stricter than wgpu's (naga) in places, and SwiftShader's math differs from lavapipe's."""

import pytest
import torch
import torch.nn.functional as F

from browser_support import assert_matches_in_browser
from support import Fn

pytestmark = pytest.mark.browser


CASES = {
    "unary_helpers": (lambda x, y: F.gelu(x) + torch.erf(y) + x.abs() ** 1.5 + torch.tanh(x * 20) + F.silu(y) + x.sign(),
                      (3, 7, 11), (7, 11)),
    "vec4_elementwise": (lambda x, y: F.gelu(x) * y + torch.erf(y) - x.abs() ** 1.5, (8, 33), (8, 33)),
    "inf_literals": (lambda x, y: torch.softmax(x.masked_fill(y > 0.5, float("-inf")), -1) + x.clamp(max=float("inf")),
                     (4, 9), (4, 9)),
    "integer_ops": (lambda x, y: (x > y).sum(-1, keepdim=True) + torch.argmax(x, -1, keepdim=True) + (x * 3).floor().int() // 2,
                    (5, 13), (5, 13)),
    "matmul_bias_transposed": (lambda x, y: torch.addmm(y[:, 0], x, y.t()), (70, 33), (9, 33)),
    "bmm_broadcast": (lambda x, y: x @ y, (2, 3, 17, 20), (20, 5)),
    "conv_groups_dilation": (lambda x, y: F.conv2d(x, y, stride=2, padding=2, dilation=2, groups=3), (1, 6, 13, 11), (9, 2, 3, 3)),
    "conv_transpose": (lambda x, y: F.conv_transpose2d(x, y, stride=2, padding=1, output_padding=1), (1, 4, 7, 6), (4, 3, 3, 3)),
    "pools": (lambda x, y: F.max_pool2d(x, 3, 2, 1, ceil_mode=True).sum() + F.avg_pool2d(x, 2, count_include_pad=False, padding=1).mean()
              + F.adaptive_avg_pool2d(x, (5, 3)) .sum() + y.sum(), (2, 3, 13, 11), (1,)),
    "resize": (lambda x, y: F.interpolate(x, scale_factor=1.5, mode="bilinear") .mean((2, 3)) + F.interpolate(x, size=(7, 9)).mean((2, 3)) + y,
               (1, 3, 10, 6), (3,)),
    "norms": (lambda x, y: F.layer_norm(x, (12,), y[0, 0], y[0, 1]) + F.group_norm(x.transpose(1, 2), 3, y[1, 0], y[1, 1]).transpose(1, 2),
              (2, 9, 12), (2, 2, 12)),
    "reductions": (lambda x, y: x.amax(0) + x.mean((0, 2), keepdim=True)[0] * y + x.var(-1).sum(0)[:, None], (3, 5, 37), (5, 37)),
    "softmax_middle": (lambda x, y: torch.log_softmax(x * 20, 1) + y, (2, 300, 3), (3,)),
    "attention_mask": (lambda x, y: F.scaled_dot_product_attention(x, y, y, attn_mask=torch.ones(13, 9).tril().bool()), (1, 2, 13, 24), (1, 2, 9, 24)),
    "pad_cat_gather": (lambda x, y: torch.cat([F.pad(x, (1, 2, 0, 1)), y], 0)[:, torch.tensor([2, 0, 4])], (2, 5, 4), (3, 6, 7)),
    "fused_epilogues": (lambda x, y: (F.gelu(x @ y) + x[:, :1]).clamp(max=float("inf")) + F.silu(F.layer_norm(x, (12,)))[:, :7],
                        (5, 12), (12, 7)),
    "index_writes": (lambda x, y: (x.index_copy(1, torch.tensor([4, 0]), y[:, :2]) + x.index_put((torch.tensor([-1]),), y[0, 0])
                                  + x.slice_scatter(y[:, :2], dim=1, start=1, end=5, step=2)),
                     (3, 5, 7), (3, 4, 7)),
    "grouped_query_attention": (lambda x, y: F.scaled_dot_product_attention(x, y, y * 2, attn_mask=(torch.arange(9) <= 5)[None], enable_gqa=True),
                                (1, 6, 13, 24), (1, 2, 9, 24)),
    "cumsum_topk": (lambda x, y: torch.cumsum(x, -1) + torch.topk(y, 3, -1)[0].sum(-1, keepdim=True) + torch.topk(y, 2, 0)[1][:1].float(),
                    (5, 13), (5, 13)),
    "conv_channel_blocks_epilogue": (lambda x, y: F.hardswish(F.conv2d(x, y, padding=1)) + x.mean(), (1, 4, 9, 8), (8, 4, 3, 3)),
    "causal_attention_long": (lambda x, y: F.scaled_dot_product_attention(x, y, y * 2, is_causal=True), (1, 2, 70, 37), (1, 2, 70, 37)),
    # on "gpu": one kernel (kernels/depthwise_norm.py), its sums through workgroup memory
    "depthwise_layer_norm": (lambda x, y: F.layer_norm(F.conv2d(x, y, padding=3, groups=40).permute(0, 2, 3, 1), (40,)), (1, 40, 13, 11), (40, 1, 7, 7)),
    "decode_attention": (lambda x, y: F.scaled_dot_product_attention(x, y, y * 2, attn_mask=(torch.arange(1500) <= 1000)[None], enable_gqa=True) @ y[0, 0, :40],
                         (1, 6, 1, 40), (1, 2, 1500, 40)),  # on "gpu": keys split over workgroups, then a thin product
    # on "gpu": the attention rotates its queries as it reads them (a concatenation's pieces, kernels/attention_decode.py)
    "decode_rotated_queries": (lambda x, y: F.scaled_dot_product_attention(
        torch.cat([x[..., :20] * 0.8 - x[..., 20:] * 0.6, x[..., 20:] * 0.8 + x[..., :20] * 0.6], -1), y, y * 2, enable_gqa=True),
        (1, 6, 1, 40), (1, 2, 300, 40)),
    # on "gpu": split-K sums read in place, one by a norm that stores it for a product, one by an
    # elementwise kernel through a transpose (its threads in the sum's order, its store scattered)
    "split_sum_folds": (lambda x, y: ((lambda s: F.layer_norm(s, (30,)) @ y[:30, :7] + s @ y[30:60, :7])(x @ y[:, :30])
                                      + ((x @ y[:, 7:37]).t() * 2)[:7].t()), (20, 1100), (1100, 37)),
    # a classifier reading the first row (passes/narrow_rows.py): the norm, the product, the heads'
    # copy and the attention's queries computed for that row alone; its keys and values whole
    "class_token_rows": (lambda x, y: F.layer_norm(F.scaled_dot_product_attention(x, x, x * 2).transpose(1, 2).reshape(1, 17, 48) @ y, (5,))[:, 0],
                         (1, 2, 17, 24), (48, 5)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_kernel_family_in_chromium(tmp_path, name):
    fn, x_shape, y_shape = CASES[name]
    assert_matches_in_browser(Fn(fn), torch.randn(x_shape), torch.randn(y_shape), out_dir=tmp_path)


@pytest.mark.parametrize("name", ["attention_mask", "bmm_broadcast", "causal_attention_long", "class_token_rows", "conv_channel_blocks_epilogue",
                                  "conv_groups_dilation", "decode_attention", "decode_rotated_queries", "depthwise_layer_norm", "grouped_query_attention", "matmul_bias_transposed",
                                  "norms", "softmax_middle", "split_sum_folds"])
def test_gpu_device_class_in_chromium(tmp_path, name):
    # the kernels tuned for GPUs (implicit-GEMM convolutions, smaller tiles, tiled attention, rows
    # shared by a workgroup and held in registers) through Tint too
    fn, x_shape, y_shape = CASES[name]
    assert_matches_in_browser(Fn(fn), torch.randn(x_shape), torch.randn(y_shape), out_dir=tmp_path, device="gpu")
