"""kuma.toml: the project file that names the models to compile.

    [build]
    out_dir = "src/kuma"
    chunk_size = "4MiB"
    types = "src/kuma-env.d.ts"                   # optional: exact TypeScript types of `kuma:NAME`

    [models.classifier]
    source = "models/classifier.py"
    factory = "build_model"
    weights = "weights/classifier.safetensors"   # optional
    precision = "f32"
    outputs = ["logits"]                          # optional output names
    [models.classifier.inputs]
    image = { shape = [1, 1, 28, 28], dtype = "float32" }

Every mistake is reported with the kuma.toml line that holds it.
"""

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from kuma_build.errors import KumaError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on python 3.10 only
    import tomli as tomllib

CONFIG_NAME = "kuma.toml"
INPUT_DTYPES = ("float32", "int32", "int64")
PRECISIONS = ("f32", "f16", "int8")  # see compiler/precision.py
BUILD_KEYS = {"out_dir", "chunk_size", "cache_dir", "types"}
CACHE_KEYS = {"remote", "remote_write", "remote_auth_env", "remote_timeout"}
MODEL_KEYS = {"source", "factory", "weights", "precision", "inputs", "outputs", "target"}
TARGETS = ("gpu", "cpu")  # device classes kernels are tuned for (kernels/gemm.py)
SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2, "gb": 1000**3, "gib": 1024**3}


@dataclass
class InputSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass
class ModelConfig:
    name: str
    source: Path
    factory: str
    weights: Path | None
    precision: str
    inputs: list[InputSpec]
    outputs: list[str] | None
    section: dict = field(repr=False)  # the raw table, for cache keys
    target: str | None = None  # "gpu" | "cpu"; None keeps the compiler's current device class


@dataclass
class RemoteCacheConfig:
    url: str  # http://host:port/prefix
    write: bool = True
    auth_env: str | None = None  # environment variable holding the Authorization header's value
    timeout: float = 5.0


@dataclass
class Project:
    path: Path  # the kuma.toml file
    root: Path
    out_dir: Path
    chunk_size: int
    models: dict[str, ModelConfig]
    cache_dir: Path = None
    remote: RemoteCacheConfig | None = None
    types: Path | None = None  # kuma-env.d.ts, rewritten after every build (jsmodule.render_env_dts)


class _Locator:
    """Finds the kuma.toml line of a section or key, for error messages."""

    def __init__(self, path: Path, text: str):
        self.path, self.lines = path, text.splitlines()

    def line(self, section: str, key: str | None = None) -> int | None:
        header = re.compile(r"^\s*\[\s*" + re.escape(section).replace(r"\.", r"\s*\.\s*") + r"\s*\]")
        start = next((i for i, l in enumerate(self.lines) if header.match(l)), None)
        if start is None:
            return None
        if key is None:
            return start + 1
        key_re = re.compile(r"^\s*" + re.escape(key) + r"\s*=")
        for i in range(start + 1, len(self.lines)):
            if self.lines[i].lstrip().startswith("[") and not self.lines[i].lstrip().startswith("[["):
                break
            if key_re.match(self.lines[i]):
                return i + 1
        return start + 1

    def error(self, message: str, section: str, key: str | None = None) -> KumaError:
        return KumaError(message, self.path, self.line(section, key))


def parse_size(text, where: _Locator) -> int:
    if isinstance(text, int) and text > 0:
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not match or match.group(2).lower() not in SIZE_UNITS or float(match.group(1)) <= 0:
        raise where.error(f'chunk_size = "{text}" is not a size; write e.g. "4MiB", "512KiB" or a byte count.', "build", "chunk_size")
    size = int(float(match.group(1)) * SIZE_UNITS[match.group(2).lower()])
    if size < 4096:
        raise where.error(f"chunk_size {size} bytes is too small; use at least 4KiB.", "build", "chunk_size")
    return size - size % 4


def find_config(start: Path) -> Path:
    for folder in [start, *start.parents]:
        if (folder / CONFIG_NAME).is_file():
            return folder / CONFIG_NAME
    raise KumaError(f"no {CONFIG_NAME} found here or in any parent folder; create one (see docs/kuma-toml.md) or pass --config PATH.", start)


