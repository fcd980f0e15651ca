"""kuma build: compile PyTorch models into self-contained WebGPU ES modules."""

__version__ = "0.1.0"
