"""The local cache: a content-addressed blob store plus small JSON entries.

    <cache>/CACHEDIR.TAG               marks the folder as a cache Kuma made (bford.info/cachedir)
    <cache>/blobs/ab/<sha256>          file contents, named by their hash
    <cache>/models/<key>.json          {"model", "key", "files": {path: {"sha256", "size"}}}: one finished build
    <cache>/kernels/<key>.json         {"kernel": {"name", "code", "workgroups", "code_f16", "code_matrix"}, "sha256"}: one kernel,
                                       under the compiler's spec key salted with the compiler's version
    <cache>/last/<model>.json          the key fields of the model's last build (for `explain`)
    <cache>/hashes.json                file hashes memoised by (size, mtime, ctime, inode), so no-op builds skip rehashing
    <cache>/lock                       flock: one build at a time per cache

Every write goes to a temporary file first and is moved into place with
os.replace; an entry is written after its blobs. Everything is checked when
read: blobs by their hash, a model entry by cache/entry.py's checks of its
files, a kernel entry and the hash memo by a checksum over their content. A bad
one is discarded with a warning, and what it held is rebuilt.

Kuma writes into (and `kuma cache clear` empties) only a folder it tagged, or a
folder from before the tag that holds nothing but Kuma's own names.
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
from kuma_build.cache.entry import BadEntry, check_files, make_entry, parse_entry
from kuma_build.errors import KumaError

TAG = "CACHEDIR.TAG"
TAG_TEXT = ("Signature: 8a477f597d28d172789f06886806bc55\n"
            "# This file is a cache directory tag created by kuma build (https://bford.info/cachedir/).\n")
KUMA_NAMES = {"blobs", "models", "kernels", "last", "hashes.json", "lock", TAG}


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
        self.claimed = False

    def claim(self) -> None:
        """Make sure the cache folder is Kuma's (tag it when new); refuse any other folder."""
        if self.claimed or (self.root / TAG).is_file():
            self.claimed = True
            return
        # dot files are atomic_write's temporaries (of a build running now, or killed)
        names = {p.name for p in self.root.iterdir() if not p.name.startswith(".")} if self.root.is_dir() else set()
        if (self.root.exists() and not self.root.is_dir()) or (names and not ("lock" in names and names <= KUMA_NAMES)):
            raise KumaError(f"the cache folder {self.root} already exists and is not a Kuma cache (it has no {TAG}); "
                            "Kuma will not write into it or clear it. Set build.cache_dir in kuma.toml (or KUMA_CACHE_DIR) "
                            "to a folder of its own, e.g. \".kuma/cache\".", self.root)
        atomic_write(self.root / TAG, TAG_TEXT.encode())
        self.claimed = True

    def _write(self, path: Path, data: bytes) -> None:
        self.claim()
        atomic_write(path, data)

    def _discard(self, path: Path, why: str) -> None:
        self.problems.append(f"discarded cache entry {path}: {why}; rebuilding what it held")
        path.unlink(missing_ok=True)

    @contextmanager
    def lock(self):
        self.claim()
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
            self._write(self.blob_path(sha), data)
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
        """The entry, or None when missing or not a JSON object (then it is discarded)."""
        path = self.root / kind / f"{name}.json"
        try:
            value = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            value = None
        if not isinstance(value, dict):
            self._discard(path, "it is not a JSON object")
            return None
        return value

    def write_json(self, kind: str, name: str, value: dict) -> None:
        self._write(self.root / kind / f"{name}.json", json.dumps(value, sort_keys=True).encode())

    # --- kernels ----------------------------------------------------------------------
    def read_kernel(self, spec_key: str) -> dict | None:
        """A generated kernel {"name", "code", "workgroups", "code_f16", "code_matrix"}, checked, or None."""
        key = _kernel_name(spec_key)
        value = self.read_json("kernels", key)
        if value is None:
            return None
        kernel = value.get("kernel")
        if value.get("sha256") != _checksum(key, kernel) or not _is_kernel(kernel):
            self._discard(self.root / "kernels" / f"{key}.json", "its checksum or structure is wrong")
            return None
        return kernel

    def write_kernel(self, spec_key: str, kernel: dict) -> None:
        key = _kernel_name(spec_key)
        self.write_json("kernels", key, {"kernel": kernel, "sha256": _checksum(key, kernel)})

    # --- model outputs -----------------------------------------------------------------
    def get_model(self, key: str, model) -> dict[str, bytes] | None:
        """The files of a finished build of `model` (a ModelConfig), every one checked, or None."""
        entry = self.read_json("models", key)
        if entry is None:
            return None
        path = self.root / "models" / f"{key}.json"
        try:
            parse_entry(entry, model.name, key)
            files = {}
            for name, record in entry["files"].items():
                data = self.read_blob(record["sha256"])
                if data is None:
                    self._discard(path, f"the file it names for {name} is lost")
                    return None
                files[name] = data
            check_files(entry, files, model)
        except BadEntry as e:
            self._discard(path, f"it {e}")
            return None
        os.utime(path)  # recently used: prune keeps it
        return files

    def put_model(self, key: str, model: str, files: dict[str, bytes]) -> None:
        for data in files.values():
            self.put_blob(data)
        self.write_json("models", key, make_entry(model, key, files))  # last: the blobs it names exist

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
            model = str((self.read_json("models", path.stem) or {}).get("model", ""))
            seen[model] = seen.get(model, 0) + 1
            if seen[model] > keep_per_model and time.time() - path.stat().st_mtime > max_age_days * 86400:
                path.unlink()
                removed += 1
        referenced = set()
        for path in (self.root / "models").glob("*.json") if (self.root / "models").is_dir() else []:
            files = (self.read_json("models", path.stem) or {}).get("files")
            if isinstance(files, dict):
                referenced.update(record.get("sha256") for record in files.values() if isinstance(record, dict))
        freed = 0
        for blob in list((self.root / "blobs").rglob("*")) if (self.root / "blobs").is_dir() else []:
            if blob.is_file() and blob.name not in referenced:
                freed += blob.stat().st_size
                blob.unlink()
        return {"entries_removed": removed, "bytes_freed": freed}

    def clear(self) -> None:
        self.claim()  # only a folder that is Kuma's cache
        for kind in ("blobs", "models", "kernels", "last"):
            shutil.rmtree(self.root / kind, ignore_errors=True)
        (self.root / "hashes.json").unlink(missing_ok=True)


