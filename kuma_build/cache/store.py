"""The local cache: a content-addressed blob store plus small JSON entries.

    <cache>/blobs/ab/<sha256>          file contents, named by their hash
    <cache>/models/<key>.json          {"model", "files": {path: sha256}}: one finished build
    <cache>/kernels/<key>.json         {"name", "code", "workgroups", "code_f16"}: one generated kernel,
                                       under the compiler's spec key salted with the compiler's version
    <cache>/last/<model>.json          the key fields of the model's last build (for `explain`)
    <cache>/hashes.json                file hashes memoised by (size, mtime), so no-op builds skip rehashing
    <cache>/lock                       flock: one build at a time per cache

Every write goes to a temporary file first and is moved into place with
os.replace; an entry is written after its blobs. Blobs are hash-checked when
read: a bad one is discarded, reported, and the model is rebuilt.
"""

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from kuma_build.cache.keys import compiler_hash, sha256_file


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


class LocalCache:
    def __init__(self, root: Path):
        self.root = root
        self.problems: list[str] = []  # corrupt entries found and discarded, for the build report

    @contextmanager
    def lock(self):
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # --- blobs --------------------------------------------------------------------
    def blob_path(self, sha: str) -> Path:
        return self.root / "blobs" / sha[:2] / sha

    def put_blob(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        if not self.blob_path(sha).is_file():
            atomic_write(self.blob_path(sha), data)
        return sha

    def read_blob(self, sha: str) -> bytes | None:
        """The blob's bytes, or None if missing or corrupt (then it is deleted)."""
        path = self.blob_path(sha)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        if hashlib.sha256(data).hexdigest() != sha:
            self.problems.append(f"discarded corrupt cache blob {path}")
            path.unlink(missing_ok=True)
            return None
        return data

    # --- JSON entries ---------------------------------------------------------------
    def read_json(self, kind: str, name: str) -> dict | None:
        path = self.root / kind / f"{name}.json"
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            self.problems.append(f"discarded corrupt cache entry {path}")
            path.unlink(missing_ok=True)
            return None

    def write_json(self, kind: str, name: str, value: dict) -> None:
        atomic_write(self.root / kind / f"{name}.json", json.dumps(value, sort_keys=True).encode())

    # --- generated kernels ---------------------------------------------------------------
    def kernel_name(self, spec_key: str) -> str:
        # an edited generator must not reuse old code
        return hashlib.sha256(f"{compiler_hash()}:{spec_key}".encode()).hexdigest()

    def read_kernel(self, spec_key: str) -> dict | None:
        return self.read_json("kernels", self.kernel_name(spec_key))

    def write_kernel(self, spec_key: str, entry: dict) -> None:
        self.write_json("kernels", self.kernel_name(spec_key), entry)

    # --- model outputs -----------------------------------------------------------------
    def get_model(self, key: str) -> dict[str, bytes] | None:
        """The files of a finished build, every one hash-checked, or None."""
        entry = self.read_json("models", key)
        if entry is None:
            return None
        files = {}
        for path, sha in entry["files"].items():
            data = self.read_blob(sha)
            if data is None:
                self.problems.append(f"cache entry {key[:12]} for {entry.get('model')} lost {path}; rebuilding")
                (self.root / "models" / f"{key}.json").unlink(missing_ok=True)
                return None
            files[path] = data
        os.utime(self.root / "models" / f"{key}.json")  # recently used: prune keeps it
        return files

    def put_model(self, key: str, model: str, files: dict[str, bytes]) -> None:
        entry = {"model": model, "files": {path: self.put_blob(data) for path, data in files.items()}}
        self.write_json("models", key, entry)  # last: the blobs it names exist

    # --- memoised file hashes ---------------------------------------------------------
    def file_hasher(self) -> "FileHasher":
        return FileHasher(self)

    # --- maintenance --------------------------------------------------------------------
    def stats(self) -> dict:
        count = lambda kind: len(list((self.root / kind).glob("*.json"))) if (self.root / kind).is_dir() else 0
        blobs = list((self.root / "blobs").rglob("*")) if (self.root / "blobs").is_dir() else []
        blob_files = [b for b in blobs if b.is_file()]
        return {"path": str(self.root), "models": count("models"), "kernels": count("kernels"),
                "blobs": len(blob_files), "bytes": sum(b.stat().st_size for b in blob_files)}

    def prune(self, keep_per_model: int = 3, max_age_days: float = 30) -> dict:
        """Keep the newest entries of each model (and any used in max_age_days), then drop unreferenced blobs."""
        entries = sorted((self.root / "models").glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True) \
            if (self.root / "models").is_dir() else []
        seen: dict[str, int] = {}
        removed = 0
        for path in entries:
            model = (self.read_json("models", path.stem) or {}).get("model", "")
            seen[model] = seen.get(model, 0) + 1
            if seen[model] > keep_per_model and time.time() - path.stat().st_mtime > max_age_days * 86400:
                path.unlink()
                removed += 1
        referenced = set()
        for path in (self.root / "models").glob("*.json") if (self.root / "models").is_dir() else []:
            referenced.update((self.read_json("models", path.stem) or {}).get("files", {}).values())
        freed = 0
        for blob in list((self.root / "blobs").rglob("*")) if (self.root / "blobs").is_dir() else []:
            if blob.is_file() and blob.name not in referenced:
                freed += blob.stat().st_size
                blob.unlink()
        return {"entries_removed": removed, "bytes_freed": freed}

    def clear(self) -> None:
        for kind in ("blobs", "models", "kernels", "last"):
            shutil.rmtree(self.root / kind, ignore_errors=True)
        (self.root / "hashes.json").unlink(missing_ok=True)


class FileHasher:
    """sha256 of a file, reusing the memoised hash of a file whose size and mtime are unchanged;
    save() writes new hashes back to the cache."""

    def __init__(self, cache: LocalCache):
        self.cache = cache
        self.memo = cache.read_json("", "hashes") or {}
        self.dirty = False

    def __call__(self, path: Path) -> str:
        stat = path.stat()
        stamp = [stat.st_size, stat.st_mtime_ns]
        key = str(path.resolve())
        if self.memo.get(key, [None])[:2] != stamp:
            self.memo[key] = stamp + [sha256_file(path)]
            self.dirty = True
        return self.memo[key][2]

    def save(self) -> None:
        if self.dirty:
            self.cache.write_json("", "hashes", self.memo)
