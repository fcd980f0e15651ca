"""The shared remote cache against a real nginx (WebDAV PUT), through the real CLI: a fresh
checkout restores from it without importing torch; read-only builds never upload; a server
that is down, silent, corrupt or refuses us costs one warning and a local build, never a failure;
an evicted file is a plain miss."""

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from nginx_fixture import free_port, nginx  # noqa: F401  (nginx is a fixture)

MODEL = """
from torch import nn

def build_model():
    return nn.Sequential(nn.Linear(20, 33), nn.ReLU(), nn.Linear(33, 5))
"""

TOML = """
[build]
out_dir = "out"

[cache]
{cache}

[models.mlp]
source = "models/mlp.py"
factory = "build_model"
[models.mlp.inputs]
x = {{ shape = [3, 20], dtype = "float32" }}
"""


def project(tmp_path: Path, name: str, cache: str) -> Path:
    """A fresh checkout with its own empty local cache."""
    root = tmp_path / name
    (root / "models").mkdir(parents=True)
    (root / "models" / "mlp.py").write_text(MODEL)
    (root / "kuma.toml").write_text(TOML.format(cache=cache))
    return root


def kuma(root: Path, *args, no_torch=False, env=None) -> tuple[str, str]:
    env = {**os.environ, "KUMA_CACHE_DIR": str(root / "cache"), "no_proxy": "127.0.0.1", **(env or {})}
    if no_torch:  # a fake torch that fails to import: proves the build never imports it
        fake = root.parent / "no-torch"
        (fake / "torch").mkdir(parents=True, exist_ok=True)
        (fake / "torch" / "__init__.py").write_text("raise ImportError('torch must not be imported here')\n")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(fake), env.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, "-m", "kuma_build", "build", *args], cwd=root,
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout, result.stderr


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("[kuma] warning")]


def sha256s(entry: dict) -> list[str]:
    return [record["sha256"] for record in entry["files"].values()]


def remote_entry(store: Path) -> tuple[Path, dict]:
    (entry,) = (store / "ac").iterdir()
    return entry, json.loads(entry.read_text())


def test_fresh_checkout_restores_from_remote_without_torch(nginx, tmp_path):
    cache = f'remote = "{nginx.url}/kuma"'
    a = project(tmp_path, "a", cache)
    assert "[kuma] built mlp" in kuma(a)[0]
    entry, files = remote_entry(nginx.root / "kuma")
    assert all((nginx.root / "kuma" / "cas" / sha).is_file() for sha in sha256s(files))

    # a blob the server evicted is a miss, not a problem: the rebuild uploads that blob (the others
    # answer HEAD) and the entry again
    evicted = nginx.root / "kuma" / "cas" / files["files"]["index.js"]["sha256"]
    evicted.unlink()
    seen = len(nginx.requests())
    out, err = kuma(project(tmp_path, "c", cache))
    assert "[kuma] built mlp" in out and not warnings(err)
    puts = [path for method, path, _ in nginx.requests()[seen:] if method == "PUT"]
    assert puts == [f"/kuma/cas/{evicted.name}", f"/kuma/ac/{entry.name}"] and evicted.is_file()

    b = project(tmp_path, "b", cache)
    assert "[kuma] restored mlp from remote cache" in kuma(b, no_torch=True)[0]
    assert snapshot(b / "out") == snapshot(a / "out")

    # the download went into b's local cache: the next restore asks the server nothing
    seen = len(nginx.requests())
    (b / "out" / "mlp" / "index.js").unlink()
    assert "[kuma] restored mlp from local cache" in kuma(b, no_torch=True)[0]
    assert len(nginx.requests()) == seen


@pytest.mark.parametrize("setting, flags", [("remote_write = false", ()), ("", ("--remote-read-only",))],
                         ids=["remote_write-false", "remote-read-only"])
def test_read_only_builds_never_upload(nginx, tmp_path, setting, flags):
    a = project(tmp_path, "a", f'remote = "{nginx.url}/kuma"\n{setting}')
    out, err = kuma(a, *flags)
    assert "[kuma] built mlp" in out and not warnings(err)
    assert [(method, status) for method, _, status in nginx.requests()] == [("GET", 404)]  # one miss, no PUT
    assert not list(nginx.root.iterdir())


@pytest.fixture
def silent_server():
    """Accepts connections (the kernel's backlog does) but never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


@pytest.mark.parametrize("server, problem", [("closed", "unreachable (connection refused)"),
                                             ("silent", "timed out after 0.5 s")])
def test_unusable_server_warns_once_and_builds_locally(request, tmp_path, server, problem):
    port = free_port() if server == "closed" else request.getfixturevalue("silent_server")
    a = project(tmp_path, "a", f'remote = "http://127.0.0.1:{port}/kuma"\nremote_timeout = 0.5')
    out, err = kuma(a)
    assert "[kuma] built mlp" in out
    assert err.splitlines() == [f"[kuma] warning: remote cache http://127.0.0.1:{port}/kuma {problem}; building locally"]


def test_corrupt_answers_are_rejected_and_built_locally(nginx, tmp_path):
    cache = f'remote = "{nginx.url}/kuma"'
    a = project(tmp_path, "a", cache)
    kuma(a)
    entry, files = remote_entry(nginx.root / "kuma")
    (nginx.root / "kuma" / "cas" / files["files"]["index.js"]["sha256"]).write_bytes(b"alert('not what was hashed')")

    b = project(tmp_path, "b", cache)
    out, err = kuma(b)
    assert "[kuma] built mlp" in out
    assert len(warnings(err)) == 1 and "sent a corrupt blob" in err
    assert snapshot(b / "out") == snapshot(a / "out")
    blobs = [p for p in (b / "cache" / "blobs").rglob("*") if p.is_file()]
    assert blobs and all(hashlib.sha256(p.read_bytes()).hexdigest() == p.name for p in blobs)

    entry.write_bytes(b"{not json")
    c = project(tmp_path, "c", cache)
    out, err = kuma(c)
    assert "[kuma] built mlp" in out
    assert len(warnings(err)) == 1 and "sent an entry for ac/" in err and "that Kuma rejects: it is not JSON" in err
    assert snapshot(c / "out") == snapshot(a / "out")


def test_auth_header_comes_from_the_named_variable(nginx, tmp_path, monkeypatch):
    monkeypatch.delenv("KUMA_TEST_TOKEN", raising=False)
    cache = f'remote = "{nginx.url}/secure/kuma"\nremote_auth_env = "KUMA_TEST_TOKEN"'
    token = {"KUMA_TEST_TOKEN": "Bearer s3cret"}
    a = project(tmp_path, "a", cache)
    out, err = kuma(a, env=token)
    assert "[kuma] built mlp" in out and not warnings(err)
    remote_entry(nginx.root / "secure" / "kuma")
    b = project(tmp_path, "b", cache)
    assert "[kuma] restored mlp from remote cache" in kuma(b, env=token)[0]

    c = project(tmp_path, "c", cache)
    out, err = kuma(c)
    assert "[kuma] built mlp" in out
    assert warnings(err) == [f"[kuma] warning: remote cache {nginx.url}/secure/kuma answered HTTP 401 Unauthorized to GET "
                             f"ac/{remote_entry(nginx.root / 'secure' / 'kuma')[0].name[:12]} (the token variable "
                             "KUMA_TEST_TOKEN is not set); building locally"]
    assert snapshot(c / "out") == snapshot(a / "out")