class FileHasher:
    """sha256 of a file, reusing the memoised hash of a file whose size, mtime, ctime and inode are
    unchanged. Any write through the file system changes the ctime (which no tool can set back), so
    only damage below it, such as bit rot on the disk, goes unseen. save() writes new hashes back."""

    def __init__(self, cache: LocalCache):
        self.cache = cache
        saved = cache.read_json("", "hashes") or {}
        memo = saved.get("files")
        if not isinstance(memo, dict) or saved.get("sha256") != _checksum("hashes", memo):
            if saved:
                cache._discard(cache.root / "hashes.json", "its checksum is wrong")
            memo = {}
        self.memo, self.dirty = memo, False

    def __call__(self, path: Path) -> str:
        stat = path.stat()
        stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]
        key = str(path.resolve())
        known = self.memo.get(key)
        if not isinstance(known, list) or known[:-1] != stamp:
            self.memo[key] = stamp + [sha256_file(path)]
            self.dirty = True
        return self.memo[key][-1]

    def save(self) -> None:
        if self.dirty:  # files that are gone (replaced output folders) leave the memo
            kept = {path: stamp for path, stamp in self.memo.items() if os.path.exists(path)}
            self.cache.write_json("", "hashes", {"files": kept, "sha256": _checksum("hashes", kept)})


def _kernel_name(spec_key: str) -> str:
    """A kernel's entry name: its spec key salted with the compiler's version (an edited generator
    must not reuse old code)."""
    return hashlib.sha256(f"{compiler_hash()}:{spec_key}".encode()).hexdigest()


def _checksum(key: str, value) -> str:
    return hashlib.sha256(json.dumps([key, value], sort_keys=True).encode()).hexdigest()


def _is_kernel(kernel) -> bool:
    return isinstance(kernel, dict) and isinstance(kernel.get("name"), str) and isinstance(kernel.get("code"), str) \
        and isinstance(kernel.get("workgroups"), list) and 1 <= len(kernel["workgroups"]) <= 3 \
        and all(map(_is_count, kernel["workgroups"])) and isinstance(kernel.get("code_f16"), (str, type(None))) \
        and isinstance(kernel.get("code_matrix"), (str, type(None))) \
        and isinstance(kernel.get("when"), (dict, type(None))) and (kernel.get("then") is None or _is_kernel(kernel["then"]))


def _is_count(n) -> bool:
    """A workgroup count: a number, or {"size", "per"} for a model with dims (ceil(size / per) at run time;
    size a number or terms [[coef, dim, ...], ...], docs/design.md)."""
    if isinstance(n, dict):
        size = n.get("size")
        terms = isinstance(size, list) and all(isinstance(t, list) and t and type(t[0]) is int and all(isinstance(d, str) for d in t[1:])
                                               for t in size)
        return set(n) == {"size", "per"} and (type(size) is int or terms) and type(n["per"]) is int and n["per"] > 0
    return type(n) is int and n >= 0
