"""kuma build: compile PyTorch models into self-contained WebGPU ES modules."""

from pathlib import Path

__version__ = "0.1.0"

# runtime.js and the `kuma init` files: templates/ beside the package in a checkout (and an editable
# install), kuma_build/templates inside an installed wheel (pyproject.toml maps it there)
TEMPLATES = next(p for p in (Path(__file__).resolve().parent / "templates", Path(__file__).resolve().parent.parent / "templates") if p.is_dir())
