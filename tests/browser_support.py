"""Run emitted models in real headless Chromium with WebGPU and compare with PyTorch.

One Chromium serves the whole pytest session: tests/browser/run_model.mjs runs
in --serve mode and takes one JSON request per line on stdin, answering one
JSON line on stdout; each run gets a fresh browser context and page. Tensors
cross as base64 of their little-endian bytes, so float32 arrives exactly.
Setup (once): cd tests/browser && npm ci
"""

import atexit
import base64
import json
import queue
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kuma_build.compiler import compile_module
from kuma_build.verify import reference_outputs
from support import TOLERANCE, assert_outputs_match, model_config

BROWSER_DIR = Path(__file__).resolve().parent / "browser"
TIMEOUT = 150  # seconds per reply; the node script gives up at 120 s on its own
NUMPY_DTYPES = {"float32": np.dtype("<f4"), "int32": np.dtype("<i4")}


@dataclass
class BrowserRun:
    outputs: dict  # name -> np.ndarray, in the model's output order
    facts: dict  # adapter, progress {calls, first, last, monotonic}, loadMs, runMs, submits (dispatches per command buffer of the run)


class Browser:
    """One headless Chromium driven through a script in tests/browser (run_model.mjs --serve by default)
    that says {"ready": true, "chromium"} and then answers each JSON request line with one JSON line."""

    def __init__(self, *command: str):
        script, *args = command or ("run_model.mjs", "--serve")
        if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
            raise RuntimeError(f"playwright-core is not installed in {BROWSER_DIR}: run `npm ci` there first (see tests/browser/README.md)")
        self.script = script
        self.stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(["node", str(BROWSER_DIR / script), *args], cwd=BROWSER_DIR,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        self.lines = queue.Queue()
        # a thread reads replies so a hung node can be timed out
        threading.Thread(target=self._read, daemon=True).start()
        hello = self._reply("starting Chromium")
        if not hello.get("ready"):
            self._fail(f"Chromium did not start: {hello.get('error')}")
        self.chromium = hello["chromium"]

    def _read(self):
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _fail(self, message: str):
        self.close()
        self.stderr.seek(0)
        log = self.stderr.read().decode(errors="replace").strip()
        raise RuntimeError(f"{message}\n--- {self.script} stderr ---\n{log[-4000:]}" if log else message)

    def _reply(self, what: str) -> dict:
        try:
            line = self.lines.get(timeout=TIMEOUT)
        except queue.Empty:
            self._fail(f"no reply from the browser after {TIMEOUT} s while {what}")
        if line is None:
            self._fail(f"{self.script} exited while {what}")
        return json.loads(line)

    def run(self, root: Path, model: str, inputs: dict[str, np.ndarray], options: dict | None = None) -> BrowserRun:
        if self.process.poll() is not None:
            raise RuntimeError("the browser has already stopped (an earlier run failed or timed out)")
        request = {"root": str(root), "model": model, "inputs": {name: encode(array) for name, array in inputs.items()},
                   "options": options or {}}
        reply = self.request(request, f"running {model}")
        if not reply["ok"]:
            raise AssertionError(f"model {model} failed in Chromium:\n{reply['error']}")
        adapter = reply["adapter"]
        # the run must have used a real WebGPU adapter, whatever it is (SwiftShader here)
        assert adapter and (adapter["vendor"] or adapter["architecture"]), f"no WebGPU adapter info: {adapter}"
        outputs = {name: decode(spec) for name, spec in reply.pop("outputs").items()}
        return BrowserRun(outputs, reply)

    def request(self, message: dict, what: str) -> dict:
        """Sends one request line and waits for its reply line."""
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()
        return self._reply(what)

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def encode(array: np.ndarray) -> dict:
    dtype = "float32" if array.dtype.kind == "f" else "int32"
    data = np.ascontiguousarray(array, dtype=NUMPY_DTYPES[dtype]).tobytes()
    return {"dtype": dtype, "shape": list(array.shape), "data": base64.b64encode(data).decode()}


def decode(spec: dict) -> np.ndarray:
    data = base64.b64decode(spec["data"])
    return np.frombuffer(data, dtype=NUMPY_DTYPES[spec["dtype"]]).reshape(spec["shape"]).astype(spec["dtype"])


_browser = None


def shared_browser() -> Browser:
    """The session's browser, started on first use and closed at exit."""
    global _browser
    if _browser is None or _browser.process.poll() is not None:
        _browser = Browser()
        atexit.register(_browser.close)
    return _browser


def run_folder(model_folder: Path, inputs: dict[str, np.ndarray], options: dict | None = None) -> BrowserRun:
    """Load the model in model_folder in Chromium (with extra load() options) and run it once."""
    return shared_browser().run(model_folder.parent, model_folder.name, inputs, options)


def run_in_browser(model_folder: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs of the emitted model in model_folder, run in Chromium."""
    return run_folder(model_folder, inputs).outputs


def assert_matches_in_browser(module: torch.nn.Module, *inputs: torch.Tensor, out_dir: Path,
                              chunk_size: int = 4 << 20, tolerance: float = TOLERANCE, device: str = "cpu",
                              options: dict | None = None):
    """Compile module, write it under out_dir, run it in Chromium (with extra load() options) and
    compare with PyTorch.

    Returns (compiled, facts) so tests can check loading details.
    """
    module = module.eval()
    config = model_config(module, inputs, device=device)
    compiled = compile_module(module, config, chunk_size)
    result = run_folder(compiled.write(out_dir), {s.name: t.numpy() for s, t in zip(config.inputs, inputs)}, options)
    expected = reference_outputs(module, config, {s.name: t for s, t in zip(config.inputs, inputs)})
    assert_outputs_match(list(result.outputs.values()), expected, tolerance)
    return compiled, result.facts
