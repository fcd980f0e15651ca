"""Loading a model like a production asset, in headless Chromium (issue #11, #13's runtime errors).

One model of 4 MiB weights in 16 KiB chunks (257 chunks) is built once; tests/browser/load_faults.mjs
loads it in fresh browser contexts while the DevTools protocol corrupts, fails, stalls or holds back
chunk requests, and run_model.mjs's server counts what it sends. Every successful load is compared
with PyTorch, so a fault can never turn into a wrong output unnoticed.
"""

import hashlib
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from browser_support import Browser, decode, encode
from kuma_build.compiler import compile_module
from support import assert_outputs_match, model_config

pytestmark = pytest.mark.browser
CHUNK = 16 << 10
QUOTA_EXCEEDED = ('Cache.prototype.put = function () { return Promise.reject(new DOMException("quota exceeded (test)", '
                  '"QuotaExceededError")); };')


class Wide(nn.Module):
    """4 MiB of weights, no matmul: SwiftShader compiles it in milliseconds."""

    def __init__(self, seed: int):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.scale = nn.Parameter(torch.randn(8, 131072, generator=generator))
        self.shift = nn.Parameter(torch.randn(8, 1, generator=generator))

    def forward(self, x):
        return (x * self.scale + self.shift).sum(1)


class Built:
    def __init__(self, root, module, x):
        self.module = module.eval()
        self.compiled = compile_module(self.module, model_config(self.module, (x,), name="wide"), CHUNK)
        self.root = self.compiled.write(root).parent
        self.chunks = [{"file": c.file, "size": len(c.data), "sha256": c.sha256} for c in self.compiled.chunks]

    def expected(self, x):
        with torch.no_grad():
            return [self.module(x).numpy()]


@pytest.fixture(scope="module")
def driver():
    browser = Browser("load_faults.mjs")
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def x():
    return torch.randn(131072, generator=torch.Generator().manual_seed(5))


@pytest.fixture(scope="module")
def wide(tmp_path_factory, x):
    return Built(tmp_path_factory.mktemp("v1"), Wide(1), x)


def scenario(driver, built, x, name, **fields) -> dict:
    request = {"scenario": name, "root": str(built.root), "model": "wide", "chunks": built.chunks,
               "inputs": {"x": encode(x.numpy())}, **fields}
    reply = driver.request(request, f"scenario {name}")
    assert not reply.get("error", "").startswith("driver:"), reply["error"]
    # Chromium logs each failed request as a console error; the faults here are on purpose
    problems = [p for p in reply.get("problems") or [] if not p.startswith("console error: Failed to load resource")]
    assert not problems, problems
    return reply


def assert_correct(reply, built, x):
    assert reply["ok"], reply.get("error")
    assert_outputs_match([decode(o) for o in reply["outputs"].values()], built.expected(x))


def test_chunks_carry_their_hash(wide):
    # the program keeps each chunk's size and id (its SHA-256's first 12 hex digits, which name its
    # file), and the SHA-256 of all the chunks' SHA-256s
    assert len(wide.chunks) > 100
    assert wide.compiled.program["chunks"] == [{"size": c["size"], "id": c["sha256"][:12]} for c in wide.chunks]
    assert wide.compiled.program["digest"] == hashlib.sha256("".join(c["sha256"] for c in wide.chunks).encode()).hexdigest()
    for chunk in wide.chunks:
        assert chunk["file"] == f"weights/{chunk['sha256'][:12]}.bin"


def test_chunks_that_only_begin_like_the_build_fail_the_load(driver, wide, x, tmp_path):
    # each chunk's SHA-256 begins with its id, but the digest of them all differs (as when a chunk
    # was made to collide with the id): the load fails, and the chunks it took from the cache are dropped
    shutil.copytree(wide.root, tmp_path, dirs_exist_ok=True)
    module = tmp_path / "wide" / "cpu.js"  # the class's module holds the digest of the chunks it uses
    digest = wide.compiled.program["digest"]
    assert digest in module.read_text()
    module.write_text(module.read_text().replace(digest, hashlib.sha256(digest.encode()).hexdigest()))
    reply = scenario(driver, wide, x, "digest", root2=str(tmp_path))
    assert reply["first"]["ok"] and reply["keys"] == len(wide.chunks)
    assert not reply["second"]["ok"]
    assert reply["second"]["error"] == ("kuma: the weight chunks of model wide do not match this build in full (SHA-256): the deployed "
                                        "files differ from the build. Deploy the model's whole output folder from one build.")
    assert reply["keysAfter"] == 0


