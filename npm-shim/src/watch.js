// The one long-lived `kuma watch --json` child of a dev server.
// It keeps torch imported, so a save rebuilds in about a second; its events go
// to onEvent as they come. close() stops it with SIGTERM (SIGKILL if it lingers),
// and so does this process's exit; when this process is killed outright (kill -9),
// the child sees its stdin pipe close and its parent change, and stops by itself.

import { spawnKuma } from "./events.js";

const STOP_GRACE_MS = 3000; // kuma watch finishes a build in flight for up to 2 s

export function startWatch({ python, config, cwd, onEvent, onLog, onExit }) {
  const run = spawnKuma({ python, command: "watch", config, cwd, onEvent, onLog });
  let stopping = false;
  const killOnExit = () => run.child.kill("SIGKILL"); // "exit" handlers must be synchronous
  process.once("exit", killOnExit);
  run.closed.then(({ code, signal, error }) => {
    process.off("exit", killOnExit);
    if (!stopping) onExit({ code, signal, error, stderr: run.stderrTail() });
  });
  return {
    async close() {
      if (stopping) return run.closed;
      stopping = true;
      if (run.child.exitCode === null && run.child.signalCode === null) run.child.kill("SIGTERM");
      const timer = setTimeout(() => run.child.kill("SIGKILL"), STOP_GRACE_MS);
      await run.closed;
      clearTimeout(timer);
    },
  };
}
