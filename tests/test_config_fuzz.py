"""Schema-driven fuzz of kuma.toml: each variant loads into a sound Project, or fails with one KumaError
naming kuma.toml and the line of the mistake; never another exception.

The variants come from kuma_build.config's schema (SCHEMA, and INPUT for each input): every key with a
value of every TOML type (string, integer, float with nan and inf, boolean, date, date-time, time, array,
inline table, array of tables) plus the key's own edge cases, every key left out, an unknown key and a
typo at every level, every table replaced by a value, and odd model names. They run in-process through
config.load_project (a few seconds in all); a handful go through the real `kuma build`.

The expected line comes from this file's own TOML writer, which records where it wrote each key.
"""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kuma_build import config
from kuma_build.config import load_project, takes
from kuma_build.devices import TARGETS
from kuma_build.errors import KumaError


class Raw(str):
    """TOML text written as is."""


class Inline(dict):
    """A table written inline: x = { ... }."""


# one of each TOML type, and the edges of each
SAMPLES = [
    '"x"', '""', '" "', '"../elsewhere"', '"net.py"', '"4097"', '"4KiB"', '"a\\u0000b"',
    "0", "-1", "1", "5", "4095", "4096", "4097", "4100", "9223372036854775807", "-9223372036854775808",
    "2.5", "0.0", "-1.0", "nan", "inf", "-inf", "1e300", "4096.0",
    "true", "false",
    "1979-05-27", "1979-05-27T07:32:00Z", "1979-05-27T07:32:00", "07:32:00",
    "[]", "[1, 2]", '["y", "y"]', '["a", "b"]', "[true, 50]", "[[2, 8]]", "[1.5]", '[{ a = 1 }]',
    "{}", "{ a = 1 }", "{ shape = [1] }",
]
KEY_SAMPLES = {
    "out_dir": ['"kuma-out"', '"a/b/c"', '"."', '"w.bin"', '"' + "a" * 300 + '"'],
    "cache_dir": ['".cache"', '"w.bin"'],
    "chunk_size": ['"4MiB"', '"4 KiB"', '"4096B"', '"1.5MiB"', '"4.1KB"', '"1GiB"', '"2GiB"', '"-4MiB"', '"4MiB "', '"4mb"',
                   '"4.0001KiB"', '"four"', "1073741824", "1073741828", '"' + "9" * 400 + 'GiB"'],
    "remote": ['"http://127.0.0.1:9/kuma"', '"https://cache.example/kuma/"', '"ftp://host/x"', '"http://"', '"http://h:99999/x"',
               '"http://h:port/x"', '"http://h/a b"', '"http://h/x?q=1"', '"cache.local:8080"', '"http://[::1/x"'],
    "remote_auth_env": ['"KUMA_TOKEN"', '"1TOKEN"', '"A B"', '"TOKEN="'],
    "remote_timeout": ["0.001", "3600", "3601", "1e-300"],
    "source": ['"net.py"', '"net.txt"', '"missing.py"', '"."', '"sub"', '"sub/"', '"' + "n" * 300 + '.py"'],
    "factory": ['"build_model"', '"Net"', '"build model"', '"os.system"', '"1x"'],
    "weights": ['"w.bin"', '"missing.bin"', '"sub"'],
    "precision": ['"f32"', '"f16"', '"int8"', '"F16"', '"bf16"'],
    "outputs": ['["y"]', '["y", "z"]', '[""]', '["y", 1]', '["a", "b", "a"]'],
    "target": ['"gpu"', '"cpu"', '"tpu"'],
    "shape": ["[1]", "[2, 8]", "[2, 0]", "[2, -8]", "[2.0, 8]", "[true, 50]", "[9223372036854775807, 2]", "[65536, 65536]",
              "[46340, 46340]", "[46341, 46341]", "[[2, 8]]", '["2", "8"]'],
    "dtype": ['"float32"', '"int32"', '"int64"', '"float16"', '"Float32"'],
    "dims": ['{ n = { max = 4 } }', '{ n = { min = 1, max = 4 }, m = { max = 2 } }', '{ 1n = { max = 4 } }', '{ n = 4 }'],
    "min": ["2147483647", "2147483648", "16", "17"],
    "max": ["2147483647", "2147483648", "268435456", "268435455"],
}
MODEL_NAMES = ["net", "my-net_2", "_net", "1net", "a b", "a.b", "", "n" * 64, "n" * 65, "n" * 250, "ünï"]