def test_heap_stays_bounded_by_a_few_chunks(driver, wide, x):
    # all but the last chunk are loaded and that one is held at the network: the weights so far
    # (4 MiB) are on the GPU, not in JS memory (the runtime before #11 kept them all there). The JS
    # heap grows by a constant ~0.6 MB (the runtime's compiled code, measured the same at 33 or 257
    # chunks); ArrayBuffers by about one chunk
    reply = scenario(driver, wide, x, "heap")
    assert_correct(reply, wide, x)
    before, during = reply["before"], reply["during"]
    # usedSize: the JS heap; backingStorageSize: ArrayBuffer contents (where the chunks' bytes live)
    growth = during["usedSize"] + during["backingStorageSize"] - before["usedSize"] - before["backingStorageSize"]
    weights = sum(c["size"] for c in wide.chunks)
    assert growth < weights / 4, f"JS memory grew {growth} bytes while {weights} bytes of weights loaded: {before} -> {during}"
    assert during["backingStorageSize"] - before["backingStorageSize"] < 12 * CHUNK, (before, during)


def test_second_load_comes_from_the_cache_and_a_new_build_reuses_unchanged_chunks(driver, wide, x, tmp_path):
    # v2 changes the shift only: the scale's 128 chunks are the same bytes under the same hashes
    module = Wide(1)
    with torch.no_grad():
        module.shift += 1
    v2 = Built(tmp_path, module, x)
    changed = [c for c in v2.chunks if c not in wide.chunks]
    assert 0 < len(changed) < 4
    reply = scenario(driver, wide, x, "cache", root2=str(v2.root))
    first, second, third = reply["loads"]
    for load, built in zip(reply["loads"], (wide, wide, v2)):
        assert_correct(load, built, x)
    assert first["served"]["bytes"] == sum(c["size"] for c in wide.chunks)
    assert second["served"] == {"count": 0, "bytes": 0, "files": []}
    assert sorted(third["served"]["files"]) == sorted(c["file"].split("/")[-1] for c in changed)
    # the chunks only v1 used are gone from the cache
    assert sorted(third["keys"]) == sorted(c["sha256"][:12] for c in v2.chunks)


def test_cache_stores_wait_until_the_model_is_loaded(driver, wide, x):
    # the stores begin once load() has resolved (during the downloads they slowed them), so no
    # Cache.put had started then; a held put keeps model.cached pending; released, every chunk is stored
    reply = scenario(driver, wide, x, "deferred_store")
    assert_correct(reply, wide, x)
    assert reply["putsAtLoad"] == 0 and reply["settledWhileHeld"] is False
    assert sorted(reply["keys"]) == sorted(c["sha256"][:12] for c in wide.chunks)
    # a model disposed right after load() still stores every chunk: its buffers (and the device
    # load() made) are destroyed once the stores that read them are done
    assert reply["disposed"] == {"keys": len(wide.chunks), "destroyedBeforeStored": False, "lost": "destroyed"}


def test_damaged_cache_entry_is_fetched_again(driver, wide, x):
    reply = scenario(driver, wide, x, "damaged_cache", damage=3)
    assert_correct(reply["first"], wide, x)
    assert_correct(reply["second"], wide, x)
    assert reply["served"]["files"] == [wide.chunks[3]["file"].split("/")[-1]]
    assert reply["repaired"]


def test_corrupted_chunk_fails_naming_it(driver, wide, x):
    reply = scenario(driver, wide, x, "corrupt", corrupt=5, mode="always")
    assert not reply["ok"] and "outputs" not in reply
    assert wide.chunks[5]["file"] in reply["error"] and "does not match this build" in reply["error"]
    assert reply["attempts"] == 2  # fetched once more, bypassing caches


def test_chunk_corrupted_once_is_fetched_again(driver, wide, x):
    reply = scenario(driver, wide, x, "corrupt", corrupt=5, mode="once")
    assert_correct(reply, wide, x)
    assert reply["attempts"] == 2


def test_flaky_connection_still_loads(driver, wide, x):
    reply = scenario(driver, wide, x, "flaky")
    assert_correct(reply, wide, x)
    assert all(reply["attempts"][str(i)] == 2 for i in range(9)), reply["attempts"]
    assert reply["progress"] == [sum(c["size"] for c in wide.chunks)] * 2  # retries never count twice


