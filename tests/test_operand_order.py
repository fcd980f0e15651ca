"""passes/operand_order.py: an elementwise result read from a product through a permutation is
stored in the product's order, and its readers' views follow; on real WebGPU against PyTorch."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kuma_build.compiler import compile_for
from kuma_build.compiler.export import export
from kuma_build.compiler.ir.graph import Buffer, Value
from kuma_build.compiler.passes.operand_order import _rebased
from kuma_build.devices import GPU
from support import assert_matches, model_config


class Stage(nn.Module):
    """A ConvNeXt stage: blocks of a depthwise 7 x 7 convolution, a layer norm over the channels
    (channels last), a feed-forward and a layer-scaled residual add back channels first; then a
    downsampling norm over the channels and a mean over the pixels."""

    def __init__(self, channels: int = 40, blocks: int = 2, hidden: int = 160):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 7, padding=3, groups=channels) for _ in range(blocks))
        self.norms = nn.ModuleList(nn.LayerNorm(channels, eps=1e-6) for _ in range(blocks))
        self.ups = nn.ModuleList(nn.Linear(channels, hidden) for _ in range(blocks))
        self.downs = nn.ModuleList(nn.Linear(hidden, channels) for _ in range(blocks))
        self.gammas = nn.ParameterList(nn.Parameter(torch.rand(channels) + 0.5) for _ in range(blocks))
        self.last = nn.LayerNorm(channels, eps=1e-6)

    def forward(self, x):
        for conv, norm, up, down, gamma in zip(self.convs, self.norms, self.ups, self.downs, self.gammas):
            y = down(F.gelu(up(norm(conv(x).permute(0, 2, 3, 1)))))
            x = x + (gamma * y).permute(0, 3, 1, 2)
        x = self.last(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return x.mean((-2, -1)), x[:, 3:9]


def graph_of(module, *inputs, devices=(GPU,)):
    """module's graph after the passes for each device class (one export)."""
    config = model_config(module, inputs, device="gpu")
    exported, names, outputs = export(module.eval(), config)
    graphs = [compile_for(device, exported, config, names, outputs, None).graph for device in devices]
    return graphs if len(devices) > 1 else graphs[0]


# 40 channels: 8 pixels a depthwise workgroup, its threads on neighbouring channels; 300: 2 pixels,
# its threads on neighbouring pixels (kernels/depthwise_norm.py: PIXELS_FASTEST); 13 x 11 pixels,
# neither channels nor pixels a multiple of a workgroup's threads
@pytest.mark.parametrize("channels", [40, 300])
def test_a_convnext_stage_runs_channels_last(channels):
    torch.manual_seed(0)
    module, x = Stage(channels), torch.randn(1, channels, 13, 11)
    assert_matches(module, x, device="gpu")
    graph, plain = graph_of(module, x, devices=(GPU, dataclasses.replace(GPU, operand_order=False)))
    adds = [n for n in graph.nodes if n.op == "elementwise" and len(n.output.shape) == 4]
    # both residual adds store channels last: [1, C, H, W] at strides (HWC, 1, WC, C)
    assert [n.output.strides[1:] for n in adds[:2]] == [(1, 11 * channels, channels)] * 2
    # the second block's depthwise convolution + norm reads the first add channels last
    depthwise = [n for n in graph.nodes if n.op == "depthwise_norm"]
    assert depthwise[1].inputs[0].buffer is adds[0].output.buffer and depthwise[1].inputs[0].strides[1] == 1
    # the same dispatches as without the pass
    assert [n.op for n in graph.nodes] == [n.op for n in plain.nodes]
    assert all(n.output.is_contiguous() for n in plain.nodes if n.op == "elementwise")


class Unsplit(nn.Module):
    """A product of short K (never split) read channels first by an add, whose threads then go in
    its stored order; two readers of the add take it in the new layout."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(12, 20)

    def forward(self, x, r):
        y = self.linear(x).permute(0, 2, 1) + r  # [2, 20, 15]
        return torch.tanh(y) * 2.0, y.sum(-1)


class Merged(Unsplit):
    """The same add read by a reader that merges its dims: it stays contiguous."""

    def forward(self, x, r):
        y = self.linear(x).permute(0, 2, 1) + r
        return y.flatten(1).softmax(-1)  # a reader merging y's dims: y stays contiguous


def test_an_unsplit_product_read_through_a_permutation():
    torch.manual_seed(1)
    x, r = torch.randn(2, 15, 12), torch.randn(2, 20, 15)
    assert_matches(Unsplit(), x, r, device="gpu")
    graph = graph_of(Unsplit(), x, r)
    assert any(n.op == "elementwise" and not n.output.is_contiguous() for n in graph.nodes)
    assert_matches(Merged(), x, r, device="gpu")
    assert all(n.output.is_contiguous() for n in graph_of(Merged(), x, r).nodes)


@pytest.mark.parametrize("view", [
    ((2, 3, 4, 5), (60, 20, 5, 1), 0),      # the whole tensor
    ((2, 4, 5, 3), (60, 5, 1, 20), 0),      # permuted
    ((2, 3, 2, 5), (60, 20, 5, 1), 5),      # rows 1..2 of dim 2
    ((3, 5), (20, 1), 65),                  # a select of dims 0 and 2
    ((2, 3, 2, 2), (60, 20, 10, 2), 1),     # strided slices
    ((2, 7, 3), (60, 0, 20), 4),            # a broadcast dim
])
def test_views_rebased_read_the_same_elements(view):
    shape, layout = (2, 3, 4, 5), (60, 1, 15, 3)  # stored as [2, 4, 5, 3]: dim 1 last
    tensor = torch.randn(shape)
    stored = tensor.permute(0, 2, 3, 1).contiguous().flatten()
    size, strides, offset = view
    buffer = Buffer(120, "f32", "temp")
    rebased = _rebased(Value(buffer, size, strides, offset), shape, layout)
    expected = torch.as_strided(tensor.flatten(), size, strides, offset)
    assert torch.equal(torch.as_strided(stored, rebased.shape, rebased.strides, rebased.offset), expected)


@pytest.mark.parametrize("view", [
    ((2, 3, 20), (60, 20, 1), 0),   # dims 2 and 3 merged
    ((2, 3, 4, 5), (60, 20, 5, 1), 5),  # runs past dim 2's end
])
def test_views_that_cannot_be_rebased(view):
    size, strides, offset = view
    assert _rebased(Value(Buffer(120, "f32", "temp"), size, strides, offset), (2, 3, 4, 5), (60, 1, 15, 3)) is None