def base() -> dict:
    """A valid kuma.toml that sets every key of the schema."""
    return {
        "build": {"out_dir": "out", "chunk_size": "4MiB", "cache_dir": ".kuma/cache", "types": "src/kuma-env.d.ts"},
        "cache": {"remote": "http://127.0.0.1:9/kuma", "remote_write": True, "remote_auth_env": "KUMA_TOKEN", "remote_key_env": "KUMA_KEY",
                  "remote_timeout": 5},
        "models": {"net": {"source": "net.py", "factory": "build_model", "weights": "w.bin", "precision": "f32",
                           "outputs": ["y"], "target": "gpu",
                           "inputs": {"x": Inline(shape=[2, 8], dtype="float32"), "t": {"shape": [4], "dtype": "int64"},
                                      "ids": Inline(shape=[8, "n"], dtype="int32")},
                           "dims": {"n": Inline(min=1, max=16)}}},
    }


def literal(value) -> str:
    if isinstance(value, Raw):
        return value
    if isinstance(value, Inline):
        return "{ " + ", ".join(f"{key_text(k)} = {literal(v)}" for k, v in value.items()) + " }"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(map(literal, value)) + "]"
    return str(value)


def key_text(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def render(tree: dict) -> tuple[str, dict]:
    """TOML text and the line of each table and key path written."""
    lines, where = [], {}

    def record(path, value):
        where[path] = len(lines)
        if isinstance(value, Inline):
            for key, inner in value.items():
                record(path + (key,), inner)

    def table(node: dict, path: tuple):
        if path:
            lines.append("[" + ".".join(map(key_text, path)) + "]")
            where[path] = len(lines)
        for key, value in node.items():
            if not isinstance(value, dict) or isinstance(value, Inline):
                lines.append(f"{key_text(key)} = {literal(value)}")
                record(path + (key,), value)
        for key, value in node.items():
            if isinstance(value, dict) and not isinstance(value, Inline):
                table(value, path + (key,))

    table(tree, ())
    return "\n".join(lines) + "\n", where


def line_of(where: dict, path: tuple) -> int:
    """The line of the nearest path written (a table header, or the key holding an inline table)."""
    for i in range(len(path), 0, -1):
        if path[:i] in where:
            return where[path[:i]]
    return 1


def node(tree: dict, path: tuple) -> dict:
    for key in path:
        tree = tree[key]
    return tree


def schema_keys():
    """(table path, key name, Key) for every key the schema declares, inputs included."""
    tables = [(("build",), config.SCHEMA["build"]), (("cache",), config.SCHEMA["cache"]),
              (("models", "net"), config.SCHEMA["models"]["*"]),
              (("models", "net", "inputs", "x"), config.INPUT), (("models", "net", "inputs", "t"), config.INPUT),
              (("models", "net", "dims", "n"), config.DIM)]
    for path, schema in tables:
        for name, key in schema.items():
            yield path, name, key


def variants():
    """(label, tree, path of the mistake, the Key or None): what to write, and where an error must point."""
    for path, name, key in schema_keys():
        for sample in SAMPLES + KEY_SAMPLES.get(name, []):
            tree = base()
            node(tree, path)[name] = Raw(sample)
            yield f"{'.'.join(path)}.{name} = {sample}", tree, path + (name,), key
        tree = base()
        del node(tree, path)[name]
        yield f"{'.'.join(path)}.{name} left out", tree, path, None
    tables = [(), ("build",), ("cache",), ("models",), ("models", "net"), ("models", "net", "inputs"), ("models", "net", "inputs", "t")]
    for path in tables:
        for unknown in ("bogus", "biuld", "dtpye", "chunksize", "Source"):
            tree = base()
            node(tree, path)[unknown] = Raw("1") if path else {"x": 1}
            yield f"unknown {unknown} in {'.'.join(path) or 'the top level'}", tree, path + (unknown,), None
    for path in tables[1:]:
        for sample in ["5", '"x"', "true", "[]", "[1]", "[{ a = 1 }]", "1979-05-27", "nan"]:
            tree = base()
            node(tree, path[:-1])[path[-1]] = Raw(sample)
            yield f"{'.'.join(path)} = {sample}", tree, path, None
        tree = base()
        node(tree, path[:-1])[path[-1]] = {}
        yield f"{'.'.join(path)} empty", tree, path, None
    for name in MODEL_NAMES:
        tree = base()
        tree["models"] = {name: tree["models"]["net"]}
        yield f"model named {name!r}", tree, ("models", name), None


@pytest.fixture(scope="module")
def project_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    (root / "net.py").write_text("from torch import nn\n\ndef build_model():\n    return nn.Linear(8, 4)\n")
    (root / "net.txt").write_text("not python\n")
    (root / "w.bin").write_bytes(b"weights")
    (root / "sub").mkdir()
    return root


def check_project(project: config.Project):
    """What the builder relies on, whatever kuma.toml said."""
    assert isinstance(project.out_dir, Path) and not project.out_dir.is_file()
    assert isinstance(project.cache_dir, Path) and not project.cache_dir.is_file()
    assert type(project.chunk_size) is int and 4096 <= project.chunk_size <= 1 << 30 and project.chunk_size % 4 == 0
    if project.remote:
        assert re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", project.remote.url) and not project.remote.url.endswith("/")
        assert type(project.remote.write) is bool
        assert type(project.remote.timeout) is float and 0 < project.remote.timeout <= 3600
        assert project.remote.auth_env is None or re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", project.remote.auth_env)
    assert project.models
    for name, model in project.models.items():
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]{0,63}", name)
        assert model.source.is_file() and model.source.suffix == ".py"
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", model.factory)
        assert model.weights is None or model.weights.is_file()
        assert model.precision in config.PRECISIONS and model.target in TARGETS
        assert model.inputs
        for name, (low, high) in model.dims.items():
            assert re.fullmatch(config.DIM_NAME, name) and type(low) is int and type(high) is int and 1 <= low <= high < 2**31
        for spec in model.inputs:
            assert spec.name and spec.dtype in config.INPUT_DTYPES
            assert spec.shape and all((type(d) is int and d > 0) or d in model.dims for d in spec.shape)
            assert math.prod(model.dims[d][1] if d in model.dims else d for d in spec.shape) < 2**31
        assert {d for spec in model.inputs for d in spec.shape if d in model.dims} == set(model.dims)
        assert model.outputs is None or (all(type(o) is str and o for o in model.outputs) and len(set(model.outputs)) == len(model.outputs))
        json.dumps(model.section, allow_nan=False)  # the cache key is its JSON


