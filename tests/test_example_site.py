"""example-site/ with the real tools: Vite, the kuma-build npm shim (npm-shim/, installed from the
local folder) and headless Chromium with WebGPU, driven through tests/browser/drive_page.mjs.

- `vite build`, dist/ served statically from 127.0.0.1: the page's model gives PyTorch's logits on
  held-out handwritten digits (example-site/train/heldout_digits.safetensors, written by the training
  script) and their right answers, and a digit drawn with the mouse gets the right answer.
- the same build's second page, the text generator: a prompt typed into it (greedy, set by the URL)
  gets the bytes PyTorch eager's greedy decoding of models/lm.py gets (the prompt in one run, then
  one byte per run), and so does a prompt longer than the cache (its last bytes); sampling at a
  temperature generates as many bytes.
- `vite` dev server, on a copy of the site: saving models/classifier.py with a new head changes the
  page's output without a manual reload; a syntax error shows in Vite's error overlay with file and
  line; fixing it brings the model back.

Setup (scripts/setup.sh): npm ci in tests/browser and in example-site.
"""

import base64
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from browser_support import Browser
from support import TOLERANCE, rel_l2

pytestmark = pytest.mark.browser

SITE = Path(__file__).resolve().parent.parent / "example-site"
SEVEN = [[80, 60], [200, 60], [120, 230]]  # a stroke path on the 280x280 pad
PROMPT, GENERATED = "Return a new ", 24  # typed into the text generator; bytes it writes
POLL_SECONDS = 0.25


@pytest.fixture(scope="module")
def env():
    """npm packages installed as scripts/setup.sh does; the shim runs kuma from this Python."""
    if not (SITE / "node_modules").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=SITE, check=True, timeout=300)
    assert (SITE / "node_modules" / "kuma-build").resolve() == SITE.parent / "npm-shim", "the shim comes from the local folder"
    runtime = os.environ.get("XDG_RUNTIME_DIR") or tempfile.mkdtemp()
    return {**os.environ, "KUMA_PYTHON": sys.executable, "XDG_RUNTIME_DIR": runtime, "NO_COLOR": "1"}


@pytest.fixture(scope="module")
def page():
    driver = Browser("drive_page.mjs")
    yield driver
    driver.close()


@pytest.fixture(scope="module")
def heldout():
    digits = load_file(SITE / "train" / "heldout_digits.safetensors")
    return digits["images"], digits["labels"]


@pytest.fixture(scope="module")
def dist(env, tmp_path_factory) -> Path:
    """The site built by `vite build`: both pages and both models."""
    dist = tmp_path_factory.mktemp("site") / "dist"
    build = subprocess.run(["npx", "vite", "build", "--outDir", str(dist), "--emptyOutDir"], cwd=SITE, env=env,
                           capture_output=True, text=True, timeout=240)
    assert build.returncode == 0, build.stdout + build.stderr
    return dist


def site_model(site: Path, name: str):
    """(models/<name>.py as a module, its build_model() with weights/<name>.safetensors loaded, in eval mode)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", site / "models" / f"{name}.py")
    source = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(source)
    model = source.build_model().eval()
    model.load_state_dict(load_file(site / "weights" / f"{name}.safetensors"))
    return source, model


def torch_logits(site: Path, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return site_model(site, "classifier")[1](images)


def classify(page: Browser, image: torch.Tensor) -> tuple[np.ndarray | None, dict]:
    """The page's logits for one 1x1x28x28 image (None when the page could not answer now), and the reply."""
    data = base64.b64encode(image.numpy().astype("<f4").tobytes()).decode()
    reply = page.request({"classify": data}, "classifying")
    logits = np.frombuffer(base64.b64decode(reply["logits"]), dtype="<f4") if reply["ok"] else None
    return logits, reply


def command(page: Browser, message: dict) -> dict:
    reply = page.request(message, str(message)[:80])
    assert reply["ok"], f"{message}: {reply['error']}\n" + "\n".join(reply.get("problems", []))
    return reply


def wait_for(what: str, attempt, seconds: float):
    """Calls attempt() until it returns something other than None; fails after seconds."""
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        result, last = attempt()
        if result is not None:
            return result
        time.sleep(POLL_SECONDS)
    pytest.fail(f"{what}: not within {seconds} s (last reply: {str(last)[:2000]})")


