// Starting the Python CLI with --json and reading its events.
// `python -m kuma_build <command> --json` prints one JSON object per line on stdout
// ("built", "error", and for watch "watching", "build-start", "build-end"); log lines
// and warnings go to stderr, which is forwarded line by line. The last stderr lines
// are kept, so a crash (a traceback, not an event) can still be explained.

import { spawn } from "node:child_process";
import readline from "node:readline";

const STDERR_TAIL = 40; // lines kept for crash reports

export function spawnKuma({ python, command, config, cwd, onEvent, onLog }) {
  const args = ["-m", "kuma_build", command, "--json", ...(config ? ["--config", config] : [])];
  // stdin: a pipe nobody writes to; when this process dies, however it dies, the OS closes it
  // and `kuma watch` stops at its end (kuma_build/watch.py)
  const child = spawn(python, args, { cwd, stdio: ["pipe", "pipe", "pipe"], windowsHide: true });
  const tail = [];
  readline.createInterface({ input: child.stdout }).on("line", (line) => {
    let event;
    try {
      event = JSON.parse(line);
    } catch {
      return onLog(line); // not an event: something printed by the model's own code
    }
    onEvent(event);
  });
  readline.createInterface({ input: child.stderr }).on("line", (line) => {
    tail.push(line);
    if (tail.length > STDERR_TAIL) tail.shift();
    onLog(line);
  });
  // "close" fires after stdout and stderr have ended, so every event has been handled
  const closed = new Promise((resolve) => {
    child.on("error", (error) => resolve({ code: null, error }));
    child.on("close", (code, signal) => resolve({ code, signal }));
  });
  return { child, closed, stderrTail: () => tail.join("\n") };
}