def test_every_variant_loads_soundly_or_names_its_line(project_dir):
    import tomllib
    counts = {"loaded": 0, "rejected": 0}
    for label, tree, path, key in variants():
        text, where = render(tree)
        (project_dir / "kuma.toml").write_text(text)
        context = f"{label}:\n{text}"
        try:
            project = load_project(project_dir / "kuma.toml")
        except KumaError as e:
            assert e.file == str(project_dir / "kuma.toml"), context
            # a dims table that lost n: the mistake shows where a shape names it
            wrong = ("models", "net", "inputs", "ids", "shape") if '"n" names no dim' in e.message else path
            assert e.line == line_of(where, wrong), f"{e}\n{context}"
            assert e.message and "\n" not in e.message and len(e.message) < 400, context
            counts["rejected"] += 1
            continue
        check_project(project)
        if key is not None:  # a value of a type its key does not take never passes
            assert takes(key, node(tomllib.loads(text), path)), context
        counts["loaded"] += 1
    assert counts["loaded"] > 50 and counts["rejected"] > 500, counts


def test_dates_and_nan_anywhere_are_errors(project_dir):
    """tomllib gives dates as datetime objects: none may reach the cache key (JSON) or a path."""
    for value in ("1979-05-27", "1979-05-27T07:32:00Z", "07:32:00", "nan"):
        for path, name, key in schema_keys():
            tree = base()
            node(tree, path)[name] = Raw(value)
            text, where = render(tree)
            (project_dir / "kuma.toml").write_text(text)
            with pytest.raises(KumaError) as error:
                load_project(project_dir / "kuma.toml")
            assert error.value.line == line_of(where, path + (name,)), text


def test_non_utf8_file_names_the_line(project_dir):
    text, _ = render(base())
    (project_dir / "kuma.toml").write_bytes(text.encode().replace(b'"out"', b'"\xff\xfeout"'))
    with pytest.raises(KumaError) as error:
        load_project(project_dir / "kuma.toml")
    assert error.value.line == 2 and "UTF-8" in error.value.message


