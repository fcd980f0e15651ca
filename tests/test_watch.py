"""`kuma watch --json` in a real subprocess on a two-model project: edits rebuild only the models they
affect, save bursts make one build, a save during a build queues one rerun, a broken file keeps the
last good output, a watched folder deleted or moved away and recreated is watched again,
SIGTERM/SIGINT exit cleanly, and a killed parent stops it. Every wait has a deadline; the process is
always killed."""

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

TOML = """
[build]
out_dir = "out"

[models.mlp]
source = "models/mlp.py"
factory = "build_model"
[models.mlp.inputs]
x = { shape = [3, 20], dtype = "float32" }

[models.head]
source = "models/head.py"
factory = "build_model"
[models.head.inputs]
x = { shape = [2, 8], dtype = "float32" }
"""

HEAD = """
from torch import nn
from layers import width

def build_model():
    return nn.Sequential(nn.Linear(8, width), nn.ReLU(), nn.Linear(width, 3))
"""

TIMEOUT = 30  # seconds any one awaited event may take (the first build imports torch)


def mlp_source(width: int, sleep: float = 0.0) -> str:
    return (f"import time\nfrom torch import nn\ntime.sleep({sleep})\n\n"
            f"def build_model():\n    return nn.Sequential(nn.Linear(20, {width}), nn.ReLU(), nn.Linear({width}, 5))\n")


def mlp_weight_bytes(width: int) -> int:
    return 4 * (20 * width + width + width * 5 + 5)


