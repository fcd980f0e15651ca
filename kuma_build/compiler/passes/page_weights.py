"""Split a weight too big for one storage binding into pages.

WebGPU guarantees a storage binding of 128 MiB (maxStorageBufferBindingSize, the device class's
binding_bytes), and GPT-2's token embedding alone is 154 MB. A constant of more bytes becomes
several GPU buffers of at most that size, bound side by side: Buffer.page elements each. Kernels
read it through a page_<var>(i) function that picks the page (kernels/wgsl.py: page_reader), the
plan gives it a buffer per page and emit splits its copies at the page ends, so such a model
runs on a device with the default limits. Runs after the weight storage is chosen (it pages
stored bytes) and after fusion (it checks each kernel's bindings once more: a kernel whose pages
take it past the device's storage buffers per stage is a clear error). Inputs, outputs,
activations and f16/int8 weights (whose readers unpack words across elements) are not paged: a
device whose limits allow them runs them, and on any other the runtime names the buffer and the
limit at load, before it creates anything.
"""

from kuma_build.compiler.kernels.wgsl import binding_buffers
from kuma_build.errors import KumaError


def page_weights(graph) -> None:
    device = graph.device
    for node in graph.nodes:
        buffers = binding_buffers(node)
        for buf in buffers:
            if buf.nbytes > device.binding_bytes and buf.kind == "const" and buf.storage == "f32" and not buf.page:
                buf.page = device.binding_bytes // 4
        storage = sum(buf.pages for buf in buffers if buf.kind != "dims")  # the dims are a uniform buffer
        if storage > device.storage_buffers:
            raise KumaError(f"a {node.op} kernel would bind {storage} storage buffers once its large "
                            f"weights are split to fit the binding limit; WebGPU guarantees {device.storage_buffers} per stage.",
                            *_where(node))


def _where(node) -> tuple:
    """(file, line) of the user's code that made the node, for the error."""
    file, _, line = node.where.rpartition(":")
    return (file, int(line)) if line.isdigit() else (None, None)
