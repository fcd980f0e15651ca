"""Matrix products -> one batched "matmul" IR node: out[b] = alpha * A[b] @ B[b] + beta * bias[b].

Transposed or broadcast operands stay strided views; the kernel reads them
through their strides, so `x @ w.t()` needs no copy.
"""

from kuma_build.compiler.ir import views
from kuma_build.compiler.ir.graph import Value
from kuma_build.compiler.ir.registry import aten


def matmul(ctx, a: Value, b: Value, bias: Value | None = None, alpha=1.0, beta=1.0) -> Value:
    batch, m, k = a.shape
    n = b.shape[2]
    inputs = [a, b]
    if bias is not None:
        inputs.append(views.expand(bias, (batch, m, n)))
    return ctx.emit("matmul", inputs, (batch, m, n), "f32", alpha=float(alpha), beta=float(beta))


@aten("mm.default")
def mm(ctx, a, b):
    out = matmul(ctx, views.unsqueeze(a, 0), views.unsqueeze(b, 0))
    return views.squeeze(out, [0])


@aten("bmm.default")
def bmm(ctx, a, b):
    return matmul(ctx, a, b)


@aten("addmm.default")
def addmm(ctx, bias, a, b, beta=1, alpha=1):
    out = matmul(ctx, views.unsqueeze(a, 0), views.unsqueeze(b, 0), views.expand(bias, (a.shape[0], b.shape[1])), alpha, beta)
    return views.squeeze(out, [0])


@aten("baddbmm.default")
def baddbmm(ctx, bias, a, b, beta=1, alpha=1):
    return matmul(ctx, a, b, views.expand(bias, (a.shape[0], a.shape[1], b.shape[2])), alpha, beta)
