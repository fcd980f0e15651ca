"""`kuma watch`: rebuild the models whose files change, in one process that keeps torch imported.

A watchdog observer watches the folders holding kuma.toml and each model's source, project-local
imports and weights (editors save by writing a new file and renaming it over the old one, so
folders are watched, not files) and records changes to those files only. A folder deleted, moved
away or recreated (`rm -rf models && cp -r backup models`) is seen from its parent folder, which is
watched too: its files count as changed, and the folder is watched afresh (a watch follows the
folder it was made for, which is gone) before the build reads them. One builder thread waits
for a quiet period, so an editor's burst of writes makes one build, then builds the models the
changed files affect; changes made during a build queue exactly one rerun. A failed build is
reported and leaves the last good output in place (output folders are swapped in whole).

Run by a tool (--json, as a bundler's dev server starts it, stdin a pipe from the server), it stops
when its parent goes away however that happens, a kill -9 included: at the end of stdin (the pipe
closes with the parent process) and when its parent process id changes (re-parented to init or a
subreaper).
"""

import json
import linecache
import os
import signal
import stat
import sys
import threading
import time
from pathlib import Path

from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer

from kuma_build import log
from kuma_build.builder import Builder
from kuma_build.cache.keys import model_inputs
from kuma_build.config import load_project
from kuma_build.errors import KumaError

QUIET_SECONDS = 0.1  # gathers an editor's save burst into one build
STOP_GRACE_SECONDS = 2.0  # how long a stop waits for a build in flight
WRITE_EVENTS = {"created", "modified", "moved", "deleted", "closed"}  # not "opened": builds read the files


def watch(config: Path, as_json: bool) -> int:
    return Watcher(config, as_json).run()


