"""The kuma-build npm shim (npm-shim/) with the real bundlers, Python and headless Chromium.

The fixture apps in tests/fixtures/ (a Vite 8 app and a webpack 5 app, each importing
`kuma:net`) are built by the real `vite build` and `webpack`; the dist/ folders are served
from 127.0.0.1 and run in Chromium (tests/browser/run_app.mjs), and the answers are
compared with PyTorch. Compile errors and a Python without kuma_build must fail the
bundler with the file:line or the remedies; `npx kuma` forwards to the Python CLI; and
`kuma init` scaffolds a project that builds and patches Vite and webpack configs once. In watch mode (`webpack --watch`, the
compiler loop of `webpack serve`, and `vite build --watch`) saving the model rebuilds the
bundle and a broken save fails the compilation until it is fixed. (Vite's dev server is tested on example-site, in
tests/test_example_site.py.)

Setup: the session fixture runs `npm ci` in each fixture app whose node_modules is
missing or older than its package-lock.json (scripts/setup.sh does the same). The shim
is a `file:` dependency, a symlink to npm-shim/, so it is never stale. Each test copies
an app's sources into tmp_path with node_modules symlinked: builds never write into
the repository.
"""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import kuma_build
from browser_support import BROWSER_DIR, decode, encode
from kuma_build.config import load_project
from support import TOLERANCE, rel_l2

SHIM = Path(__file__).resolve().parent.parent / "npm-shim"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
APPS = {"vite": FIXTURES / "vite-app", "webpack": FIXTURES / "webpack-app"}
BUNDLE = {"vite": ["vite", "build"], "webpack": ["webpack"]}  # node_modules/.bin commands
TIMEOUT = 180  # seconds for one bundler run or browser run
session_env = {}  # KUMA_CACHE_DIR: one build cache for the session, so a model is compiled once


def npm_ci_if_stale(folder: Path):
    installed = folder / "node_modules" / ".package-lock.json"  # npm's record of what it installed
    if installed.is_file() and installed.stat().st_mtime >= (folder / "package-lock.json").stat().st_mtime:
        return
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=folder, check=True, timeout=600)


@pytest.fixture(scope="session", autouse=True)
def npm_packages(tmp_path_factory):
    for folder in [BROWSER_DIR, *APPS.values()]:
        npm_ci_if_stale(folder)
    session_env["KUMA_CACHE_DIR"] = str(tmp_path_factory.mktemp("kuma-cache"))


def copy_app(tool: str, tmp_path: Path) -> Path:
    source = APPS[tool]
    app = tmp_path / source.name
    shutil.copytree(source, app, ignore=shutil.ignore_patterns("node_modules", "dist", "kuma", ".kuma"))
    (app / "node_modules").symlink_to(source / "node_modules")
    return app


