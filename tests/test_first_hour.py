"""A web developer's first hour, end to end: a TypeScript app, `kuma init`, a model, and the checks
of issue #14, with the real tools (create-vite's template, tsc, Vite or webpack, Python found in
the project's own venv/, headless Chromium, a dev server killed with SIGKILL).

Two apps: create-vite's vanilla-ts template, copied from the pinned create-vite package in
tests/fixtures/vite-ts-app/node_modules (what `npm create vite@9.3.0 -- --template vanilla-ts`
writes), and the webpack 5 + ts-loader app of tests/fixtures/webpack-ts-app. Each test runs the
steps in the order a developer meets them, sharing one build between the checks:

1. `npx kuma init` patches the project and prints what it changed; a second run changes nothing;
2. a conv net is added (models/net.py and kuma.toml's section, from docs/first-model.md; the
   example of the issue) and the page code uses it;
3. `npm run build` passes from a fresh checkout that never built (kuma build runs before tsc);
4. tsc accepts `const y: Float32Array = result.logits` and rejects a misspelt input name, after
   the build and again in a clean checkout (the generated output deleted, kuma-env.d.ts kept);
5. the built page in Chromium matches PyTorch: the model, the sample call init wrote, the
   runtime object's keys; on Vite the image -> input helper (a canvas, an ImageData, a VideoFrame,
   an <img>, BGR order, grayscale) against torch's resize + normalize;
   the helpers a bundle does not import are not in it;
6. the dev server (vite; webpack serve) shows a shape mismatch with its code frame in the
   terminal, and after a kill -9 of its process no kuma process is left.

Setup: scripts/setup.sh (or, when stale, the module fixture below) runs npm ci in
both fixture folders; the tests never use the network.
"""

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from browser_support import BROWSER_DIR
from support import TOLERANCE, rel_l2
from test_npm_shim import Watching, npm_ci_if_stale, run_app_in_chromium

FIXTURES = Path(__file__).resolve().parent / "fixtures"
VITE_TS, WEBPACK_TS = FIXTURES / "vite-ts-app", FIXTURES / "webpack-ts-app"
TEMPLATE = VITE_TS / "node_modules" / "create-vite" / "template-vanilla-ts"
TIMEOUT = 180  # seconds for one command
SHAPE = (1, 3, 16, 16)

FIRST_MODEL_DOC = Path(__file__).resolve().parents[1] / "docs" / "first-model.md"


def doc_block(language: str) -> str:
    """The one ```language block of docs/first-model.md: the test adds the model the page teaches."""
    (block,) = re.findall(rf"```{language}\n(.*?)```", FIRST_MODEL_DOC.read_text(), re.S)
    return block


NET = doc_block("python")  # models/net.py: nn.Linear(4*4*4, 10) on line 11, called on line 16
NET_TOML = "\n" + doc_block("toml")  # [models.net], image of shape SHAPE

MISSPELT = """\
import { load } from "kuma:net";

export async function misspelt() {
  const model = await load();
  return model.run({ imgae: new Float32Array(768) });
}
"""
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # as the Vite page passes them


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    for folder in (BROWSER_DIR, VITE_TS, WEBPACK_TS):
        npm_ci_if_stale(folder)
    return tmp_path_factory.mktemp("kuma-cache")  # both apps compile each model once


def environment(cache_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("KUMA_PYTHON", "VIRTUAL_ENV", "CONDA_PREFIX")}
    return {**env, "KUMA_CACHE_DIR": str(cache_dir), "NO_COLOR": "1"}


