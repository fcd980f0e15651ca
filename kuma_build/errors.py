"""One error type for everything a user can cause.

A KumaError carries a one-paragraph message that names the file (and line, when
known) and says what to do. The CLI prints it without a traceback (kuma_build/log.py),
and --json output carries it as the event that event() builds.
"""

import traceback
from pathlib import Path


class KumaError(Exception):
    def __init__(self, message: str, file: str | Path | None = None, line: int | None = None):
        self.file = str(file) if file is not None else None
        self.line = line
        self.message = message
        super().__init__(self.render())

    def render(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        return f"{where}{self.message}"

    def event(self) -> dict:
        """The JSON event of `kuma build --json` and `kuma watch --json`."""
        return {"event": "error", "message": self.message, "file": self.file, "line": self.line}


def user_frame(exc: BaseException, source: Path) -> tuple[str, int] | None:
    """The innermost traceback frame that lies in the user's source file."""
    found = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).resolve() == source.resolve():
            found = (frame.filename, frame.lineno)
    if found is None and isinstance(exc, SyntaxError) and exc.filename:
        found = (exc.filename, exc.lineno)
    return found


def frame_from_stack_trace(stack_trace: str | None, source: Path) -> tuple[str, int] | None:
    """The last frame in the user's file from torch.export's node stack_trace text."""
    if not stack_trace:
        return None
    found = None
    for line in stack_trace.splitlines():
        line = line.strip()
        if not line.startswith('File "'):
            continue
        name, _, rest = line[len('File "'):].partition('", line ')
        lineno = rest.split(",")[0]
        if lineno.isdigit() and Path(name).resolve() == source.resolve():
            found = (name, int(lineno))
    return found
