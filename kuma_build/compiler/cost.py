"""What each dispatch costs: an estimate of the bytes it moves and the flops it does.

`kuma bench` divides these by the measured kernel times to report GB/s and
GFLOP/s against the card's copy bandwidth and matmul peak. They are written to
manifest.json (never to index.js, which the browser downloads).

    bytes  each input view's distinct elements once (stride-0 broadcast dims
           count once), at its buffer's stored width, plus the output; an
           estimate: re-reads that miss the caches are not counted
    flops  each op's record says (compiler/ops.py): matmul 2*M*N*K per batch;
           conv 2 * out * Cin/groups * kh * kw (transposed: per input element);
           attention 4 * Lq * Lk * d per head; pooling one per window element;
           anything else one per element of its largest operand, a rough figure
"""

from math import prod

from kuma_build.compiler.ir.graph import Value
from kuma_build.compiler.ir.sizes import max_value
from kuma_build.compiler.ops import record


def distinct_bytes(v: Value) -> int:
    """Bytes of the elements a strided view reaches: broadcast dims count once."""
    reached = max_value(prod(size for size, stride in zip(v.shape, v.strides) if stride != 0))
    per_element = v.buffer.nbytes / max(v.buffer.numel, 1)  # 4 for f32, less for f16/int8 weights
    return round(min(reached, v.buffer.numel) * per_element)


def dispatch_costs(graph, plan) -> list[list[int]] | None:
    """[bytes, flops] per dispatch; None when the plan's dispatches are not one per node."""
    if len(plan.dispatches) != len(graph.nodes):
        return None
    return [[sum(distinct_bytes(v) for v in node.inputs) + node.output.buffer.nbytes, max_value(record(node).flops(node))]
            for node in graph.nodes]  # at the dims' max
