"""Split-K (passes/split_k.py): products with few output tiles and a long K are summed in slices by
the "gpu" class; the partial sums, bias and fused epilogue must give PyTorch's result."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kuma_build.compiler import compile_module
from kuma_build.compiler.kernels import gemm, split_sum
from kuma_build.devices import GPU
from support import F16_MATH_LAYER_BOUND, TOLERANCE, Fn, assert_matches, assert_outputs_match, model_config, reference_outputs, run_compiled


MATMULS = {  # name -> (fn, x shape, y shape)
    "plain": (lambda x, y: x @ y, (20, 600), (600, 30)),
    "addmm_alpha_beta": (lambda x, y: torch.addmm(y[0, :33], x, y[:, 1:34], beta=0.5, alpha=-2.0), (21, 500), (500, 35)),
    "linear_relu_residual": (lambda x, y: F.relu(F.linear(x, y, y[:, 0])) + x[:, :45], (23, 700), (45, 700)),
    "batched": (lambda x, y: x @ y, (3, 17, 400), (3, 400, 19)),
    "transposed_a": (lambda x, y: x.t() @ y, (520, 18), (520, 27)),
}


@pytest.mark.parametrize("name", sorted(MATMULS))
def test_split_matmul(name):
    fn, x_shape, y_shape = MATMULS[name]
    compiled = assert_matches(Fn(fn), torch.randn(x_shape), torch.randn(y_shape), device="gpu")
    assert compiled.stats["dispatches"] == 2  # the partial products, then their sum


class ConvBlock(nn.Module):
    """conv (+ bias) -> relu -> + residual: the epilogue moves into the node that sums the slices."""

    def __init__(self, cin: int, cout: int, groups: int = 1, bias: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, groups=groups, bias=bias)

    def forward(self, x):
        y = F.relu(self.conv(x))
        return y + x[:, : y.shape[1]]


@pytest.mark.parametrize("cin,cout,groups,bias", [(64, 24, 1, True), (72, 30, 2, False)])
def test_split_conv(cin, cout, groups, bias):
    compiled = assert_matches(ConvBlock(cin, cout, groups, bias), torch.randn(1, cin, 7, 6), device="gpu")
    assert compiled.stats["dispatches"] == 2


def test_split_only_when_tiles_are_few_and_k_long():
    assert gemm.choose_split(GPU, 1, 4096, 4096, 4096) == 1  # thousands of tiles already
    assert gemm.choose_split(GPU, 1, 512, 49, 4608) > 1      # ResNet-18's last convolutions at batch 1
    assert gemm.choose_split(GPU, 1, 64, 64, 40) == 1        # K too short to slice
    assert gemm.choose_split(GPU, 1, 4, 4096, 4096) == 1     # thin: that kernel splits K itself


def test_sliced_products_split_as_dawn_measured_them():
    # sliced products (64 x 64 tiles in 2 groups, three workgroups a multiprocessor assumed:
    # DeviceClass.sliced_occupancy) at the transformers' shapes split as the cost model split them in
    # the run on Dawn that made these tiles the default (H200, 2026-12-01 13:20, docs/performance.md):
    # BERT's and GPT-2's 128-row products in 4, 4 and 16 (288 to 384 workgroups), ViT's 197-row
    # query-key-value and feed-forward up in 2
    shapes = [(128, 2304, 768), (128, 3072, 768), (128, 768, 3072), (197, 2304, 768), (197, 3072, 768), (197, 768, 768)]
    assert [gemm.choose_split(GPU, 1, *shape, sliced=True) for shape in shapes] == [4, 4, 16, 2, 2, 8]


class QKV(nn.Module):
    """BERT's self-attention: three linear layers of one input, read as heads by the attention."""

    def __init__(self, dim=96, heads=4, bias=True):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(dim, dim, bias=bias) for _ in range(3))
        self.heads = heads

    def forward(self, x):
        batch, length, dim = x.shape
        q, k, v = (layer(x).view(batch, length, self.heads, dim // self.heads).transpose(1, 2) for layer in (self.q, self.k, self.v))
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, length, dim)


class CrossRows(nn.Module):
    """Two linear layers of one input whose results are read across their rows (a flat view)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(40, 24), nn.Linear(40, 16)

    def forward(self, x):
        return self.a(x).reshape(-1)[5:200] * 2, self.b(x).softmax(-1)


@pytest.mark.parametrize("batch,bias", [(1, True), (2, False)])
def test_linear_layers_of_one_input_merge(batch, bias):
    # queries, keys and values as one product (split, then summed: 2 dispatches), the attention
    compiled = assert_matches(QKV(dim=256, bias=bias), torch.randn(batch, 50, 256), device="gpu")
    assert kernel_names(compiled) == ["matmul", "split_sum", "attention"]
    # f32: the merged weight stored [K, N] with each k's columns together, so its tile is fetched as
    # vec4s (sliced K, kernels/gemm.py), as a single linear layer's is
    assert "fn gemm_b4(" in next(k["code"] for k in compiled.program["kernels"] if k["name"] == "matmul")


def test_results_read_across_rows_are_not_merged():
    compiled = assert_matches(CrossRows(), torch.randn(30, 40), device="gpu")
    assert kernel_names(compiled).count("matmul") == 2


def kernel_names(compiled) -> list[str]:
    return [name for name, _ in dispatched(compiled)]


def dispatched(compiled) -> list[tuple[str, str]]:
    """(kernel name, code) of each dispatch, in order."""
    program = compiled.program
    return [(program["kernels"][dispatch[0]]["name"], program["kernels"][dispatch[0]]["code"]) for dispatch in program["dispatches"]]


class PostNorm(nn.Module):
    """BERT's output block: linear, + residual, layer norm; the sum of the linear's slices is read
    in place by the norm. With `pre_norm`, GPT-2's: the summed stream is read by the norm and by
    the next block's sum as its residual."""

    def __init__(self, depth: int, pre_norm: bool = False, width: int = 48):
        super().__init__()
        self.up, self.down = nn.Linear(width, depth), nn.Linear(depth, width)
        self.norm, self.pre_norm = nn.LayerNorm(width), pre_norm

    def forward(self, x, y):
        stream = x + self.down(F.gelu(self.up(y)))
        if not self.pre_norm:
            return self.norm(stream)
        return stream + self.down(F.relu(self.up(self.norm(stream))))


@pytest.mark.parametrize("depth,pre_norm,width,kernels", [
    (512, False, 48, ["matmul", "matmul", "normalize"]),  # 8 slices: summed by the norm
    # 16: the norm holds its row in registers (2 values a thread, the second round partial), so it
    # adds each element's slices once (the up projection's sum, read by a product, stays)
    (1024, False, 300, ["matmul", "split_sum", "matmul", "normalize"]),
    (512, True, 48, ["matmul", "matmul", "normalize", "matmul", "matmul", "split_sum"]),  # by the norm and the next sum
])
def test_split_sums_read_in_place(depth, pre_norm, width, kernels):
    compiled = assert_matches(PostNorm(depth, pre_norm, width), torch.randn(21, width), torch.randn(21, width), device="gpu")
    assert kernel_names(compiled) == kernels


def test_long_sums_stay_before_a_norm_reading_them_three_times():
    # a norm over all 90 x 48 values: more than 16 a thread, so each pass reads the row from memory
    # and would add the 16 slices three times (a K of 2048: sliced K's 32-k steps, 4 a slice)
    block = PostNorm(2048)
    block.norm = nn.LayerNorm([90, 48])
    compiled = assert_matches(block, torch.randn(90, 48), torch.randn(90, 48), device="gpu")
    assert kernel_names(compiled) == ["matmul", "matmul", "split_sum", "normalize"]


def test_reductions_read_split_sums_in_place():
    # ResNet's global average pool after its last split convolution: a mean over each column here
    compiled = assert_matches(Fn(lambda x, y: torch.relu(x @ y + 1).mean(0)), torch.randn(20, 1200), torch.randn(1200, 30), device="gpu")
    assert kernel_names(compiled) == ["matmul", "reduce_mean"]


def test_softmax_reads_split_sums_in_place():
    # 16 slices and the + 1 of the product's epilogue, summed in the softmax's registers
    compiled = assert_matches(Fn(lambda x, y: torch.softmax(x @ y + 1, -1)), torch.randn(20, 1200), torch.randn(1200, 30), device="gpu")
    assert kernel_names(compiled) == ["matmul", "softmax"]


def test_bert_layer_sums_its_feed_forward_in_the_norm():
    # BERT's layer (post-norm, gelu): the attention's output projection and the feed-forward's
    # 16-slice down projection are summed by the layer norms after them, the queries, keys and values
    # by the copy that lays them out for the attention; the up projection's sum (read by a product) stays
    layer = nn.TransformerEncoderLayer(256, 4, 1024, dropout=0.0, activation="gelu", batch_first=True)
    names = kernel_names(assert_matches(layer, torch.randn(1, 21, 256), device="gpu"))
    assert names.count("normalize") == 2 and names.count("split_sum") == 1
    assert all(before == "matmul" for before, name in zip(names, names[1:]) if name == "normalize")


class PreNormStack(nn.Module):
    """GPT-2's residual stream: blocks of norm, up, relu, down (K of 512: split), + the stream, then a
    final norm. Each block's sum is read by the next block's norm and, as its residual, by the next
    block's sum."""

    def __init__(self, blocks: int = 3, width: int = 72, depth: int = 512):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(blocks + 1))
        self.ups = nn.ModuleList(nn.Linear(width, depth) for _ in range(blocks))
        self.downs = nn.ModuleList(nn.Linear(depth, width) for _ in range(blocks))

    def forward(self, x):
        for norm, up, down in zip(self.norms, self.ups, self.downs):
            x = x + down(F.relu(up(norm(x))))
        return self.norms[-1](x)