@pytest.mark.parametrize("edit, path, fragment", [
    (lambda t: t.replace("[build]", "[biuld]"), ("build",), "unknown table or key biuld; did you mean [build]?"),
    (lambda t: t.replace('dtype = "int64"', 'dtpye = "int64"'), ("models", "net", "inputs", "t", "dtype"),
     "unknown key models.net.inputs.t.dtpye; did you mean models.net.inputs.t.dtype?"),
    (lambda t: t.replace('chunk_size = "4MiB"', "chunk_size = 4097"), ("build", "chunk_size"), "not a multiple of 4"),
    (lambda t: t.replace('chunk_size = "4MiB"', "chunk_size = true"), ("build", "chunk_size"), "build.chunk_size is a boolean"),
    (lambda t: t.replace('outputs = ["y"]', 'outputs = ["y", "y"]'), ("models", "net", "outputs"), "names y twice"),
    (lambda t: t.replace("remote_timeout = 5", "remote_timeout = nan"), ("cache", "remote_timeout"), "remote_timeout = nan"),
    (lambda t: t.replace('out_dir = "out"', "out_dir = 1979-05-27"), ("build", "out_dir"), "build.out_dir is a date"),
    (lambda t: re.sub(rf"\[build\]\n(.*\n){{{len(base()['build'])}}}", "build = 5\n", t), ("build",), "build must be a table like [build], not an integer"),
    (lambda t: t.replace("[build]", "[[build]]"), ("build",), "not an array of tables"),
])
def test_through_the_cli(project_dir, edit, path, fragment):
    """The same checks through the real `kuma build`: exit 1, one line on stderr, no traceback."""
    text, where = render(base())
    (project_dir / "kuma.toml").write_text(edit(text))
    result = subprocess.run([sys.executable, "-m", "kuma_build", "build"], cwd=project_dir, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(f"[kuma] error: {project_dir / 'kuma.toml'}:{where[path]}: "), result.stderr
    assert fragment in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_docs_describe_every_key():
    """docs/kuma-toml.md has a row or an item for each key of the schema."""
    doc = (Path(__file__).parents[1] / "docs" / "kuma-toml.md").read_text()
    for _, name, _ in schema_keys():
        assert re.search(rf"^(\| |- )`{name}`", doc, re.M), f"docs/kuma-toml.md does not describe {name}"


MODEL_TOML = '[models.net]\nsource = "net.py"\nfactory = "build_model"\ninputs = { x = { shape = [2, 8] } }\n'


@pytest.mark.parametrize("text, line", [
    ('[build]\nchunk_size = [\n  [1, 2],\n]\nout_dir = 5\n' + MODEL_TOML, 5),  # a multi-line array's lines are not headers
    ('build.out_dir = 5\n' + MODEL_TOML, 1),  # dotted keys
    ('[build] # the build\n"out_dir" = 5\n' + MODEL_TOML, 2),  # quoted keys, comments
    ('[models."net"]\nsource = "net.py"\nfactory = "build_model"\noutputs = ["""y\n[cache]\n"""]\nprecision = 5\ninputs = { x = { shape = [2] } }\n', 7),
    ('[models.net]\nsource = "net.py"\nfactory = "build_model"\n[models.net.inputs.x]\nshape = [2]\ndtype = 5\n', 6),
    ('[models.net]\nsource = "net.py"\nfactory = "build_model"\n\n[models.net.inputs]\nx.shape = [2]\nx.dtpye = "int64"\n', 7),
])
def test_locator_finds_the_line(project_dir, text, line):
    """Layouts the writer above never produces: the error still names the line that holds the mistake."""
    (project_dir / "kuma.toml").write_text(text)
    with pytest.raises(KumaError) as error:
        load_project(project_dir / "kuma.toml")
    assert error.value.line == line, f"{error.value}\n{text}"


def test_an_accepted_integer_chunk_size_builds_and_verifies(tmp_path):
    """A variant that loads is a correct build: an integer chunk_size splits the weights into
    4-byte-aligned chunks no larger than it, and the model runs like PyTorch (kuma verify)."""
    (tmp_path / "net.py").write_text("from torch import nn\n\ndef build_model():\n    return nn.Linear(64, 100)\n")
    (tmp_path / "kuma.toml").write_text('[build]\nout_dir = "out"\nchunk_size = 4100\n\n' + MODEL_TOML.replace("[2, 8]", "[3, 64]"))
    for command in ("build", "verify"):
        result = subprocess.run([sys.executable, "-m", "kuma_build", command], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stdout + result.stderr
    assert result.stdout.endswith(" ok\n"), result.stdout
    sizes = [c["size"] for c in json.loads((tmp_path / "out" / "net" / "manifest.json").read_text())["chunks"]]
    assert len(sizes) > 1 and all(size <= 4100 and size % 4 == 0 for size in sizes), sizes


def test_dims_are_part_of_the_cache_key(project_dir):
    """A changed range is a different build (the key hashes the model's whole table, dims included)."""
    from kuma_build.cache.keys import model_fields, model_key
    keys = []
    for high in (16, 17):
        tree = base()
        tree["models"]["net"]["dims"]["n"] = Inline(min=1, max=high)
        (project_dir / "kuma.toml").write_text(render(tree)[0])
        project = load_project(project_dir / "kuma.toml")
        assert project.models["net"].dims == {"n": (1, high)}
        keys.append(model_key(model_fields(project, project.models["net"])))
    assert keys[0] != keys[1]
