"""What Kuma writes it checks, and it never deletes what it did not make, through the CLI's main():
damaged output files (a same-size bit flip, a truncated chunk) are caught by `kuma verify` and
restored by the next `kuma build`; edited or broken local cache entries (kernels, models) are
dropped with a warning and rebuilt; the user's folders survive any out_dir / cache_dir / model
name, and `kuma cache clear` touches only a folder tagged as Kuma's cache."""

import io
import json
import shutil
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from kuma_build.cli import main

MODEL = """from torch import nn

def build_model():
    return nn.Sequential(nn.Linear(24, 300), nn.ReLU(), nn.Linear(300, 7))
"""

TOML = """[build]
out_dir = "{out_dir}"
chunk_size = "4KiB"
{extra}
[models.{name}]
source = "models/net.py"
factory = "build_model"
[models.{name}.inputs]
x = {{ shape = [2, 24], dtype = "float32" }}
"""


def make_project(root: Path, out_dir="out", name="net", extra="") -> Path:
    (root / "models").mkdir(parents=True, exist_ok=True)
    (root / "models" / "net.py").write_text(MODEL)
    (root / "kuma.toml").write_text(TOML.format(out_dir=out_dir, name=name, extra=extra))
    return root


def kuma(root: Path, *args, code=0) -> str:
    """A `kuma` command through the CLI's main(), in this process; its stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, redirect_stdout(out), redirect_stderr(err):
        patch.delenv("KUMA_CACHE_DIR", raising=False)
        patch.chdir(root)
        result = main([*args, "--config", str(root / "kuma.toml")])
    assert result == code, out.getvalue() + err.getvalue()
    return out.getvalue() + err.getvalue()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def flip(path: Path, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("built"))
    kuma(root, "build")
    return root, snapshot(root / "out" / "net")


def chunk(root: Path) -> Path:
    return sorted((root / "out" / "net" / "weights").iterdir())[0]


@pytest.mark.parametrize("damage", [
    lambda root: flip(root / "out" / "net" / "index.js"),
    lambda root: flip(root / "out" / "net" / "index.d.ts"),
    lambda root: flip(root / "out" / "net" / "manifest.json", 0.9),
    lambda root: flip(chunk(root)),
    lambda root: chunk(root).write_bytes(chunk(root).read_bytes()[:100]),
], ids=["index.js", "index.d.ts", "manifest.json", "chunk bit flip", "chunk truncated"])
@pytest.mark.parametrize("force", [False, True], ids=["build", "build --force"])
def test_damaged_outputs_are_caught_and_restored(built, damage, force):
    root, reference = built
    damage(root)
    failed = kuma(root, "verify", code=1)
    assert "changed since kuma built it" in failed and "run `kuma build net` to restore" in failed
    out = kuma(root, "build", *(["--force"] if force else []))
    if not force:
        assert "[kuma] restored net from local cache" in out and "changed since kuma built it; restoring" in out
    assert snapshot(root / "out" / "net") == reference
    assert "[kuma] net is up to date" in kuma(root, "build")


def test_verify_passes_on_an_intact_folder(built):
    root, _ = built
    assert "ok" in kuma(root, "verify")


@pytest.mark.parametrize("breakage", ["edited", "truncated"])
def test_broken_kernel_entries_are_dropped_and_rebuilt(built, breakage):
    root, reference = built
    kernels = sorted((root / ".kuma" / "cache" / "kernels").glob("*.json"))
    for path in kernels:
        if breakage == "edited":  # still valid JSON: a changed constant in the WGSL
            entry = json.loads(path.read_text())
            entry["kernel"]["code"] = entry["kernel"]["code"].replace("0", "1", 1)
            path.write_text(json.dumps(entry))
        else:
            path.write_bytes(path.read_bytes()[:40])
    out = kuma(root, "build", "--force")
    assert out.count("[kuma] warning: discarded cache entry") == len(kernels)
    assert f"kernels {len(kernels)} compiled / 0 reused" in out
    assert snapshot(root / "out" / "net") == reference


def test_broken_model_entries_are_dropped_and_rebuilt(built):
    root, reference = built
    (entry,) = (root / ".kuma" / "cache" / "models").glob("*.json")
    good = json.loads(entry.read_text())
    for broken in [{k: v for k, v in good.items() if k != "files"}, {**good, "model": "other"}, [good]]:
        entry.write_text(json.dumps(broken))
        shutil.rmtree(root / "out" / "net")
        out = kuma(root, "build")
        assert f"[kuma] warning: discarded cache entry {entry}" in out and "[kuma] built net" in out
        assert snapshot(root / "out" / "net") == reference


def test_a_folder_from_before_the_record_is_still_ours(built):
    root, reference = built
    (root / "out" / "net" / ".kuma-output.json").unlink()  # as an older kuma left it
    assert "[kuma] restored net from local cache" in kuma(root, "build")
    assert snapshot(root / "out" / "net") == reference


def test_user_folder_named_like_a_model_is_never_replaced(tmp_path):
    root = make_project(tmp_path, out_dir="src", name="classifier")
    user = {"Classifier.jsx": b"export default function Classifier() {}\n", "style.css": b".a { color: red }\n"}
    (root / "src" / "classifier").mkdir(parents=True)
    for name, data in user.items():
        (root / "src" / "classifier" / name).write_bytes(data)
    out = kuma(root, "build", code=1)
    assert f"{root / 'src' / 'classifier'} already exists and was not made by kuma build" in out and "Move it away" in out
    assert snapshot(root / "src" / "classifier") == user


@pytest.mark.parametrize("setting, line, problem", [
    ('out_dir = "."', 2, "build.out_dir ({root}) is the project folder"),
    ('out_dir = ".."', 2, "build.out_dir ({parent}) is above the project folder"),
    ('out_dir = "models"', 2, "build.out_dir ({root}/models) holds net.py, an input of a model"),
    ('out_dir = "out"\ncache_dir = "."', 3, "build.cache_dir ({root}) is the project folder"),
    ('out_dir = "out"\ncache_dir = "models"', 3, "build.cache_dir ({root}/models) holds net.py, an input of a model"),
    ('out_dir = "out"\ncache_dir = "out/cache"', 2, "build.out_dir ({root}/out) and the cache folder ({root}/out/cache) overlap"),
])
def test_folders_kuma_would_replace_must_be_its_own(tmp_path, setting, line, problem):
    root = make_project(tmp_path / "project")
    (root / "kuma.toml").write_text((root / "kuma.toml").read_text().replace('out_dir = "out"', setting))
    before = snapshot(tmp_path)
    for command in (["build"], ["cache", "clear"]):
        out = kuma(root, *command, code=1)
        assert f"kuma.toml:{line}: " + problem.format(root=root, parent=tmp_path) in out
    assert snapshot(tmp_path) == before


def test_cache_clear_touches_only_a_kuma_cache(tmp_path):
    root = make_project(tmp_path / "project", extra='cache_dir = "../shared"\n')
    shared = tmp_path / "shared"
    (shared / "models").mkdir(parents=True)
    (shared / "models" / "keep.txt").write_text("the user's")
    out = kuma(root, "cache", "clear", code=1)
    assert f"the cache folder {shared} already exists and is not a Kuma cache" in out
    assert (shared / "models" / "keep.txt").read_text() == "the user's"
    assert "is not a Kuma cache" in kuma(root, "build", code=1)

    shutil.rmtree(shared)
    kuma(root, "build")
    assert (shared / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f597d28d172789f06886806bc55")
    (shared / "CACHEDIR.TAG").unlink()  # a cache from before the tag: only Kuma's names in it
    assert "[kuma] cleared" in kuma(root, "cache", "clear")
    assert (shared / "CACHEDIR.TAG").is_file() and not (shared / "models").exists()
