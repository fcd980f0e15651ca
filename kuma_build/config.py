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

    [models.encoder.dims]                         # optional: one build for every value in range
    seq = { min = 1, max = 512 }                  # a shape entry "seq" takes any length from 1 to 512
    [models.encoder.inputs]
    input_ids = { shape = [1, "seq"], dtype = "int64" }

What the file may hold is one declaration, SCHEMA: every table, and for each key the TOML types it
takes, its default and the check that turns the value as written into the value used. load_project
walks it; docs/kuma-toml.md describes it and tests/test_config_fuzz.py fuzzes every key of it with
every TOML type. Every mistake, unknown keys included, is a KumaError naming the kuma.toml line that
holds it (_Locator), never a traceback.
"""

import datetime
import difflib
import json
import math
import os
import re
import sys
import urllib.parse
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable

from kuma_build.devices import TARGETS
from kuma_build.errors import KumaError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on python 3.10 only
    import tomli as tomllib

CONFIG_NAME = "kuma.toml"
INPUT_DTYPES = ("float32", "int32", "int64")
PRECISIONS = ("f32", "f16", "int8")  # see compiler/precision.py
SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2, "gb": 1000**3, "gib": 1024**3}
MIN_CHUNK, MAX_CHUNK = 4096, 1 << 30
MAX_ELEMENTS = 2**31 - 1  # kernels index tensors with 32-bit integers
MAX_NAME = 64  # a model name becomes a folder and an import name
DIM_NAME = r"[A-Za-z][A-Za-z0-9_]{0,63}"  # a dim names a field in JS and in WGSL (no leading "_": WGSL reserves "__")


@dataclass
class InputSpec:
    name: str
    shape: tuple[int | str, ...]  # a str names one of the model's dims
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
    target: str = "auto"  # the device classes: "auto" (each, chosen at load), "gpu" or "cpu" (devices.py)
    config: Path | None = None  # the kuma.toml that declares it, and the line of each of its keys,
    lines: dict[str, int] = field(default_factory=dict, repr=False)  # for errors found later (export.py)
    dims: dict[str, tuple[int, int]] = field(default_factory=dict)  # dim name -> (min, max), in kuma.toml's order

    def config_error(self, message: str, key: str) -> KumaError:
        """An error about this model's kuma.toml key, at its line."""
        return KumaError(message, self.config, self.lines.get(key)) if self.config else KumaError(message, self.source)


@dataclass
class RemoteCacheConfig:
    url: str  # http://host:port/prefix
    write: bool = True
    auth_env: str | None = None  # environment variable holding the Authorization header's value
    timeout: float = 5.0  # for each request as a whole
    key_env: str | None = None  # environment variable holding the secret that signs entries (HMAC-SHA256)


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


# --- the schema ----------------------------------------------------------------------

@dataclass(frozen=True)
class At:
    """Where a value is checked: the project root (paths are relative to it), and for nested tables the key's path."""
    root: Path
    where: "_Locator"
    path: tuple


class Invalid(Exception):
    """A value its key does not take; the message says why, after "KEY = VALUE: "."""


@dataclass(frozen=True)
class Key:
    types: tuple  # the Python types tomllib gives for the TOML values taken (bool is never an int)
    expects: str  # what to write instead, for messages
    check: Callable = lambda value, at: value  # (value, At) -> the value used; raises Invalid
    default: object = None
    required: bool = False


def _path(what: str, suffix: str | None = None, exists: bool = False) -> Callable:
    def check(value: str, at: At) -> Path:
        if not value.strip() or "\0" in value:
            raise Invalid("is not a path")
        path = at.root / value
        if suffix and path.suffix != suffix:
            raise Invalid(f"is not a {suffix} file")
        try:
            if exists and not path.is_file():
                raise Invalid(f"does not exist{' as a file' if path.exists() else ''} (paths are relative to kuma.toml)")
            if not exists and path.exists() and not path.is_dir():
                raise Invalid(f"names a file, not a folder; pick a folder for the {what}")
        except OSError as e:  # a name too long, a folder we may not read
            raise Invalid(f"cannot be used ({e.strerror})") from None
        return path
    return check


