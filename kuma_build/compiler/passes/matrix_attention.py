"""Attention on tensor cores (an f16 build's "-f16" program only): kernels/attention_matrix.py.

That program runs only where the adapter has shader-f16 and subgroup matrices (devices.F16_PROGRAM),
so there the attention's two products can run on them, as its linear layers do.

Rewrite: attrs["matrices"] = True on an attention node that attention.py's tiled kernel would take
(enough query rows, fixed sizes, not split over workgroups) and whose shapes attention_matrix.fits;
kernels/attention_decode.lower_attention then lowers it there.
"""

from kuma_build.compiler.kernels import attention_matrix
from kuma_build.compiler.kernels.attention import uses_flash


def attention_on_matrices(graph) -> None:
    if not attention_matrix.ON_MATRICES:
        return
    for node in graph.nodes:
        if node.op == "attention" and uses_flash(node, graph.device) and attention_matrix.fits(node, graph.device):
            node.attrs["matrices"] = True
