"""Passes: IR -> IR rewrites, run in order. Each is a function graph -> None.

They run for the graph's device class (graph.device, devices.py), which merge_products, split_k and
the fusion passes' binding limit consult; what they need to know of each op they ask its record
(compiler/ops.py)."""

from kuma_build.compiler.passes.constants import pack_constant_views
from kuma_build.compiler.passes.dead_code import remove_dead_nodes
from kuma_build.compiler.passes.elide_copies import elide_copies
from kuma_build.compiler.passes.filter_order import store_filters_channels_last
from kuma_build.compiler.passes.fold_batchnorm import fold_batchnorm
from kuma_build.compiler.passes.fuse_channel_norm import fuse_channel_norms
from kuma_build.compiler.passes.fuse_elementwise import fuse_elementwise
from kuma_build.compiler.passes.fuse_epilogue import fuse_epilogues
from kuma_build.compiler.passes.fuse_rms_norm import fuse_rms_norms
from kuma_build.compiler.passes.merge_products import merge_products
from kuma_build.compiler.passes.narrow_rows import narrow_rows
from kuma_build.compiler.passes.operand_order import store_in_operand_order
from kuma_build.compiler.passes.outputs import materialize_outputs
from kuma_build.compiler.passes.split_k import split_k
from kuma_build.compiler.passes.split_keys import split_keys
from kuma_build.compiler.passes.state import write_state

PASSES = [write_state, fold_batchnorm, pack_constant_views, materialize_outputs, narrow_rows, fuse_elementwise, fuse_rms_norms, fuse_epilogues, store_in_operand_order, store_filters_channels_last, fuse_channel_norms, elide_copies, merge_products, split_k, split_keys, remove_dead_nodes]


def run_passes(graph) -> None:
    for compiler_pass in PASSES:
        compiler_pass(graph)