def _declaration_file(value: str, at: At) -> Path:
    if not value.strip() or "\0" in value or not value.endswith(".d.ts"):
        raise Invalid("is not a TypeScript declaration file (.d.ts)")
    path = at.root / value
    if path.is_dir():
        raise Invalid("names a folder, not a .d.ts file")
    return path


def _size(value, at) -> int:
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", value)
        if not match or match.group(2).lower() not in SIZE_UNITS:
            raise Invalid("is not a size")
        exact = Fraction(match.group(1)) * SIZE_UNITS[match.group(2).lower()]  # not float: "4.1KB" is 4100 bytes
        if exact.denominator != 1:
            raise Invalid("is not a whole number of bytes")
        value = int(exact)
    if not MIN_CHUNK <= value <= MAX_CHUNK:
        raise Invalid("is out of range")
    if value % 4:
        raise Invalid(f"is {value} bytes, not a multiple of 4 (weights are stored as 4-byte words)")
    return value


def parse_size(value) -> int:
    """A chunk size as kuma.toml takes it ("4MiB", 65536) in bytes, for scripts; ValueError if it is none."""
    try:
        return _size(value, None)
    except Invalid as e:
        raise ValueError(f"chunk size {value!r} {e}") from None


def _choice(options: tuple) -> Callable:
    def check(value, at):
        if value not in options:
            raise Invalid("is not supported")
        return value
    return check


def _pattern(regex: str, longest: int = 200) -> Callable:
    def check(value, at):
        if len(value) > longest or not re.fullmatch(regex, value):
            raise Invalid("is not valid")
        return value
    return check


def _url(value, at) -> str:
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # raises on a port that is not a number in range
    except ValueError:
        raise Invalid("is not a URL with a host and a port from 1 to 65535") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or re.search(r"\s", value) or parts.query or parts.fragment:
        raise Invalid("is not an http(s) URL")
    return value.rstrip("/")


def _seconds(value, at) -> float:
    if not (math.isfinite(value) and 0 < value <= 3600):
        raise Invalid("is not a number of seconds from above 0 to 3600")
    return float(value)


def _names(value: list, at) -> list[str]:
    if not value or not all(isinstance(name, str) and name for name in value):
        raise Invalid("is not a list of names")
    twice = sorted({name for name in value if value.count(name) > 1})
    if twice:
        raise Invalid(f"names {', '.join(twice)} twice; each output needs its own name")
    return value


def _shape(value: list, at) -> tuple[int | str, ...]:
    """Positive integers and dim names; _check_dims matches the names with the model's dims."""
    if not value or not all((isinstance(d, int) and not isinstance(d, bool) and d > 0) or (isinstance(d, str) and d) for d in value):
        raise Invalid("is not a list of positive integers and dim names")
    static = math.prod(d for d in value if isinstance(d, int))
    if static > MAX_ELEMENTS:
        raise Invalid(f"has {static} elements; kernels index with 32-bit integers, so at most {MAX_ELEMENTS}")
    return tuple(value)


def _inputs(value: dict, at: At) -> list[InputSpec]:
    if not value:
        raise Invalid("names no input")
    specs = []
    for name, spec in value.items():
        if not name.strip():
            raise at.where.error("an input name is empty; name each input like forward()'s parameter.", *at.path)
        fields = _table(spec, at.path + (name,), INPUT, at.root, at.where)
        specs.append(InputSpec(name, fields["shape"], fields["dtype"]))
    return specs


def _dims(value: dict, at: At) -> dict[str, tuple[int, int]]:
    dims = {}
    for name, spec in value.items():
        if not re.fullmatch(DIM_NAME, name):
            raise at.where.error(f'dim name "{name[:80]}" must be a letter followed by at most 63 letters, digits or "_" '
                                 "(it names a field in JavaScript and WGSL).", *at.path, name)
        fields = _table(spec, at.path + (name,), DIM, at.root, at.where)
        if fields["min"] > fields["max"]:
            raise at.where.error(f"dim {name} has min = {fields['min']} above max = {fields['max']}; make min at most max.", *at.path, name)
        dims[name] = (fields["min"], fields["max"])
    return dims