def test_stalled_download_is_retried(driver, wide, x):
    reply = scenario(driver, wide, x, "stall", timeout=1000)
    assert_correct(reply, wide, x)
    assert reply["attempts"] >= 2  # more if a busy machine also delays a retry past the timeout


def test_missing_chunk_names_the_url(driver, wide, x):
    reply = scenario(driver, wide, x, "status", status=404)
    assert not reply["ok"] and reply["attempts"] == 1  # not retried
    assert wide.chunks[0]["file"] in reply["error"] and "the deployed files differ from this build of model wide" in reply["error"]


def test_empty_response_is_a_clear_error(driver, wide, x):
    reply = scenario(driver, wide, x, "status", status=204)
    assert not reply["ok"]
    assert reply["error"].startswith(f"kuma: weight chunk ") and "came back with no body (HTTP 204" in reply["error"]


def test_html_fallback_page_is_named(driver, wide, x):
    # a server that answers every unknown path with its index.html, status 200
    reply = scenario(driver, wide, x, "status", status=200, body="<!doctype html>", type="text/html")
    assert not reply["ok"] and reply["attempts"] == 2  # fetched once more, bypassing caches
    assert f"{wide.chunks[0]['file']} does not match this build of model wide (it is 15 bytes, the build's {wide.chunks[0]['size']})" in reply["error"]
    assert "The server answered with an HTML page" in reply["error"]


def test_abort(driver, wide, x):
    reply = scenario(driver, wide, x, "abort")
    assert not reply["ok"] and reply["name"] == "AbortError"


def test_quota_exceeded_loads_without_the_cache(driver, wide, x):
    reply = scenario(driver, wide, x, "quota", init=[QUOTA_EXCEEDED])
    assert_correct(reply, wide, x)
    assert reply["keys"] == []
    assert len(reply["warnings"]) == 1 and "QuotaExceededError" in reply["warnings"][0]
    assert reply["served"]["count"] == len(wide.chunks)


def test_load_and_run_in_a_module_worker(driver, wide, x):
    reply = scenario(driver, wide, x, "worker")
    assert_correct(reply, wide, x)
    assert reply["inWorker"]


def test_run_copies_inputs_and_misuse_is_a_clear_error(driver, wide, x):
    reply = scenario(driver, wide, x, "run_api")
    assert_correct(reply, wide, x)  # the inputs were zeroed right after run(): it used them as passed
    assert_outputs_match([decode(o) for o in reply["queuedOutputs"].values()], wide.expected(x))  # and so did a run queued behind it
    assert reply["nullInputs"] == 'TypeError: kuma: run() takes an object mapping each input name ("x") to a typed array, got null.'
    assert reply["unknown"] == 'TypeError: kuma: run() got an unknown input "nope"; model wide takes "x".'
    assert reply["afterDispose"] == "Error: kuma: run() on model wide after dispose(): its GPU buffers are gone; load() it again."
    assert reply["lost"] == {"reason": "destroyed"}


class Double(nn.Module):
    def forward(self, x):
        return x * 2


def test_buffer_over_the_device_limit_is_named(driver, tmp_path):
    # 8193 x 4096 floats: 16 KiB over the default 128 MiB binding limit; never allocated
    x = torch.zeros(8193, 4096)
    compiled = compile_module(Double(), model_config(Double(), (x,), name="wide"), CHUNK)
    root = compiled.write(tmp_path).parent
    reply = driver.request({"scenario": "limits", "root": str(root), "model": "wide", "chunks": []}, "scenario limits")
    assert not reply["ok"] and reply["limit"] == 128 << 20
    assert reply["error"] == (f'kuma: model wide cannot run here: its buffer 0 (input "x") is {x.numel() * 4} bytes, but this device allows '
                              f"maxStorageBufferBindingSize = {128 << 20}. Use a device with larger limits (load() asks the adapter for what "
                              "the model needs; a device passed as load({ device }) must have been requested with them).")


def test_device_loss_resolves_lost_and_a_reload_works(driver, wide, x):
    # the GPU process really crashes (DevTools Browser.crashGpuProcess); Chromium starts a new one
    reply = scenario(driver, wide, x, "device_lost")
    assert_correct(reply, wide, x)  # the model loaded again after the loss
    assert reply["lost"]["reason"] == "unknown" and reply["lost"]["message"]
    assert reply["afterLoss"] == f"kuma: the GPU device of model wide was lost (unknown: {reply['lost']['message']}); load() the model again."
