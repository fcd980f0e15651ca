"""A model's output folder: written all at once, read back without importing torch.

write_output stages the files in a temporary sibling folder and swaps it in
only when complete, so a failed or interrupted build never leaves a
half-written model, and a web server never sees a mix of two builds.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

PROGRAM_START, PROGRAM_END = "/*kuma:program*/", "/*kuma:end*/"


def write_output(folder: Path, files: dict[str, bytes]) -> None:
    """Replace `folder` with exactly `files` (relative path -> bytes)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    os.chmod(staging, 0o755)  # mkdtemp makes it private; web servers must read it
    try:
        for path, data in files.items():
            (staging / path).parent.mkdir(parents=True, exist_ok=True)
            (staging / path).write_bytes(data)
        old = None
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            os.replace(folder, old)
        os.replace(staging, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def is_current(folder: Path, key: str) -> bool:
    """Whether `folder` holds a complete build with this cache key."""
    manifest = read_manifest(folder)
    if not manifest or manifest.get("key") != key:
        return False
    files = [(folder / c["file"], c["size"]) for c in manifest["chunks"]]
    return all(p.is_file() and p.stat().st_size == size for p, size in files) and \
        (folder / "index.js").is_file() and (folder / "index.d.ts").is_file()


def read_program(folder: Path) -> dict:
    """The program embedded in an emitted index.js (what the browser runs)."""
    text = (folder / "index.js").read_text()
    start = text.index(PROGRAM_START) + len(PROGRAM_START)
    return json.loads(text[start:text.index(PROGRAM_END, start)])