def _dim_bound(value: int, at) -> int:
    if not 1 <= value <= MAX_ELEMENTS:
        raise Invalid(f"is {'less than 1' if value < 1 else 'too large'}")
    return value


NAME = r"[A-Za-z_][A-Za-z0-9_-]*"
BUILD = {
    "out_dir": Key((str,), 'a folder path relative to kuma.toml, e.g. out_dir = "src/kuma"', _path("output"), "kuma-out"),
    "chunk_size": Key((str, int), 'a size from 4KiB to 1GiB, a multiple of 4 bytes: a byte count or a string with a unit, e.g. chunk_size = "4MiB"', _size, "4MiB"),
    "cache_dir": Key((str,), 'a folder path relative to kuma.toml, e.g. cache_dir = ".kuma/cache"', _path("cache"), ".kuma/cache"),
    "types": Key((str,), 'a .d.ts file path relative to kuma.toml, e.g. types = "src/kuma-env.d.ts"', _declaration_file),
}
CACHE = {
    "remote": Key((str,), 'an http(s) URL, e.g. remote = "http://cache.local:8080/kuma"', _url),
    "remote_write": Key((bool,), "true or false", default=True),
    "remote_auth_env": Key((str,), 'the name of an environment variable, e.g. remote_auth_env = "KUMA_CACHE_TOKEN"', _pattern(r"[A-Za-z_][A-Za-z0-9_]*")),
    "remote_key_env": Key((str,), 'the name of an environment variable holding the secret that signs entries, e.g. remote_key_env = "KUMA_CACHE_KEY"', _pattern(r"[A-Za-z_][A-Za-z0-9_]*")),
    "remote_timeout": Key((int, float), "a number of seconds from above 0 to 3600, e.g. remote_timeout = 5", _seconds, 5.0),
}
INPUT = {
    "shape": Key((list,), f"a list of positive integers with at most {MAX_ELEMENTS} elements in all, e.g. shape = [1, 3, 224, 224]", _shape, required=True),
    "dtype": Key((str,), f'one of {", ".join(INPUT_DTYPES)}, e.g. dtype = "float32"', _choice(INPUT_DTYPES), "float32"),
}
DIM = {
    "min": Key((int,), f"an integer from 1 to {MAX_ELEMENTS}, e.g. min = 1", _dim_bound, 1),
    "max": Key((int,), f"an integer from 1 to {MAX_ELEMENTS}, at least min, e.g. max = 512", _dim_bound, required=True),
}
MODEL = {
    "source": Key((str,), 'the model\'s Python file relative to kuma.toml, e.g. source = "models/net.py"', _path("source", ".py", exists=True), required=True),
    "factory": Key((str,), 'the name of a function or class in the source file, e.g. factory = "build_model"', _pattern(r"[A-Za-z_][A-Za-z0-9_]*"), required=True),
    "weights": Key((str,), 'a .safetensors or torch.save file relative to kuma.toml, e.g. weights = "weights/net.safetensors"', _path("weights", exists=True)),
    "precision": Key((str,), f'one of {", ".join(PRECISIONS)}, e.g. precision = "f16"', _choice(PRECISIONS), "f32"),
    "inputs": Key((dict,), 'a table with one entry per input, e.g. image = { shape = [1, 3, 224, 224], dtype = "float32" }', _inputs, required=True),
    "dims": Key((dict,), "a table with one entry per dimension, e.g. seq = { min = 1, max = 512 }", _dims),
    "outputs": Key((list,), 'a list of distinct names, e.g. outputs = ["logits"]', _names),
    "target": Key((str,), 'one of "auto" (the kernels of both classes, chosen at load), "gpu" (discrete and integrated GPUs) or "cpu" (software WebGPU such as SwiftShader)', _choice(TARGETS), "auto"),
}
# the whole file: [build], [cache], and a MODEL table per model ("*": any name, checked by _model),
# whose inputs table holds an INPUT table per input (_inputs) and whose dims table a DIM table per dim (_dims)
SCHEMA = {"build": BUILD, "cache": CACHE, "models": {"*": MODEL}}
TABLE_HINTS = {"build": "[build]", "cache": "[cache]", "models": "[models.NAME]"}


