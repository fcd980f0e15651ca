"""A Llama-style step model with a static KV cache in state buffers, generating greedily in
headless Chromium (tests/browser/decode.mjs): token-identical to PyTorch eager stepping the same
module, again after reset() with the prompt's runs queued at once, with each step's token fed back
as a GPUBuffer and 4 bytes read; and the errors of misused read options and GPUBuffer inputs."""

import copy

import pytest
import torch

from browser_support import Browser
from kuma_build.compiler import compile_module
from support import model_config
from test_state import PROMPT, STEPS, Llama, eager_generate

pytestmark = pytest.mark.browser


def test_llama_greedy_decode_in_chromium(tmp_path):
    torch.manual_seed(0)
    module = Llama().eval()
    reference = copy.deepcopy(module)
    inputs = (torch.tensor([[3]]), torch.tensor([0]))
    folder = compile_module(module, model_config(module, inputs, name="llama")).write(tmp_path)
    expected, _ = eager_generate(reference)
    browser = Browser("decode.mjs", "--serve")
    try:
        reply = browser.request({"root": str(folder.parent), "model": folder.name, "prompt": PROMPT, "steps": STEPS}, "decoding")
    finally:
        browser.close()
    assert reply["ok"], reply.get("error")
    assert reply["adapter"]["vendor"] or reply["adapter"]["architecture"], f"no WebGPU adapter info: {reply['adapter']}"
    assert reply["first"] == expected
    assert reply["again"] == expected  # after reset(), with the prompt's runs queued at once
    errors = reply["errors"]
    assert errors["unknownRead"].startswith('TypeError: kuma: run() cannot read unknown output "nope"')
    assert errors["notCopySource"].startswith('TypeError: kuma: GPUBuffer for input "token" needs the COPY_SRC usage')
    assert errors["tooSmall"].startswith('RangeError: kuma: GPUBuffer for input "token" has 0 bytes; it needs 4')
    assert errors["unknownOutput"].startswith('TypeError: kuma: model llama has no output "nope"')
