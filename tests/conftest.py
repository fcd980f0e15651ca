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