class Watcher(FileSystemEventHandler):
    def __init__(self, config: Path, as_json: bool):
        self.config, self.as_json = config.resolve(), as_json
        self.project = self.builder = None
        self.files: dict[Path, set[str]] = {}  # watched file -> the models it affects
        self.failed: set[str] = set()  # models whose last build failed keep their previous files watched
        self.folders = {}  # watched folder -> (watchdog's watch, the folder's (device, inode))
        self.observer = Observer()
        self.wake = threading.Condition()  # guards files, changes, replaced, last_change, stopping
        self.changes: set[Path] = set()
        self.replaced: set[Path] = set()  # folders deleted, moved or created since the last resync_folders
        self.last_change = 0.0
        self.stopping = self.stop_requested = False

    def run(self) -> int:
        parent = os.getppid()  # first: the parent could die while the rest starts
        sys.dont_write_bytecode = True  # .pyc files go stale on two same-size saves within a second
        try:
            self.project = load_project(self.config)
        except KumaError:
            pass  # the initial build reports it; meanwhile kuma.toml is watched
        self.update_watch()
        self.observer.start()
        handlers = {sig: signal.signal(sig, self.request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        builder = threading.Thread(target=self.build_loop, name="kuma-builder", daemon=True)
        builder.start()
        if self.as_json and stat.S_ISFIFO(os.fstat(sys.stdin.fileno()).st_mode):
            threading.Thread(target=self.stop_at_end_of_stdin, name="kuma-stdin", daemon=True).start()
        try:
            # --json: a tool's child, which must not outlive it (a person may run it with nohup)
            while not self.stop_requested and (not self.as_json or os.getppid() == parent):
                time.sleep(0.1)  # signal handlers run on this thread between sleeps
        finally:
            self.observer.stop()
            self.observer.join()
            with self.wake:
                self.stopping = True
                self.wake.notify()
            builder.join(STOP_GRACE_SECONDS)
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        return 0

    def request_stop(self, *_):
        self.stop_requested = True  # only a flag: taking a lock in a signal handler can deadlock

    def stop_at_end_of_stdin(self):
        """The dev server holds our stdin's write end and never writes: its end means the server is gone."""
        while sys.stdin.buffer.read(4096):
            pass
        self.request_stop()

    # --- observer thread -------------------------------------------------------------
    def on_any_event(self, event):
        if event.event_type not in WRITE_EVENTS or (event.is_directory and event.event_type in ("modified", "closed")):
            return
        paths = {Path(os.fsdecode(p)) for p in (event.src_path, getattr(event, "dest_path", "")) if p}
        with self.wake:
            if event.is_directory:  # the files in or under a replaced folder changed
                self.replaced |= paths
                hits = {f for f in self.files if any(p in f.parents for p in paths)}
            else:
                hits = {p for p in paths if p in self.files}
            if hits:
                self.changes |= hits
                self.last_change = time.monotonic()
                self.wake.notify()

    # --- builder thread --------------------------------------------------------------
    def build_loop(self):
        changes = None  # the initial build
        try:
            while True:
                self.build(changes)
                with self.wake:
                    while not self.stopping and (not self.changes or time.monotonic() < self.last_change + QUIET_SECONDS):
                        self.wake.wait(self.last_change + QUIET_SECONDS - time.monotonic() if self.changes else None)
                    if self.stopping:
                        return
                    changes, self.changes = self.changes, set()
        except BrokenPipeError:  # whoever read our output is gone: stop
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            self.stop_requested = True

    def build(self, changes: set[Path] | None):
        started = time.perf_counter()
        names = sorted(self.relative(p) for p in changes or ())
        self.emit({"event": "build-start", "changes": names},
                  f"build started (change: {', '.join(json.dumps(n) for n in names)})" if names else "build started (initial build)")
        models = []
        self.resync_folders()  # before the build reads the files: writes from now on are seen
        ok = self.guarded(lambda: models.extend(self.affected_models(changes)))
        for name in models:
            if self.guarded(lambda: log.report(self.builder.build(name), self.as_json)):
                self.failed.discard(name)
            else:
                ok = False
                self.failed.add(name)
        ok = self.guarded(self.update_watch) and ok
        ms = round((time.perf_counter() - started) * 1000)
        self.emit({"event": "build-end", "ok": ok, "ms": ms},
                  f"build done in {ms} ms" if ok else f"build failed in {ms} ms; the last good output is kept")

    def affected_models(self, changes: set[Path] | None) -> list[str]:
        reload = changes is None or self.config in changes
        if reload:
            self.project = load_project(self.config)
            self.builder = Builder(self.project)
        self.forget_local_modules()
        if reload:
            return list(self.project.models)
        return [name for name in self.project.models if any(name in self.files.get(p, ()) for p in changes)]

    def guarded(self, step) -> bool:
        """Run one step of a build; report what it raises (the watcher must outlive any failure)."""
        try:
            step()
            return True
        except KumaError as e:
            log.error(e, self.as_json)
        except BrokenPipeError:
            raise
        except KeyboardInterrupt as e:  # raised by a model's code: Ctrl-C reaches request_stop, not here
            log.error(KumaError("the model raised KeyboardInterrupt; the watcher goes on.", *getattr(e, "kuma_where", (None, None))), self.as_json)
        except OSError as e:  # a watched file deleted or unreadable
            log.error(KumaError(f"{e.strerror or e}.", e.filename), self.as_json)
        except Exception as e:  # a compiler bug
            log.internal_error(e, self.as_json)
        return False

    def forget_local_modules(self):
        """Drop the project's own modules from sys.modules, so edits to them are imported afresh."""
        linecache.checkcache()  # error messages quote the user's current source lines
        names = {p.name for p in self.files}
        for module_name, module in list(sys.modules.items()):
            file = getattr(module, "__file__", None)
            if file and os.path.basename(file) in names and Path(file).resolve() in self.files:
                del sys.modules[module_name]

    def update_watch(self):
        """Recompute the watched files (kuma.toml or imports may have changed) and their folders."""
        files = {self.config: set()}  # kuma.toml reloads the project and builds every model
        for name, model in (self.project.models.items() if self.project else ()):
            paths = model_inputs(self.project, model)
            paths += [p for p, models in self.files.items() if name in models and name in self.failed]
            for path in paths:
                files.setdefault(path, set()).add(name)
        changed = files.keys() != self.files.keys()
        with self.wake:
            self.files = files
        self.resync_folders()
        if changed:
            names = sorted(self.relative(p) for p in files)
            self.emit({"event": "watching", "files": names},
                      f"watching kuma.toml and {len(names) - 1} file{'s' * (len(names) != 2)} (Ctrl-C to stop)")

    def resync_folders(self):
        """Watch the folder of each watched file (or, while it is missing, its nearest existing ancestor)
        and the folder's parent, where its deletion and recreation show; drop watches of replaced folders."""
        with self.wake:
            replaced, self.replaced = self.replaced, set()
            folders = {p.parent for p in self.files}
        root = self.config.parent
        wanted = set()
        for folder in folders:
            existing = next(f for f in (folder, *folder.parents) if f.is_dir())
            wanted.add(existing)
            if existing == folder and root in folder.parents:
                wanted.add(folder.parent)
        for folder, (watch, inode) in list(self.folders.items()):
            gone = folder not in wanted or _inode(folder) != inode or any(p == folder or p in folder.parents for p in replaced)
            if gone:
                del self.folders[folder]
                try:
                    self.observer.unschedule(watch)
                except KeyError:  # its emitter already ended with the folder
                    pass
        for folder in wanted - set(self.folders):
            try:
                self.folders[folder] = (self.observer.schedule(self, str(folder), recursive=False), _inode(folder))
            except OSError:  # deleted again just now: its parent's event brings us back here
                pass

    # --- output ----------------------------------------------------------------------
    def emit(self, event: dict, line: str | None):
        log.event(event, line, self.as_json)

    def relative(self, path: Path) -> str:
        return Path(os.path.relpath(path, self.config.parent)).as_posix()


def _inode(folder: Path) -> tuple | None:
    try:
        stat = folder.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino
