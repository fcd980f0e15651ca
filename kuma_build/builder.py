"""Cached builds: each model is up to date, restored from a cache, or compiled.

    fields -> key     kuma_build/cache/keys.py, no torch import
    up to date        the output folder's manifest carries the key and every file has its recorded hash
    restored          the local cache (or the remote one) has the key's files, and they pass every check
    compiled          torch.export and the compiler run; the files go to the caches

An output folder that is not Kuma's is an error before any work (outfolder.check_owned).

torch is imported only when something must be compiled, so a no-op build is
fast. After each model, kuma.toml's `types` file (kuma-env.d.ts) is brought up to date. Builds sharing a cache directory take turns through a file lock.
"""

import time
from dataclasses import dataclass, field
from pathlib import Path

from kuma_build.cache.keys import changed_fields, model_fields, model_key
from kuma_build.cache.store import LocalCache
from kuma_build.jsmodule import render_env_dts
from kuma_build.outfolder import RECORD, check_owned, damaged_files, is_current, read_manifest, write_output


@dataclass
class BuildResult:
    model: str
    status: str  # "up to date" | "restored" | "built"
    folder: Path
    seconds: float
    origin: str = ""  # where a restored build came from: "local cache" | "remote cache"
    stats: dict = field(default_factory=dict)  # the compiler's, for built and restored models
    kernels_compiled: int = 0
    kernels_reused: int = 0
    chunks_written: int = 0
    chunks_kept: int = 0
    changed: list[str] = field(default_factory=list)  # files of the output folder that changed
    problems: list[str] = field(default_factory=list)  # cache trouble worth a warning


class Builder:
    def __init__(self, project, force: bool = False, remote_read_only: bool = False):
        self.project, self.force = project, force
        self.cache = LocalCache(project.cache_dir)
        self.remote = None
        if project.remote:
            from kuma_build.cache.remote import RemoteCache
            self.remote = RemoteCache(project.remote, read_only=remote_read_only)

    def key_fields(self, name: str, hasher=None) -> dict:
        own = hasher is None
        hasher = hasher or self.cache.file_hasher()
        fields = model_fields(self.project, self.project.models[name], hasher)
        if own:
            hasher.save()
        return fields

    def explain(self, name: str) -> tuple[list[str] | None, dict]:
        """The key fields that changed since the model's last build (None if it was never built)."""
        fields = self.key_fields(name)
        last = self.cache.read_json("last", name)
        return (None if last is None else changed_fields(last, fields)), fields

    def build(self, name: str) -> BuildResult:
        started = time.perf_counter()
        folder = self.project.out_dir / name
        check_owned(folder)
        with self.cache.lock():
            hasher = self.cache.file_hasher()
            fields = self.key_fields(name, hasher)
            key = model_key(fields)
            current = is_current(folder, key, hasher)
            hasher.save()
            if not self.force and current:
                self.cache.write_json("last", name, fields)
                return BuildResult(name, "up to date", folder, time.perf_counter() - started, stats=read_manifest(folder)["stats"])
            result = BuildResult(name, "restored", folder, 0.0)
            damaged = [] if current else damaged_files(folder, hasher)
            if damaged:
                result.problems.append(f"{folder}: {', '.join(damaged)} changed since kuma built it; restoring the folder")
            files = None if self.force else self._restore(key, result)
            if files is None:
                files = self._compile(name, key, result)
                if model_key(self.key_fields(name)) == key:  # not edited while compiling
                    self._store(name, key, files)
            self._write(folder, files, result)
            self.cache.write_json("last", name, fields)
        write_types(self.project)
        for source in [self.cache.problems] + ([self.remote.problems] if self.remote else []):
            result.problems += source  # each problem is reported once, with the build that met it
            source.clear()
        result.seconds = time.perf_counter() - started
        return result

    def _restore(self, key: str, result: BuildResult) -> dict[str, bytes] | None:
        model = self.project.models[result.model]
        files = self.cache.get_model(key, model)
        result.origin = "local cache"
        if files is None and self.remote:
            files = self.remote.get_model(key, model, self.cache)
            result.origin = "remote cache"
        return files

    def _compile(self, name: str, key: str, result: BuildResult) -> dict[str, bytes]:
        from kuma_build.compiler import compile_model  # imports torch: only when a build must compile

        compiled = compile_model(self.project, self.project.models[name], kernel_store=self.cache, key=key)
        files = compiled.files()
        result.status, result.origin, result.stats = "built", "", compiled.stats
        result.kernels_reused = compiled.stats["kernels_reused"]
        result.kernels_compiled = compiled.stats["kernels_total"] - result.kernels_reused
        return files

    def _store(self, name: str, key: str, files: dict[str, bytes]) -> None:
        self.cache.put_model(key, name, files)
        if self.remote:
            self.remote.put_model(key, self.cache)

    def _write(self, folder: Path, files: dict[str, bytes], result: BuildResult) -> None:
        old = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()} if folder.is_dir() else {}
        same = lambda path, data: path in old and old[path].stat().st_size == len(data) and old[path].read_bytes() == data
        result.changed = sorted(path for path, data in files.items() if not same(path, data))
        chunks = [path for path in files if path.startswith("weights/")]
        result.chunks_written = sum(1 for path in chunks if path in result.changed)
        result.chunks_kept = len(chunks) - result.chunks_written
        if result.changed or set(old) != set(files) | {RECORD}:
            write_output(folder, files)
        if not result.stats:
            result.stats = read_manifest(folder)["stats"]


def write_types(project) -> bool:
    """Rewrite kuma.toml's `types` file (kuma-env.d.ts) from the built models' index.d.ts; whether it changed."""
    if project.types is None:
        return False
    built = {}
    for name in project.models:
        try:
            built[name] = (project.out_dir / name / "index.d.ts").read_text()
        except FileNotFoundError:
            pass  # not built yet: the generic `kuma:*` types apply
    text = render_env_dts(built)
    try:
        if project.types.read_text() == text:
            return False  # unchanged: leave the file alone, so bundlers' watchers stay quiet
    except FileNotFoundError:
        pass
    project.types.parent.mkdir(parents=True, exist_ok=True)
    project.types.write_text(text)
    return True
