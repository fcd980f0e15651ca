import os

import pytest

from kuma_build.errors import KumaError
from kuma_build.webgpu import adapter_and_device


@pytest.fixture(scope="session", autouse=True)
def webgpu_adapter():
    """Every test runs on a real Vulkan WebGPU adapter; under CI a missing one is a failure, never a skip."""
    try:
        adapter, _ = adapter_and_device()
    except KumaError as e:
        if os.environ.get("CI"):
            pytest.fail(f"no Vulkan WebGPU adapter under CI: {e}")
        pytest.skip(f"no Vulkan WebGPU adapter: {e}")
    assert adapter.info["backend_type"] == "Vulkan"
    return adapter


@pytest.fixture(params=["cpu", "gpu"])
def device_class(request):
    """Each device class (kuma_build/devices.py), for tests whose kernels differ between them."""
    return request.param


@pytest.fixture
def tiles_as_written(monkeypatch):
    """The gpu class's tile cost model without the occupancy of small tiles
    (DeviceClass.small_tile_occupancy) and the partial sums' traffic (gemm.SPLIT_TRAFFIC), for tests
    whose small layers were sized for the tiles and splits it picked before: with them their
    products get tiles too small for the paths they test (tiles of each size, subgroup matrices).
    Nor the subgroup-matrix products' own tile (gemm_matrix.TILE), which would replace those tiles.
    GPU is frozen: its field is set in place."""
    from kuma_build.compiler.kernels import gemm, gemm_matrix
    from kuma_build.devices import GPU
    monkeypatch.setitem(GPU.__dict__, "small_tile_occupancy", 1)
    monkeypatch.setattr(gemm, "SPLIT_TRAFFIC", 0.0)
    monkeypatch.setattr(gemm_matrix, "OWN_TILE", False)


@pytest.fixture
def matrices_everywhere(monkeypatch):
    """Subgroup-matrix variants on every product that can take one, not only where they were
    measured faster (gemm_matrix.worthwhile): the kernel's tests cover convolutions, odd rows, short K."""
    from kuma_build.compiler.kernels import gemm_matrix
    monkeypatch.setattr(gemm_matrix, "ONLY_WHERE_FASTER", False)


@pytest.fixture
def f16_programs_everywhere(monkeypatch):
    """An f16 build's "gpu-f16" program written also where no kernel has a subgroup-matrix variant
    (compiler.ONLY_WITH_MATRICES), for tests of the shader-f16 code of products that take none (thin
    ones, small tiles; convolutions need it only beside linear layers: compiler.convolutions_only):
    the code a model's "gpu-f16" program ships for them beside products that do."""
    from kuma_build import compiler
    monkeypatch.setattr(compiler, "ONLY_WITH_MATRICES", False)