@pytest.mark.parametrize("precision", ["f32", "f16"])
@pytest.mark.parametrize("store_first", [True, False])
def test_pre_norm_stream_sums_in_the_norms(precision, store_first, f16_programs_everywhere, monkeypatch):
    # each block's sum is read by the next block's norm, which stores it for the next sum to read as
    # its residual; the last by the final norm (the model's output). Without store_first
    # (split_sum.STORE_BEFORE_NESTING) the first sum is folded instead into the second block's norm
    # and sum, and the second sum, holding the first's slices, is stored by the third block's norm.
    # f16: the "gpu-f16" program (conftest.py: f16_programs_everywhere), whose splits split_k chooses for f16 weights
    monkeypatch.setattr(split_sum, "STORE_BEFORE_NESTING", store_first)
    torch.manual_seed(0)
    net = PreNormStack().eval()
    if precision == "f16":  # weights f16 can hold exactly, so the build's f16 weights give PyTorch's result
        for down, up in zip(net.downs, net.ups):
            down.weight.data, up.weight.data = down.weight.data.half().float(), up.weight.data.half().float()
    x = torch.randn(21, 72)
    config = dataclasses.replace(model_config(net, [x], device="gpu"), precision=precision)
    compiled = compile_module(net, config)
    assert list(compiled.programs) == (["gpu-f16", "gpu"] if precision == "f16" else ["gpu"])
    tolerance = F16_MATH_LAYER_BOUND if precision == "f16" else TOLERANCE  # its products multiply in f16
    assert_outputs_match(run_compiled(compiled, config, [x]), reference_outputs(net, config, {"x": x}), tolerance)
    assert kernel_names(compiled) == ["normalize", "matmul", "matmul"] * 3 + ["normalize"]
    norms = [code.replace(" ", "") for name, code in dispatched(compiled) if name == "normalize"]
    # (adds slices in place, stores the sum)
    assert [("fnsum_in" in code, "]=x;" in code) for code in norms] == [(False, False), (True, store_first), (True, True), (True, False)]