def run(app: Path, command: list[str], env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=app, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    result.output = result.stdout + result.stderr
    return result


def scaffold(tool: str, tmp_path: Path) -> Path:
    """The app as a developer has it before kuma: the template (or fixture) and its npm packages,
    kuma-build among them, and the project's Python in ./venv (a stand-in that runs this one)."""
    app = tmp_path / "app"
    if tool == "vite":
        shutil.copytree(TEMPLATE, app)
        (app / "_gitignore").rename(app / ".gitignore")  # as create-vite does
        package = json.loads((app / "package.json").read_text())
        package["devDependencies"]["kuma-build"] = "file:../npm-shim"  # as `npm install --save-dev kuma-build` adds it
        (app / "package.json").write_text(json.dumps(package, indent=2) + "\n")
        node_modules = VITE_TS / "node_modules"
    else:
        shutil.copytree(WEBPACK_TS, app, ignore=shutil.ignore_patterns("node_modules", "dist", "package-lock.json"))
        node_modules = WEBPACK_TS / "node_modules"
    (app / "node_modules").symlink_to(node_modules)
    python = app / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    return app


def add_net(tool: str, app: Path) -> None:
    (app / "models" / "net.py").write_text(NET)
    with (app / "kuma.toml").open("a") as toml:
        toml.write(NET_TOML)
    if tool == "vite":  # the page code, over the template's demo
        shutil.copyfile(VITE_TS / "main.ts", app / "src" / "main.ts")


def check_types(app: Path, env: dict, when: str) -> None:
    tsc = [str(app / "node_modules" / ".bin" / "tsc"), "--noEmit", "-p", str(app)]
    accepted = run(app, tsc, env)
    assert accepted.returncode == 0, f"tsc {when}:\n{accepted.output}"
    (app / "src" / "misspelt.ts").write_text(MISSPELT)
    try:
        rejected = run(app, tsc, env)
    finally:
        (app / "src" / "misspelt.ts").unlink()
    assert rejected.returncode != 0 and re.search(r"misspelt\.ts\(5,\d+\): error TS\d+: .*'imgae'", rejected.output), \
        f"tsc {when} accepted a misspelt input name:\n{rejected.output}"


def pytorch(app: Path, file: str, *args: torch.Tensor) -> np.ndarray:
    spec = importlib.util.spec_from_file_location(f"first_hour_{file}", app / "models" / file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with torch.no_grad():
        return module.build_model().eval()(*args).numpy().ravel()


def torch_preprocess(pixels: np.ndarray, mean=MEAN, std=STD) -> torch.Tensor:
    """torchvision's tensor pipeline: to 0..1, bilinear resize (no antialias), normalize."""
    x = torch.from_numpy(pixels[..., :3].astype(np.float32)).permute(2, 0, 1)[None] / 255
    x = torch.nn.functional.interpolate(x, size=SHAPE[2:], mode="bilinear", align_corners=False, antialias=False)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie has exited
    except FileNotFoundError:
        return True


@pytest.mark.browser
@pytest.mark.parametrize("tool", ["vite", "webpack"])
def test_first_hour(tool, tmp_path, cache_dir):
    env = environment(cache_dir)
    app = scaffold(tool, tmp_path)
    kuma = ["npx", "--no-install", "kuma"]  # the npm package's bin, finding ./venv/bin/python

    # 1. kuma init fits the project, and says so; a second run changes nothing
    init = run(app, [*kuma, "init"], env)
    assert init.returncode == 0, init.output
    config = "wrote vite.config.ts" if tool == "vite" else 'patched webpack.config.js: import kuma from "kuma-build/webpack";'
    for change in (config, "patched tsconfig.json", "patched package.json", "wrote src/kuma-env.d.ts", "wrote src/kuma-model.ts"):
        assert change in init.stdout, init.output
    before = {p: p.read_bytes() for p in app.rglob("*") if p.is_file() and "node_modules" not in p.parts}
    again = run(app, [*kuma, "init"], env)
    assert again.returncode == 0 and not re.search(r"\] (wrote|patched|added)", again.stdout), again.output
    assert {p: p.read_bytes() for p in before} == before

    # 2-3. a model; `npm run build` from a checkout that never built
    add_net(tool, app)
    build = run(app, ["npm", "run", "build"], env)
    assert build.returncode == 0, build.output
    assert 'declare module "kuma:net"' in (app / "src" / "kuma-env.d.ts").read_text()

    # 4. exact types after the build
    check_types(app, env, "after a build")

    # 5. the built page in Chromium, like PyTorch
    rng = np.random.default_rng(14)
    if tool == "vite":
        pixels = rng.integers(0, 256, size=(19, 23, 4), dtype=np.int32)  # height, width, RGBA
        pixels[..., 3] = 255  # opaque: the canvas keeps the colours exactly
        feed = {"pixels": pixels.ravel(), "size": np.array([23, 19], dtype=np.int32)}
        image = torch_preprocess(pixels)
    else:
        image = torch.randn(SHAPE)
        feed = {"image": image.numpy()}
    outputs, _ = run_app_in_chromium(app / "dist", feed)
    if tool == "vite":  # the image helper, from a canvas, an ImageData, a VideoFrame and an <img>
        for source in ("image", "fromImageData", "fromVideoFrame", "fromImage"):
            assert rel_l2(outputs[source], image.numpy().ravel()) <= TOLERANCE, source
        bgr = torch_preprocess(pixels, mean=[0, 0, 0], std=[1, 1, 1]).flip(1)
        assert rel_l2(outputs["bgr"], bgr.numpy().ravel()) <= TOLERANCE
        rgb = torch_preprocess(pixels, mean=[0, 0, 0], std=[1, 1, 1])
        gray = (rgb * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)  # torchvision's rgb_to_grayscale
        assert rel_l2(outputs["gray"], gray.numpy().ravel()) <= TOLERANCE
    assert rel_l2(outputs["logits"], pytorch(app, "net.py", image)) <= TOLERANCE
    assert rel_l2(outputs["sample"], pytorch(app, "model.py", torch.zeros(1, 16))) <= TOLERANCE
    api = json.loads("".join(map(chr, outputs["api"].view(np.int32))))
    assert api == [["cached", "device", "deviceClass", "dispose", "inputs", "lost", "outputBuffer", "outputs", "reset", "run"], ["dtype", "name", "shape"], list(SHAPE)]
    bundle = "".join(p.read_text() for p in (app / "dist").rglob("*.js"))
    uses_image_helper = "kuma: imageToTensor needs a shape" in bundle
    assert uses_image_helper == (tool == "vite"), "a bundle holds exactly the input helpers its app imports"

    # 4 again: a clean checkout (the ignored output gone; kuma-env.d.ts is committed)
    for ignored in ("src/kuma", ".kuma", "dist"):
        shutil.rmtree(app / ignored, ignore_errors=True)
    check_types(app, env, "in a clean checkout")

    # 6. the dev server: an error with its code frame in the terminal; kill -9 leaves no kuma process
    (app / "models" / "net.py").write_text(NET.replace("nn.Linear(4*4*4, 10)", "nn.Linear(4*4*8, 10)"))
    bin_ = app / "node_modules" / ".bin"
    port = str(free_port())
    command = [str(bin_ / "vite"), "--port", port, "--strictPort"] if tool == "vite" else [str(bin_ / "webpack"), "serve", "--port", port]
    server = Watching(app, command, env=env)
    try:
        definition = f"{(app / 'models' / 'net.py').resolve()}:11:"
        server.wait_for("the error and its code frame", lambda: server.count(definition) and server.count("> 11 |         self.fc = nn.Linear(4*4*8, 10)"))
        assert server.count("expected an input of shape [..., 128] but got [1, 64]"), "".join(server.lines)
        (python,) = [pid for pid in server.children() if b"kuma_build" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        server.process.kill()
        server.process.wait(timeout=30)
        deadline = time.monotonic() + 30
        while not gone(python):
            assert time.monotonic() < deadline, "kuma watch outlived its killed dev server"
            time.sleep(0.1)
    finally:
        if server.process.poll() is None:
            server.stop()