def run(app: Path, command: list[str], python: str | Path = sys.executable) -> subprocess.CompletedProcess:
    env = {**os.environ, **session_env, "KUMA_PYTHON": str(python), "NO_COLOR": "1"}
    result = subprocess.run(command, cwd=app, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    result.output = result.stdout + result.stderr
    return result


def bundle(tool: str, app: Path, **kwargs) -> subprocess.CompletedProcess:
    name, *args = BUNDLE[tool]
    return run(app, [str(app / "node_modules" / ".bin" / name), *args], **kwargs)


def run_app_in_chromium(dist: Path, inputs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str]]:
    """The outputs of the built page's window.runModel(inputs), and the paths it requested."""
    inputs_file = dist.parent / "inputs.json"
    inputs_file.write_text(json.dumps({name: encode(array) for name, array in inputs.items()}))
    result = subprocess.run(["node", str(BROWSER_DIR / "run_app.mjs"), str(dist), str(inputs_file)],
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, f"the app failed in Chromium:\n{result.stderr}"
    reply = json.loads(result.stdout)
    return {name: decode({**spec, "shape": [-1]}) for name, spec in reply["outputs"].items()}, reply["requests"]


def reference_outputs(app: Path, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """PyTorch's answer: the fixture's factory is seeded, so it builds the same weights."""
    spec = importlib.util.spec_from_file_location("fixture_model", app / "models" / "net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with torch.no_grad():
        out = module.build_model().eval()(*(torch.from_numpy(a) for a in inputs.values()))
    return [out.numpy().ravel()]


@pytest.mark.browser
@pytest.mark.parametrize("tool", ["vite", "webpack"])
def test_built_app_runs_the_model_in_chromium(tool, tmp_path):
    app = copy_app(tool, tmp_path)
    result = bundle(tool, app)
    assert result.returncode == 0, result.output
    assert re.search(r"\[kuma\] net: (built|restored) in \d+ ms -> src/kuma/net", result.output), result.output

    # every weight chunk is an emitted asset under the bundler's own fingerprinted name
    generated = sorted(p.read_bytes() for p in (app / "src" / "kuma" / "net" / "weights").glob("*.bin"))
    emitted = {p.name: p.read_bytes() for p in (app / "dist").rglob("*.bin")}
    assert len(generated) > 1 and sorted(emitted.values()) == generated
    source_names = {p.name for p in (app / "src" / "kuma" / "net" / "weights").glob("*.bin")}
    assert not source_names & set(emitted)

    model = load_project(app / "kuma.toml").models["net"]
    inputs = {s.name: torch.randn(s.shape).numpy() for s in model.inputs}
    outputs, requests = run_app_in_chromium(app / "dist", inputs)
    for actual, expected in zip(outputs.values(), reference_outputs(app, inputs), strict=True):
        assert rel_l2(actual, expected) <= TOLERANCE
    assert {Path(r).name for r in requests if r.endswith(".bin")} == set(emitted)


@pytest.mark.parametrize("tool", ["vite", "webpack"])
def test_compile_error_fails_the_build_with_file_and_line(tool, tmp_path):
    app = copy_app(tool, tmp_path)
    model_file = app / "models" / "net.py"
    lines = model_file.read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if "nn.Sequential(" in text)
    lines[line - 1] = lines[line - 1].replace("nn.Sequential(", "nn.Sequential(undefined_layer, ")
    model_file.write_text("\n".join(lines) + "\n")

    result = bundle(tool, app)
    assert result.returncode != 0, result.output
    assert f"{model_file.resolve()}:{line}:" in result.output
    assert "NameError: name 'undefined_layer' is not defined" in result.output


@pytest.mark.parametrize("tool", ["vite", "webpack"])
@pytest.mark.parametrize("python", ["without kuma_build", "missing"])
def test_python_without_kuma_build_fails_with_the_remedies(tool, python, tmp_path):
    app = copy_app(tool, tmp_path)
    if python == "missing":
        python_path, problem = tmp_path / "no-such-python", "not found"
    else:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True, timeout=120)
        python_path, problem = tmp_path / "bare" / "bin" / "python", "kuma_build is not installed in it"

    result = bundle(tool, app, python=python_path)
    assert result.returncode != 0, result.output
    assert f"{python_path} (KUMA_PYTHON): {problem}" in result.output
    for remedy in ('pip install "kuma-build==0.1.*"', "KUMA_PYTHON=/path/to/venv/bin/python", 'kuma({ python: "'):
        assert remedy in result.output
    assert "ENOENT" not in result.output


class Watching:
    """A long-running bundler process whose output is collected by a thread."""

    def __init__(self, app: Path, command: list[str], env: dict | None = None):
        env = env or {**os.environ, **session_env, "KUMA_PYTHON": sys.executable, "NO_COLOR": "1"}
        self.process = subprocess.Popen(command, cwd=app, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = []
        threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True).start()

    def wait_for(self, what: str, condition, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.process.poll() is None, f"the process ended while waiting for {what}:\n{''.join(self.lines)}"
            assert time.monotonic() < deadline, f"no {what} after {timeout} s:\n{''.join(self.lines)}"
            time.sleep(0.2)

    def count(self, text: str) -> int:
        return sum(text in line for line in list(self.lines))

    def children(self) -> list[int]:
        return [int(p) for p in Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()]

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)


def test_webpack_watch_rebuilds_on_model_edits(tmp_path):
    app = copy_app("webpack", tmp_path)
    model_file = app / "models" / "net.py"
    good = model_file.read_text()
    emitted = lambda: {p.name for p in (app / "dist").glob("*.bin")}  # output.clean keeps only the current ones
    webpack = Watching(app, [str(app / "node_modules" / ".bin" / "webpack"), "--watch", "--mode", "development"])
    try:
        webpack.wait_for("first compilation", lambda: webpack.count("compiled successfully"))
        (python,) = webpack.children()  # the one kuma watch child
        first = emitted()

        model_file.write_text(good.replace("manual_seed(0)", "manual_seed(1)"))  # new weights
        webpack.wait_for("new weight chunks in dist/", lambda: emitted() and emitted() != first)
        new_chunks = emitted()
        webpack.wait_for("the bundle to use them", lambda: all(n in (app / "dist" / "main.js").read_text() for n in new_chunks))

        model_file.write_text(good.replace("nn.Tanh(),", "nn.Tanh(), undefined_layer,"))
        line = next(i for i, text in enumerate(good.splitlines(), 1) if "nn.Tanh()," in text)
        webpack.wait_for("the compile error", lambda: webpack.count(f"ERROR in kuma build failed: {model_file.resolve()}:{line}:"))

        successes = webpack.count("compiled successfully")
        model_file.write_text(good)  # fixed, and back to the first weights: kuma restores them from its cache
        webpack.wait_for("a clean compilation", lambda: webpack.count("compiled successfully") > successes)
        assert emitted() == first and all(n in (app / "dist" / "main.js").read_text() for n in first)
    finally:
        webpack.stop()
    # closing the compiler stopped kuma watch
    deadline = time.monotonic() + 5
    while Path(f"/proc/{python}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{python}").exists(), "kuma watch outlived webpack"


def test_vite_build_watch_rebuilds_on_model_edits(tmp_path):
    app = copy_app("vite", tmp_path)
    model_file = app / "models" / "net.py"
    good = model_file.read_text()
    emitted = lambda: {p.name.split("-")[0] for p in (app / "dist" / "assets").glob("*.bin")}  # the content hashes
    vite = Watching(app, [str(app / "node_modules" / ".bin" / "vite"), "build", "--watch"])
    try:
        vite.wait_for("the first build", lambda: vite.count("built in") and emitted())
        first = emitted()

        model_file.write_text(good.replace("manual_seed(0)", "manual_seed(1)"))  # new weights
        vite.wait_for("new weight chunks in dist/", lambda: emitted() and emitted() != first)

        model_file.write_text(good.replace("nn.ReLU(),", "nn.ReLU(), undefined_layer,"))
        line = next(i for i, text in enumerate(good.splitlines(), 1) if "nn.ReLU()," in text)
        vite.wait_for("the compile error", lambda: vite.count(f"{model_file.resolve()}:{line}:"))

        builds = vite.count("built in")
        model_file.write_text(good)  # fixed, and back to the first weights: kuma restores them from its cache
        vite.wait_for("a good build", lambda: vite.count("built in") > builds and emitted() == first)
    finally:
        vite.stop()


def test_npx_kuma_forwards_to_the_python_cli(tmp_path):
    app = copy_app("webpack", tmp_path)
    version = run(app, ["npx", "--no-install", "kuma", "--version"])
    assert version.returncode == 0 and version.stdout.strip() == "kuma-build 0.1.0", version.output

    (app / "models" / "net.py").write_text("def build_model(:\n")  # a syntax error on line 1
    result = run(app, ["npx", "--no-install", "kuma", "build", "--json"])
    assert result.returncode == 1, result.output
    event = json.loads(result.stdout.splitlines()[-1])
    assert event["event"] == "error" and (event["file"], event["line"]) == (str((app / "models" / "net.py").resolve()), 1)
    assert f"[kuma] error: {event['file']}:1:" in result.stderr


def test_packed_shim_holds_every_entry_point():
    package = json.loads((SHIM / "package.json").read_text())
    assert package["version"] == kuma_build.__version__  # released together; the shim checks major.minor
    result = subprocess.run(["npm", "pack", "--dry-run", "--json"], cwd=SHIM, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    packed = {f["path"] for f in json.loads(result.stdout)[0]["files"]}
    exports = [e.values() if isinstance(e, dict) else [e] for e in package["exports"].values()]
    entry_points = [*package["bin"].values(), *(path for e in exports for path in e)]
    modules = [f"src/{p.name}" for p in (SHIM / "src").iterdir()]
    assert {p.removeprefix("./") for p in entry_points} | set(modules) <= packed


def test_kuma_init_scaffolds_a_project_that_builds(tmp_path):
    (tmp_path / "package.json").write_text('{"name": "my-app", "private": true}\n')
    (tmp_path / ".gitignore").write_text("node_modules/\n")
    kuma = [sys.executable, "-m", "kuma_build"]

    result = run(tmp_path, [*kuma, "init"])
    assert result.returncode == 0, result.output
    assert (tmp_path / "kuma.toml").is_file() and (tmp_path / "models" / "model.py").is_file()
    assert (tmp_path / ".gitignore").read_text().splitlines()[-2:] == ["src/kuma/", ".kuma/"]
    assert 'import { load } from "kuma:model"' not in result.stdout and "kuma-model.js" in result.stdout  # the sample call
    assert 'from "kuma:model"' in (tmp_path / "kuma-model.js").read_text()

    (tmp_path / "models" / "model.py").write_text((tmp_path / "models" / "model.py").read_text() + "# mine\n")
    again = run(tmp_path, [*kuma, "init"])
    assert again.returncode == 0 and "kept models/model.py" in again.stdout
    assert (tmp_path / "models" / "model.py").read_text().endswith("# mine\n")
    assert (tmp_path / ".gitignore").read_text().count("src/kuma/") == 1

    build = run(tmp_path, [*kuma, "build", "--json"])
    assert build.returncode == 0, build.output
    event = json.loads(build.stdout.splitlines()[-1])
    assert (event["event"], event["model"], event["status"]) == ("built", "model", "built")
    assert Path(event["out"]) == tmp_path / "src" / "kuma" / "model" and (Path(event["out"]) / "index.js").is_file()


INIT_CASES = {  # config file -> (text before, what the patched file must hold)
    "vite.config.mjs": ('import { defineConfig } from "vite";\nimport react from "@vitejs/plugin-react";\n\n'
                        "export default defineConfig({\n  plugins: [react()],\n});\n",
                        'import react from "@vitejs/plugin-react";\nimport kuma from "kuma-build/vite";\n', "plugins: [kuma(), react()]"),
    "vite.config.js": ('import { defineConfig } from "vite";\n\nexport default defineConfig({\n  server: { port: 3000 },\n});\n',
                       'import kuma from "kuma-build/vite";', "defineConfig({\n  plugins: [kuma()],\n  server"),
    "vite.config.ts": ("import { defineConfig } from 'vite'\nimport {\n  a,\n  b,\n} from './plugins'\n\n"
                       "export default defineConfig({ plugins: [a(), b()] })\n",
                       "} from './plugins'\nimport kuma from \"kuma-build/vite\";\n", "plugins: [kuma(), a(), b()]"),
    "webpack.config.cjs": ('const path = require("node:path");\n\nmodule.exports = {\n  entry: "./src/index.js",\n'
                           '  module: { rules: [{ test: /\\.css$/, loader: require.resolve("css-loader") }] },\n};\n',
                           'const path = require("node:path");\nconst kuma = require("kuma-build/webpack").default;\n',
                           "module.exports = {\n  plugins: [kuma()],\n  entry"),
}


@pytest.mark.parametrize("config", INIT_CASES)
def test_kuma_init_patches_bundler_configs_once(config, tmp_path):
    before, *wanted = INIT_CASES[config]
    tool = config.split(".")[0]
    (tmp_path / "package.json").write_text(json.dumps({"name": "app", "devDependencies": {tool: "*", "kuma-build": "*"}}))
    (tmp_path / config).write_text(before)
    first = run(tmp_path, [sys.executable, "-m", "kuma_build", "init"])
    assert first.returncode == 0 and f"patched {config}" in first.stdout, first.output
    patched = (tmp_path / config).read_text()
    for text in wanted:
        assert text in patched, patched
    copy = tmp_path / f"check.{'cjs' if config.endswith('.cjs') else 'mjs'}"  # these .ts configs are plain JavaScript
    copy.write_text(patched)
    check = subprocess.run(["node", "--check", str(copy)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr + patched  # still valid JavaScript
    again = run(tmp_path, [sys.executable, "-m", "kuma_build", "init"])
    assert f"kept {config}" in again.stdout and (tmp_path / config).read_text() == patched, again.output


def test_python_is_found_in_a_venv_above_the_project(tmp_path):
    """A web app inside a Python project: ../.venv is found, after the app's own ./venv, which fails, is passed over."""
    def venv(folder: Path, python: str):
        (folder / "bin").mkdir(parents=True)
        (folder / "bin" / "python").write_text(f'#!/bin/sh\nexec {python} "$@"\n')
        (folder / "bin" / "python").chmod(0o755)
    app = tmp_path / "web"
    venv(tmp_path / ".venv", sys.executable)
    venv(app / "venv", "/bin/false")
    script = f"import({json.dumps(str(SHIM / 'src' / 'python.js'))}).then((m) => m.findPython({{ root: {json.dumps(str(app))} }}))" \
             ".then((p) => console.log(JSON.stringify(p)))"
    env = {k: v for k, v in os.environ.items() if k not in ("KUMA_PYTHON", "VIRTUAL_ENV", "CONDA_PREFIX", "UV_PROJECT_ENVIRONMENT")}
    result = subprocess.run(["node", "-e", script], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert (found["path"], found["source"]) == (str(tmp_path / ".venv" / "bin" / "python"), f"./.venv in {tmp_path}")


def test_allocate_inputs_with_dims():
    """kuma-build/input's allocateInputs sizes an input whose shape names a dim from the value given, and
    without one throws naming the input (no NaN-length array)."""
    specs = [{"name": "ids", "shape": [1, "seq"], "dtype": "int32"}, {"name": "x", "shape": [2, 3], "dtype": "float32"}]
    script = f"import({json.dumps(str(SHIM / 'src' / 'input.js'))}).then(({{ allocateInputs }}) => {{\n" \
             f"  const specs = {json.dumps(specs)};\n" \
             "  const feed = allocateInputs(specs, { seq: 5 });\n" \
             "  let error = null;\n" \
             "  try { allocateInputs(specs); } catch (e) { error = e.message; }\n" \
             "  console.log(JSON.stringify({ ids: [feed.ids.constructor.name, feed.ids.length], x: [feed.x.constructor.name, feed.x.length], error }));\n" \
             "})"
    result = subprocess.run(["node", "-e", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"ids": ["Int32Array", 5], "x": ["Float32Array", 6],
                                         "error": 'kuma: allocateInputs: input "ids" has shape [1,seq]; pass each dim\'s value, e.g. allocateInputs(inputs, { seq: 16 })'}
