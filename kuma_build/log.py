"""What kuma prints: one "[kuma] ..." line per event, or with --json one JSON object per line.

Tools parse these lines (the bundler plugins in npm-shim/ read the JSON events), so their shape is
stable. The CLI (cli.py) and the watcher (watch.py) both print through here.
"""

import json
import sys
import traceback
from pathlib import Path

from kuma_build.errors import KumaError


def event(data: dict, line: str | None, as_json: bool) -> None:
    """One JSON event, or its log line (None: no log line for it)."""
    if as_json:
        print(json.dumps(data), flush=True)
    elif line:
        print(f"[kuma] {line}", flush=True)


def error(e: KumaError, as_json: bool) -> None:
    """A user's mistake: the JSON error event (with --json) and always the one-line message on stderr."""
    if as_json:
        print(json.dumps(e.event()), flush=True)
    print(f"[kuma] error: {e}", file=sys.stderr, flush=True)


def internal_error(e: Exception, as_json: bool) -> None:
    """A bug in kuma, not the user's mistake: the event, and the traceback for the bug report."""
    if as_json:
        print(json.dumps(KumaError(f"internal error: {type(e).__name__}: {e}").event()), flush=True)
    print(f"[kuma] internal error:\n{''.join(traceback.format_exception(e))}", file=sys.stderr, flush=True)


def report(result, as_json: bool) -> None:
    """One stable log line (or JSON event) per model build."""
    for problem in result.problems:
        print(f"[kuma] warning: {problem}", file=sys.stderr, flush=True)
    ms = f"{result.seconds * 1000:.0f} ms"
    chunks = f"chunks {result.chunks_written} written / {result.chunks_kept} kept"
    if as_json:
        event({"event": "built", "model": result.model, "status": result.status, "origin": result.origin,
               "out": str(result.folder), "ms": round(result.seconds * 1000), "changed": result.changed,
               "kernels_compiled": result.kernels_compiled, "kernels_reused": result.kernels_reused,
               "chunks_written": result.chunks_written, "chunks_kept": result.chunks_kept, "stats": result.stats}, None, True)
    elif result.status == "up to date":
        print(f"[kuma] {result.model} is up to date ({ms})", flush=True)
    elif result.status == "restored":
        print(f"[kuma] restored {result.model} from {result.origin} in {ms} ({chunks})", flush=True)
    else:
        s = result.stats
        print(f"[kuma] built {result.model} in {ms} (kernels {result.kernels_compiled} compiled / {result.kernels_reused} reused, "
              f"{chunks}) -> {relative(result.folder)}: {s['ops']} ops, {s['dispatches']} dispatches, "
              f"weights {size(s['weight_bytes'])}, activations {size(s['activation_bytes'])}", flush=True)


def relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def size(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
