// One `kuma build --json`, as at the start of `vite build` or `webpack`.
// Resolves to the "built" events, one per model; an "error" event rejects with
// the Python file and line in the message, and a crash (no event, non-zero exit)
// rejects with the end of Python's stderr. onInputs gets the files the build reads
// (the "inputs" event, sent first), for bundlers in watch mode, even when it fails.

import { kumaError, userError } from "./errors.js";
import { spawnKuma } from "./events.js";

export async function runBuild({ python, config, cwd, onLog, onInputs }) {
  const built = [];
  let failure = null;
  const run = spawnKuma({
    python, command: "build", config, cwd, onLog,
    onEvent(event) {
      if (event.event === "built") built.push(event);
      else if (event.event === "inputs") onInputs?.(event.files);
      else if (event.event === "error") failure ??= kumaError(event);
    },
  });
  const { code, signal, error } = await run.closed;
  if (failure) throw failure;
  if (error) throw userError(`kuma: could not start ${python}: ${error.message}`);
  if (code !== 0) {
    throw userError(`kuma build ended with ${signal ? `signal ${signal}` : `exit code ${code}`} and no error event:\n${run.stderrTail()}`);
  }
  return built;
}