def load_project(path: Path) -> Project:
    path = path.resolve()
    try:
        text = path.read_text()
    except OSError as e:
        raise KumaError(f"cannot read the project file ({e.strerror}); pass --config with the path of your kuma.toml.", path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        line = getattr(e, "lineno", None) or _line_from_message(str(e))
        raise KumaError(f"invalid TOML: {getattr(e, 'msg', str(e))}. Fix the syntax at that line.", path, line)
    where = _Locator(path, text)
    root = path.parent

    build = data.get("build", {})
    for key in build:
        if key not in BUILD_KEYS:
            raise where.error(f"unknown key build.{key}; known keys are {', '.join(sorted(BUILD_KEYS))}.", "build", key)
    out_dir = root / build.get("out_dir", "kuma-out")
    chunk_size = parse_size(build.get("chunk_size", "4MiB"), where)
    # the environment wins, so a CI step can point every build at its restored cache
    cache_dir = Path(os.environ.get("KUMA_CACHE_DIR") or root / build.get("cache_dir", ".kuma/cache"))
    remote = _remote(data.get("cache", {}), where)

    models_table = data.get("models")
    if not isinstance(models_table, dict) or not models_table:
        raise KumaError('no models declared; add a [models.NAME] section with source, factory and inputs (see docs/kuma-toml.md).', path)
    models = {name: _model(name, section, root, where) for name, section in models_table.items()}
    types = root / build["types"] if "types" in build else None
    return Project(path, root, out_dir, chunk_size, models, cache_dir.resolve(), remote, types)


def _remote(section: dict, where: _Locator) -> RemoteCacheConfig | None:
    for key in section:
        if key not in CACHE_KEYS:
            raise where.error(f"unknown key cache.{key}; known keys are {', '.join(sorted(CACHE_KEYS))}.", "cache", key)
    if "remote" not in section:
        return None
    url = section["remote"]
    if not isinstance(url, str) or not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
        raise where.error(f'cache.remote = "{url}" is not an http(s) URL; write e.g. "http://cache.local:8080/kuma".', "cache", "remote")
    write = section.get("remote_write", True)
    if not isinstance(write, bool):
        raise where.error("cache.remote_write must be true or false.", "cache", "remote_write")
    timeout = section.get("remote_timeout", 5.0)
    if not isinstance(timeout, (int, float)) or timeout <= 0:
        raise where.error("cache.remote_timeout must be a positive number of seconds.", "cache", "remote_timeout")
    return RemoteCacheConfig(url.rstrip("/"), write, section.get("remote_auth_env"), float(timeout))


def _model(name: str, section, root: Path, where: _Locator) -> ModelConfig:
    table = f"models.{name}"
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", name):
        raise where.error(f'model name "{name}" must be letters, digits, "_" or "-" (it becomes a folder and an import name).', table)
    if not isinstance(section, dict):
        raise where.error(f"models.{name} must be a table.", table)
    for key in section:
        if key not in MODEL_KEYS:
            raise where.error(f"unknown key {key} in [{table}]; known keys are {', '.join(sorted(MODEL_KEYS))}.", table, key)
    for key in ("source", "factory", "inputs"):
        if key not in section:
            raise where.error(f"[{table}] is missing the required key {key}.", table)

    source = root / section["source"]
    if not source.is_file():
        raise where.error(f'source file "{section["source"]}" does not exist (paths are relative to kuma.toml).', table, "source")
    weights = None
    if "weights" in section:
        weights = root / section["weights"]
        if not weights.is_file():
            raise where.error(f'weights file "{section["weights"]}" does not exist (paths are relative to kuma.toml).', table, "weights")
    precision = section.get("precision", "f32")
    if precision not in PRECISIONS:
        raise where.error(f'precision "{precision}" is not supported; use one of {", ".join(PRECISIONS)}.', table, "precision")

    inputs_table = section["inputs"]
    if not isinstance(inputs_table, dict) or not inputs_table:
        raise where.error(f"[{table}.inputs] must name at least one input, e.g. image = {{ shape = [1, 3, 224, 224], dtype = \"float32\" }}.", table, "inputs")
    inputs = []
    for input_name, spec in inputs_table.items():
        line_section = f"{table}.inputs" if where.line(f"{table}.inputs") else table
        shape = spec.get("shape") if isinstance(spec, dict) else None
        if not isinstance(shape, list) or not all(isinstance(d, int) and d > 0 for d in shape):
            raise where.error(f"input {input_name} needs shape = [positive integers], e.g. shape = [1, 3, 224, 224].", line_section, input_name)
        dtype = spec.get("dtype", "float32")
        if dtype not in INPUT_DTYPES:
            raise where.error(f'input {input_name} has dtype "{dtype}"; use one of {", ".join(INPUT_DTYPES)}.', line_section, input_name)
        inputs.append(InputSpec(input_name, tuple(shape), dtype))

    outputs = section.get("outputs")
    if outputs is not None and (not isinstance(outputs, list) or not all(isinstance(o, str) and o for o in outputs)):
        raise where.error('outputs must be a list of names, e.g. outputs = ["logits"].', table, "outputs")
    target = section.get("target", "gpu")
    if target not in TARGETS:
        raise where.error(f'target "{target}" is not known; use "gpu" (discrete and integrated GPUs) or "cpu" (software WebGPU such as SwiftShader).', table, "target")
    return ModelConfig(name, source, section["factory"], weights, precision, inputs, outputs, section, target)


def _line_from_message(message: str) -> int | None:
    match = re.search(r"line (\d+)", message)
    return int(match.group(1)) if match else None
