"""rows.workgroup_reduce (lines of main) on real WebGPU against numpy: every thread gets its group's total, for the
workgroup sizes and interleaved groups its callers use (a norm's 256 threads, the depthwise norm's
pixels, the thin product's lanes) and ones whose values a power of two does not divide; called twice
in a row, as a norm's mean and squares are, so the second call must not see the first's values."""

import numpy as np
import pytest
import wgpu

from kuma_build.compiler.kernels.rows import workgroup_reduce, workgroup_scratch
from kuma_build.compiler.kernels.wgsl import indent
from kuma_build.webgpu import adapter_and_device

COMBINE = {"sum": np.sum, "max": np.max}


def run(kind: str, size: int, lanes: int, x: np.ndarray) -> np.ndarray:
    """Each workgroup of `size` threads reduces its slice of x, then 2 * x, in `lanes` groups; out
    holds each thread's two totals."""
    _, device = adapter_and_device()
    code = f"""@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;

{workgroup_scratch("reduce", "f32", size, lanes)}

@compute @workgroup_size({size})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {{
  let at = wg.x * {size}u + li;
{indent(workgroup_reduce("reduce", kind, "f32", size, lanes, "first", "x[at]", "li"))}
{indent(workgroup_reduce("reduce", kind, "f32", size, lanes, "second", "2.0 * x[at]", "li"))}
  out[2u * at] = first;
  out[2u * at + 1u] = second;
}}
"""
    pipeline = device.create_compute_pipeline(layout="auto", compute={"module": device.create_shader_module(code=code), "entry_point": "main"})
    source = device.create_buffer_with_data(data=x.astype(np.float32).tobytes(), usage=wgpu.BufferUsage.STORAGE)
    out = device.create_buffer(size=8 * x.size, usage=wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC)
    bind = device.create_bind_group(layout=pipeline.get_bind_group_layout(0), entries=[
        {"binding": 0, "resource": {"buffer": source}}, {"binding": 1, "resource": {"buffer": out}}])
    encoder = device.create_command_encoder()
    compute = encoder.begin_compute_pass()
    compute.set_pipeline(pipeline)
    compute.set_bind_group(0, bind)
    compute.dispatch_workgroups(x.size // size)
    compute.end()
    device.queue.submit([encoder.finish()])
    return np.frombuffer(device.queue.read_buffer(out), dtype=np.float32).reshape(-1, 2)


@pytest.mark.parametrize("kind", sorted(COMBINE))
@pytest.mark.parametrize("size, lanes", [(256, 1), (256, 2), (256, 8), (256, 32), (128, 1), (96, 1), (24, 8), (64, 64)])
def test_every_thread_gets_its_groups_total(kind, size, lanes):
    workgroups = 3
    x = np.random.default_rng(size + lanes).standard_normal(workgroups * size).astype(np.float32)
    got = run(kind, size, lanes, x)
    # thread t of workgroup w belongs to group t % lanes: the values at slots t % lanes, t % lanes + lanes, ...
    groups = x.reshape(workgroups, size // lanes, lanes)
    expected = COMBINE[kind](groups, axis=1)  # [workgroup, lane]
    lane_of = np.arange(size) % lanes
    for call, scale in enumerate((1.0, 2.0)):
        want = (scale * expected)[:, lane_of].reshape(-1)
        np.testing.assert_allclose(got[:, call], want, rtol=1e-5, atol=1e-5 * np.abs(x).max() * size)