class Watch:
    """The watcher process and its JSON events, read by a thread so no wait can hang."""

    def __init__(self, root: Path):
        self.root, self.events = root, queue.Queue()
        self.stderr = open(root.parent / "stderr.txt", "w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "kuma_build", "watch", "--json"], cwd=root,
                                     stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def next(self, timeout: float = TIMEOUT) -> dict:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            self.stderr.seek(0)
            raise AssertionError(f"no event within {timeout} s; stderr:\n{self.stderr.read()}") from None

    def build(self) -> tuple[dict, list[dict], dict]:
        """The next build: its build-start, the events in between, its build-end."""
        start = self.next()
        assert start["event"] == "build-start", start
        events = []
        while (event := self.next())["event"] != "build-end":
            events.append(event)
        return start, events, event

    def assert_quiet(self, seconds: float = 1.0):
        with pytest.raises(queue.Empty):
            extra = self.events.get(timeout=seconds)
            pytest.fail(f"unexpected event {extra}")

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.stderr.close()


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "project"
    (root / "models").mkdir(parents=True)
    (root / "kuma.toml").write_text(TOML)
    (root / "models" / "mlp.py").write_text(mlp_source(33))
    (root / "models" / "head.py").write_text(HEAD)
    (root / "models" / "layers.py").write_text("width = 6\n")
    return root


@pytest.fixture
def watcher(project):
    watch = Watch(project)
    try:
        assert watch.next() == {"event": "watching", "files": ["kuma.toml", "models/head.py", "models/layers.py", "models/mlp.py"]}
        start, events, end = watch.build()
        assert start["changes"] == [] and end["ok"], events
        assert sorted(e["model"] for e in events if e["event"] == "built") == ["head", "mlp"]
        yield watch
    finally:
        watch.close()


def built(events: list[dict]) -> dict[str, dict]:
    assert all(e["event"] == "built" for e in events), events
    return {e["model"]: e for e in events}


def test_edit_rebuilds_only_the_affected_model(watcher, project):
    manifest = (project / "out" / "mlp" / "manifest.json").read_bytes()
    (project / "models" / "mlp.py").write_text(mlp_source(40))
    start, events, end = watcher.build()
    assert start["changes"] == ["models/mlp.py"] and end["ok"]
    assert list(built(events)) == ["mlp"]
    assert built(events)["mlp"]["status"] == "built" and "manifest.json" in built(events)["mlp"]["changed"]
    assert built(events)["mlp"]["stats"]["weight_bytes"] == mlp_weight_bytes(40)
    assert (project / "out" / "mlp" / "manifest.json").read_bytes() != manifest


def test_imports_and_kuma_toml_are_watched(watcher, project):
    (project / "models" / "layers.py").write_text("width = 7\n")
    start, events, end = watcher.build()
    assert start["changes"] == ["models/layers.py"] and end["ok"]
    assert list(built(events)) == ["head"] and built(events)["head"]["status"] == "built"
    # the edited module was imported afresh, not taken from sys.modules
    assert built(events)["head"]["stats"]["weight_bytes"] == 4 * (8 * 7 + 7 + 7 * 3 + 3)

    (project / "kuma.toml").write_text(TOML + "# a comment\n")
    start, events, end = watcher.build()
    assert start["changes"] == ["kuma.toml"] and end["ok"]
    assert sorted(built(events)) == ["head", "mlp"]


def test_save_burst_makes_one_build(watcher, project):
    for width in range(40, 45):
        (project / "models" / "mlp.py").write_text(mlp_source(width))
        time.sleep(0.01)
    start, events, end = watcher.build()
    assert start["changes"] == ["models/mlp.py"] and end["ok"]
    assert built(events)["mlp"]["stats"]["weight_bytes"] == mlp_weight_bytes(44)
    watcher.assert_quiet()


def test_saves_during_a_build_queue_one_rerun(watcher, project):
    (project / "models" / "mlp.py").write_text(mlp_source(50, sleep=1.5))  # the build sleeps while importing it
    assert watcher.next()["event"] == "build-start"
    time.sleep(0.3)
    (project / "models" / "mlp.py").write_text(mlp_source(51, sleep=1.5))
    time.sleep(0.2)
    (project / "models" / "mlp.py").write_text(mlp_source(52, sleep=1.5))
    while (event := watcher.next())["event"] != "build-end":
        assert event["event"] == "built", event
    start, events, end = watcher.build()
    assert start["changes"] == ["models/mlp.py"] and end["ok"]
    assert built(events)["mlp"]["stats"]["weight_bytes"] == mlp_weight_bytes(52)
    watcher.assert_quiet()


def test_broken_or_missing_file_keeps_the_last_good_output(watcher, project):
    folder = project / "out" / "mlp"
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    (project / "models" / "mlp.py").write_text("from torch import nn\n\ndef build_model(:\n    pass\n")
    start, events, end = watcher.build()
    assert start["changes"] == ["models/mlp.py"] and not end["ok"]
    [error] = events
    assert error["event"] == "error" and error["file"].endswith("models/mlp.py") and error["line"] == 3, error
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before

    (project / "models" / "mlp.py").unlink()  # a missing file is an error too, not the watcher's end
    start, events, end = watcher.build()
    assert not end["ok"] and [(e["event"], e["file"].endswith("models/mlp.py")) for e in events] == [("error", True)]
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before

    (project / "models" / "mlp.py").write_text(mlp_source(45))
    start, events, end = watcher.build()
    assert end["ok"] and built(events)["mlp"]["stats"]["weight_bytes"] == mlp_weight_bytes(45)

    # a model that exits or raises KeyboardInterrupt is an error at its line, not the watcher's end
    for line in ("import sys; sys.exit(3)", "raise KeyboardInterrupt"):
        (project / "models" / "mlp.py").write_text(f"from torch import nn\n\ndef build_model():\n    {line}\n")
        start, events, end = watcher.build()
        [error] = events
        assert not end["ok"] and error["event"] == "error" and error["file"].endswith("models/mlp.py") and error["line"] == 4, error
    (project / "models" / "mlp.py").write_text(mlp_source(46))
    start, events, end = watcher.build()
    assert end["ok"] and built(events)["mlp"]["stats"]["weight_bytes"] == mlp_weight_bytes(46)


def until_built(watch: Watch, model: str, weight_bytes: int) -> None:
    """Reads builds until one builds `model` with these weights (builds of the files' churn may come first)."""
    deadline = time.monotonic() + 3 * TIMEOUT
    while time.monotonic() < deadline:
        _, events, end = watch.build()
        done = [e for e in events if e["event"] == "built" and e["model"] == model and e["stats"]["weight_bytes"] == weight_bytes]
        if done and end["ok"]:
            return
    raise AssertionError(f"{model} was not rebuilt with {weight_bytes} weight bytes")


def test_folder_deleted_or_moved_and_recreated_is_watched_again(watcher, project, tmp_path):
    models = project / "models"
    backup = tmp_path / "backup"
    shutil.copytree(models, backup)
    shutil.rmtree(models)  # rm -rf models && cp -r backup models
    shutil.copytree(backup, models)
    (models / "mlp.py").write_text(mlp_source(40))
    until_built(watcher, "mlp", mlp_weight_bytes(40))
    (models / "mlp.py").write_text(mlp_source(41))  # an edit after things settled: the new folder is watched
    until_built(watcher, "mlp", mlp_weight_bytes(41))

    os.rename(models, tmp_path / "moved")  # mv models moved && cp -r backup models: no file in models/ changes
    shutil.copytree(backup, models)
    until_built(watcher, "mlp", mlp_weight_bytes(33))
    (models / "mlp.py").write_text(mlp_source(42))
    until_built(watcher, "mlp", mlp_weight_bytes(42))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_exits_cleanly(watcher, signum):
    watcher.proc.send_signal(signum)
    assert watcher.proc.wait(timeout=5) == 0


# a dev server's part: starts kuma watch, says its pid, and waits to be killed. stdin "PIPE": killed at
# once (the pipe's end is seen whenever it comes); "DEVNULL": killed once the first build is over (the
# parent pid is read at start, and no later write to the dead parent's stdout pipe can stop it instead)
PARENT = """
import subprocess, sys
stdin = sys.argv[1]
child = subprocess.Popen([sys.executable, "-m", "kuma_build", "watch", "--json"], stdin=getattr(subprocess, stdin),
                         stdout=subprocess.PIPE, text=True)
while stdin == "DEVNULL" and '"build-end"' not in child.stdout.readline():
    pass
print(child.pid, flush=True)
child.wait()
"""


@pytest.mark.parametrize("stdin", ["PIPE", "DEVNULL"])  # the end of the stdin pipe; the parent pid changing
def test_stops_when_its_parent_is_killed(project, stdin):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, stdin], cwd=project, stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        parent.kill()  # SIGKILL: no handler of the parent runs
        parent.wait(timeout=10)
        deadline = time.monotonic() + TIMEOUT
        while Path(f"/proc/{child}").exists() and Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "kuma watch outlived its killed parent"
            time.sleep(0.05)
    finally:
        parent.kill()
        parent.wait(timeout=10)