def type_name(value) -> str:
    """The TOML name of a value's type, for messages."""
    for kind, name in ((bool, "a boolean"), (int, "an integer"), (float, "a float"), (str, "a string"), (list, "an array"),
                       (dict, "a table"), (datetime.datetime, "a date-time"), (datetime.date, "a date"), (datetime.time, "a time")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def toml_text(value) -> str:
    """A value as kuma.toml writes it, for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # nan, inf, -inf, as in TOML
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(map(toml_text, value)) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_text(v)}" for k, v in value.items()) + " }"
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def takes(key: Key, value) -> bool:
    """Whether the key takes a value of this TOML type (true is not the integer 1)."""
    return isinstance(value, bool) == (bool in key.types) and isinstance(value, key.types)


def _table(value, path: tuple, schema: dict, root: Path, where: "_Locator") -> dict:
    """The checked values of one table (defaults filled in), or a KumaError at the offending line."""
    dotted = ".".join(path)
    if not isinstance(value, dict):
        shown = "an array of tables" if isinstance(value, list) and value and all(isinstance(v, dict) for v in value) else type_name(value)
        raise where.error(f"{dotted} must be a table like [{dotted}], not {shown}.", *path)
    for key in value:
        if key not in schema:
            close = difflib.get_close_matches(key, list(schema), n=1)
            hint = f"did you mean {dotted}.{close[0]}? " if close else ""
            raise where.error(f"unknown key {dotted}.{key}; {hint}[{dotted}] takes {', '.join(schema)}.", *path, key)
    result = {}
    for name, key in schema.items():
        if name not in value:
            if key.required:
                raise where.error(f"[{dotted}] is missing the required key {name}: {key.expects}.", *path)
            result[name] = key.default if key.default is None else key.check(key.default, At(root, where, path + (name,)))
            continue
        given = value[name]
        if not takes(key, given):
            raise where.error(f"{dotted}.{name} is {type_name(given)}; it must be {key.expects}.", *path, name)
        try:
            result[name] = key.check(given, At(root, where, path + (name,)))
        except Invalid as e:
            raise where.error(f"{dotted}.{name} = {toml_text(given)[:80]} {e}; it must be {key.expects}.", *path, name)
    return result


# --- loading ---------------------------------------------------------------------------

def find_config(start: Path) -> Path:
    for folder in [start, *start.parents]:
        if (folder / CONFIG_NAME).is_file():
            return folder / CONFIG_NAME
    raise KumaError(f"no {CONFIG_NAME} found here or in any parent folder; create one (see docs/kuma-toml.md) or pass --config PATH.", start)


def load_project(path: Path) -> Project:
    path = path.resolve()
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise KumaError(f"cannot read the project file ({e.strerror}); pass --config with the path of your kuma.toml.", path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise KumaError(f"the file is not UTF-8 text (byte 0x{raw[e.start]:02x}); save it as UTF-8.", path, raw[:e.start].count(b"\n") + 1)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        line = getattr(e, "lineno", None) or _line_from_message(str(e)) or 1
        raise KumaError(f"invalid TOML: {getattr(e, 'msg', str(e))}. Fix the syntax at that line.", path, line)
    where = _Locator(path, text)
    root = path.parent

    for name in data:
        if name not in SCHEMA:
            close = difflib.get_close_matches(name, list(SCHEMA), n=1)
            hint = f"did you mean [{close[0]}]? " if close else ""
            raise where.error(f"unknown table or key {name}; {hint}kuma.toml holds {', '.join(TABLE_HINTS.values())}.", name)
    build = _table(data.get("build", {}), ("build",), BUILD, root, where)
    cache = _table(data.get("cache", {}), ("cache",), CACHE, root, where)
    remote = None
    if cache["remote"]:
        remote = RemoteCacheConfig(cache["remote"], cache["remote_write"], cache["remote_auth_env"], cache["remote_timeout"],
                                   cache["remote_key_env"])

    models_table = data.get("models")
    if models_table is not None and not isinstance(models_table, dict):
        raise where.error(f"models must hold one table per model like [models.NAME], not {type_name(models_table)}.", "models")
    if not models_table:
        raise where.error('no models declared; add a [models.NAME] section with source, factory and inputs (see docs/kuma-toml.md).', "models")
    models = {name: _model(name, section, root, where) for name, section in models_table.items()}
    # the environment wins, so a CI step can point every build at its restored cache
    cache_dir = Path(os.environ.get("KUMA_CACHE_DIR") or build["cache_dir"])
    _check_folders(root, build["out_dir"].resolve(), cache_dir.resolve(), models, where)
    return Project(path, root, build["out_dir"], build["chunk_size"], models, cache_dir.resolve(), remote, build["types"])


def _model(name: str, section, root: Path, where: "_Locator") -> ModelConfig:
    if len(name) > MAX_NAME or not re.fullmatch(NAME, name):
        raise where.error(f'model name "{name[:80]}" must be at most {MAX_NAME} letters, digits, "_" or "-", starting with a letter or "_" '
                          "(it becomes a folder and an import name).", "models", name)
    fields = _table(section, ("models", name), MODEL, root, where)
    dims = fields["dims"] or {}
    _check_dims(name, dims, fields["inputs"], where)
    return ModelConfig(name, fields["source"], fields["factory"], fields["weights"], fields["precision"], fields["inputs"],
                       fields["outputs"], section, fields["target"], where.path, {key: where.line("models", name, key) for key in MODEL}, dims)


def _check_dims(model: str, dims: dict, inputs: list[InputSpec], where: "_Locator") -> None:
    """Each dim name in a shape is a dim of the model, each dim is used, no input is too large at the
    dims' maxima, and run() can infer every dim from the input lengths: an input whose other dims
    are known gives its one unknown dim (the order the runtimes infer them in)."""
    for spec in inputs:
        at = ("models", model, "inputs", spec.name, "shape")
        for d in spec.shape:
            if isinstance(d, str) and d not in dims:
                close = difflib.get_close_matches(d, list(dims), n=1)
                hint = f'did you mean "{close[0]}"? ' if close else ""
                raise where.error(f'models.{model}.inputs.{spec.name}.shape: "{d[:80]}" names no dim of model {model}; {hint}'
                                  f"declare it under [models.{model}.dims], e.g. {d[:80] if re.fullmatch(DIM_NAME, d) else 'seq'} = {{ min = 1, max = 512 }}.", *at)
        largest = math.prod(dims[d][1] if isinstance(d, str) else d for d in spec.shape)
        if largest > MAX_ELEMENTS:
            dim = max((d for d in spec.shape if isinstance(d, str)), key=lambda d: dims[d][1])
            raise where.error(f"input {spec.name} (shape {toml_text(list(spec.shape))}) has {largest} elements at the dims' maxima; kernels "
                              f"index with 32-bit integers, so at most {MAX_ELEMENTS}: lower max of dim {dim}.", "models", model, "dims", dim, "max")
    used = {d for spec in inputs for d in spec.shape if isinstance(d, str)}
    for name in dims:
        if name not in used:
            raise where.error(f"dim {name} is used by no input of model {model}; use it in an input's shape "
                              f'(e.g. shape = [1, "{name}"]) or remove it.', "models", model, "dims", name)
    known: set[str] = set()
    while True:
        found = {unknown[0] for spec in inputs
                 if len(unknown := [d for d in spec.shape if isinstance(d, str) and d not in known]) == 1}
        if not found:
            break
        known |= found
    for name in dims:
        if name not in known:
            raise where.error(f"dim {name} cannot be inferred from the input lengths: every input that uses it has another unknown dim or "
                              f'has it twice; give it an input of its own (e.g. shape = ["{name}"]), or make one of the others a number.',
                              "models", model, "dims", name)


def _check_folders(root: Path, out_dir: Path, cache_dir: Path, models: dict, where: "_Locator") -> None:
    """out_dir and cache_dir are folders Kuma replaces and clears: never the project, nor a folder
    holding a model's source or weights, nor each other."""
    root = root.resolve()
    inputs = [p.resolve() for m in models.values() for p in (m.source, m.weights) if p is not None]
    from_env = os.environ.get("KUMA_CACHE_DIR")
    for key, folder in (("out_dir", out_dir), ("cache_dir", cache_dir)):
        named = f"KUMA_CACHE_DIR={from_env}" if key == "cache_dir" and from_env else f"build.{key}"
        if folder == root or folder in root.parents:
            problem = "is the project folder" if folder == root else "is above the project folder"
        elif any(folder in p.parents for p in inputs):
            problem = f"holds {next(p for p in inputs if folder in p.parents).relative_to(folder)}, an input of a model"
        else:
            continue
        raise where.error(f"{named} ({folder}) {problem}: Kuma replaces what it writes there, so it must be a folder "
                          f'of its own, e.g. out_dir = "src/kuma" or cache_dir = ".kuma/cache".', "build", key)
    if out_dir == cache_dir or out_dir in cache_dir.parents or cache_dir in out_dir.parents:
        raise where.error(f"build.out_dir ({out_dir}) and the cache folder ({cache_dir}) overlap; give each a folder of its own.",
                          "build", "out_dir")


class _Locator:
    """The kuma.toml line of each table and key, for error messages.

    tomllib keeps no positions, so the lines are found by reading the file's table headers
    ([a.b], [[a.b]]) and key lines (a.b = ...). A value inside an inline table or an array gets the
    line of its nearest enclosing key; something never written gets its table's line, else line 1.
    """

    _PART = re.compile(r"\s*(?:([A-Za-z0-9_-]+)|\"((?:[^\"\\]|\\.)*)\"|'([^']*)')\s*")

    def __init__(self, path: Path, text: str):
        self.path = path
        self.lines: dict[tuple, int] = {}
        table, multiline = (), None
        for number, line in enumerate(text.splitlines(), 1):
            if multiline:
                if line.count(multiline) % 2:
                    multiline = None
                continue
            header = re.match(r"\s*\[\[?", line)
            if header:
                parts, end = self._parse(line, header.end())
                if parts and re.match(r"\]\]?\s*(#.*)?$", line[end:]):  # not a line of a multi-line array
                    table = parts
                    self._record(table, number)
                continue
            parts, end = self._parse(line, 0)
            if parts and line[end:end + 1] == "=":
                self._record(table + parts, number)
                rest = line[end + 1:]
                for quote in ('"""', "'''"):
                    if rest.count(quote) % 2:
                        multiline = quote

    def _parse(self, line: str, pos: int) -> tuple[tuple, int]:
        """The dotted key starting at pos, and where it ends."""
        parts = []
        while match := self._PART.match(line, pos):
            bare, basic, literal = match.groups()
            parts.append(bare if bare is not None else literal if literal is not None else _unescape(basic))
            pos = match.end()
            if line[pos:pos + 1] != ".":
                break
            pos += 1
        return tuple(parts), pos

    def _record(self, parts: tuple, number: int):
        for i in range(1, len(parts) + 1):
            self.lines.setdefault(parts[:i], number)

    def line(self, *path: str) -> int:
        for i in range(len(path), 0, -1):
            if path[:i] in self.lines:
                return self.lines[path[:i]]
        return 1

    def error(self, message: str, *path: str) -> KumaError:
        return KumaError(message, self.path, self.line(*path))


def _unescape(text: str) -> str:
    try:
        return text.encode().decode("unicode_escape")
    except UnicodeDecodeError:
        return text


def _line_from_message(message: str) -> int | None:
    match = re.search(r"line (\d+)", message)
    return int(match.group(1)) if match else None