class TransposedNorm(nn.Module):
    """A split sum read first by a norm over its columns (a transposed view), then by a product."""

    def __init__(self):
        super().__init__()
        self.up, self.down, self.norm = nn.Linear(40, 512), nn.Linear(512, 40), nn.LayerNorm(21)
        self.after, self.other = nn.Linear(21, 30), nn.Linear(40, 24)

    def forward(self, x, y):
        h = x + self.down(F.relu(self.up(y)))
        return self.after(self.norm(h.t())), self.other(h)


def test_norm_stores_a_sum_it_reads_transposed():
    compiled = assert_matches(TransposedNorm(), torch.randn(21, 40), torch.randn(21, 40), device="gpu")
    assert "split_sum" not in kernel_names(compiled)


class LayerScale(nn.Module):
    """ConvNeXt's block end: a channels-last linear layer (K of 600: split), scaled, permuted back to
    channels first, + the block's input."""

    def __init__(self, channels: int = 30, hidden: int = 600):
        super().__init__()
        self.up, self.down = nn.Linear(channels, hidden), nn.Linear(hidden, channels)
        self.gamma = nn.Parameter(torch.randn(channels))

    def forward(self, x):
        y = self.gamma * self.down(F.gelu(self.up(x.permute(0, 2, 3, 1))))
        return x + y.permute(0, 3, 1, 2)


def test_elementwise_reads_split_sums_through_a_permute(monkeypatch):
    # the residual add reads the scaled sum channels first: its elementwise kernel adds the slices
    compiled = assert_matches(LayerScale(), torch.randn(1, 30, 7, 6), device="gpu")
    assert kernel_names(compiled) == ["matmul", "matmul", "elementwise"]
    # its threads go in the sum's order (channels last), reading the slices in order; the store scatters
    assert "out[gid]" not in [code.replace(" ", "") for name, code in dispatched(compiled) if name == "elementwise"][0]
    monkeypatch.setattr(split_sum, "FOLD_PER_ELEMENT", False)  # the A/B switch (bench.py --gemm-knob)
    net, x = LayerScale().eval(), torch.randn(1, 30, 7, 6)
    assert kernel_names(compile_module(net, model_config(net, [x], device="gpu"))) == ["matmul", "matmul", "split_sum", "elementwise"]


class Patches(nn.Module):
    """ViT's embedding: patches (a convolution with K of 768: split) as tokens after a class token."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 40, 16, stride=16)
        self.token = nn.Parameter(torch.randn(1, 1, 40))

    def forward(self, x):
        return torch.cat([self.token, self.conv(x).flatten(2).transpose(1, 2)], 1) * 2


def test_concat_reads_split_sums_in_place():
    compiled = assert_matches(Patches(), torch.randn(1, 3, 80, 48), device="gpu")  # 15 patches
    assert "split_sum" not in kernel_names(compiled)