def test_vite_build_runs_the_model_like_pytorch(dist, page, heldout):
    assert list((dist / "assets").glob("*.bin")), "the weight chunks are emitted as assets"

    problems = command(page, {"open": str(dist)})["problems"]
    images, labels = heldout
    expected = torch_logits(SITE, images)
    for image, label, want in zip(images, labels, expected):
        logits, reply = classify(page, image[None])
        assert logits is not None, reply
        assert rel_l2(logits, want.numpy()) <= TOLERANCE
        assert int(logits.argmax()) == int(want.argmax()) == int(label)
        problems += reply["problems"]

    drawn = command(page, {"draw": SEVEN})
    assert drawn["digit"] == "7"
    assert not problems + drawn["problems"], problems + drawn["problems"]

    # a browser without WebGPU gets a plain explanation instead of the model
    command(page, {"open": str(dist), "webgpu": False})
    assert "no WebGPU" in command(page, {"text": "#problem"})["text"]


def test_generator_page_writes_what_pytorch_writes(dist, page):
    command(page, {"open": str(dist)})
    assert command(page, {"text": "nav a"})["text"] == "Write a docstring"  # the first page links to it

    command(page, {"open": str(dist), "page": f"generate.html?temperature=0&tokens={GENERATED}"})
    source, model = site_model(SITE, "lm")
    # a prompt longer than the cache: the page keeps the last bytes that leave room for the generated
    long_prompt = " ".join(source.__doc__.split())[:source.CONTEXT + 20]
    for prompt, kept in [(PROMPT, PROMPT), (long_prompt, long_prompt[-(source.CONTEXT - GENERATED):])]:
        reply = command(page, {"prompt": prompt})
        assert reply["generated"] == source.greedy(model, kept.encode(), GENERATED).decode(), len(prompt)
        assert "tokens/s" in reply["speed"], reply["speed"]
        assert not reply["problems"], reply["problems"]

    # sampling reads the prefill's logits (one row per prompt position) and draws from the last row
    command(page, {"open": str(dist), "page": f"generate.html?temperature=1&tokens={GENERATED}"})
    reply = command(page, {"prompt": PROMPT})
    assert f"Generated: {GENERATED} bytes at" in reply["speed"], reply["speed"]
    assert not reply["problems"], reply["problems"]


@pytest.fixture
def dev_server(env, tmp_path):
    """`vite` on a copy of the site (the test edits its model), on a free port; killed afterwards."""
    site = tmp_path / "site"
    shutil.copytree(SITE, site, ignore=shutil.ignore_patterns("node_modules", "dist", ".kuma", "kuma", "train"))
    (site / "node_modules").symlink_to(SITE / "node_modules")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = open(tmp_path / "vite.log", "w+")
    server = subprocess.Popen(["npx", "vite", "--port", str(port), "--strictPort", "--host", "127.0.0.1"], cwd=site,
                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        def up():
            if server.poll() is not None:
                pytest.fail(f"vite exited with {server.returncode}:\n{log_text(log)}")
            try:
                return urllib.request.urlopen(url, timeout=5).status, None
            except OSError as error:
                return None, error
        wait_for("the dev server answering", up, 120)
        yield site, url
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # its own group: npx, vite and the kuma watch child
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        print(log_text(log))
        log.close()


def log_text(log) -> str:
    log.flush()
    log.seek(0)
    return log.read()[-6000:]


def test_dev_server_follows_model_edits(dev_server, page, heldout):
    site, url = dev_server
    model_file = site / "models" / "classifier.py"
    original = model_file.read_text()
    image = heldout[0][7][None]
    command(page, {"open": url})

    def logits_near(target):
        def attempt():
            logits, reply = classify(page, image)
            return (logits if logits is not None and rel_l2(logits, target) <= TOLERANCE else None), reply
        return attempt

    first = wait_for("the first run", logits_near(torch_logits(site, image)[0].numpy()), 60)

    # a new head: the page shows twice the logits, and the test never reloads it
    doubled = original.replace("return self.head(self.features(image))", "return self.head(self.features(image)) * 2")
    assert doubled != original, "models/classifier.py no longer has the line this test edits"
    saved = time.monotonic()
    model_file.write_text(doubled)
    wait_for("the edited model on the page", logits_near(2 * first), 45)
    print(f"edited model running on the page {time.monotonic() - saved:.1f} s after the save")

    # a syntax error: Vite's overlay names the file and the line
    lines = original.splitlines()
    broken_line = next(i for i, line in enumerate(lines, 1) if "return self.head" in line)
    lines[broken_line - 1] += " +"
    model_file.write_text("\n".join(lines) + "\n")

    def overlay():
        reply = command(page, {"overlay": True})
        return reply["overlay"], reply
    shown = wait_for("the error overlay", overlay, 45)
    text = " ".join(shown.values())
    assert "classifier.py" in text and f":{broken_line}" in text, shown

    # fixed: the overlay goes and the page runs the model again
    model_file.write_text(original)
    wait_for("the fixed model on the page", logits_near(first), 45)
    assert command(page, {"overlay": True})["overlay"] is None
