"""Store a convolution's filter channels last where its input is channels last.

The rewrite (ConvNeXt's downsampling: a norm over the channels, stored channels last, then a 2 x 2
convolution of stride 2):

    y = conv2d(x, W, ...)     x a channels-last view ([N, C, H, W] with C's stride 1), W a
                              constant [Cout, Cin, kh, kw] stored contiguously
 -> W's buffer holds W.permute(0, 2, 3, 1) contiguously, and the node reads it through the view
    that permutes it back: [Cout, Cin, kh, kw] with strides (kh * kw * Cin, 1, kw * Cin, Cin)

The implicit GEMM orders k as (kh, kw, c) for such an input (kernels/conv.py: k_channels_last), so
that its threads read runs of neighbouring channels of a pixel where they read pixels 2C values
apart; in this order W's k are neighbours too, and the kernel reads it as the flat [Cout, K]
matrix it reads a channels-first filter as (and by f16 words, as weight_storage.py stores them).

Only for a constant filter that no other node reads, on device classes whose `operand_order` is set
(devices.py), where the convolution's kernel is an implicit GEMM.
"""

from kuma_build.compiler.kernels import conv
from kuma_build.compiler.passes.constants import stored_in_order
from kuma_build.compiler.passes.fuse_elementwise import readers_of


def store_filters_channels_last(graph) -> None:
    if not graph.device.operand_order:
        return
    readers = readers_of(graph)
    for node in graph.nodes:
        if node.op != "conv2d" or not conv.is_implicit_gemm(node, graph.device) or not conv.k_channels_last(node):
            continue
        weight = node.inputs[1]
        if not (weight.is_const and weight.is_contiguous()) or len(readers[weight.buffer]) > 1:
            continue
        node.inputs[1] = stored_in_order(weight, (0, 2, 3, 1))
