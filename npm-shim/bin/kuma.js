#!/usr/bin/env node
// `npx kuma ...`: the Python CLI (`python -m kuma_build ...`) with the same arguments,
// stdio inherited and its exit code, so `npx kuma build` behaves like `kuma build`.
// Python is found as the plugins find it (KUMA_PYTHON, a virtualenv, ./.venv, python3).

import { spawn } from "node:child_process";
import { constants } from "node:os";
import { findPython } from "../src/python.js";

let python;
try {
  python = await findPython({ root: process.cwd() });
} catch (error) {
  console.error(error.message);
  process.exit(1);
}
const child = spawn(python.path, ["-m", "kuma_build", ...process.argv.slice(2)], { stdio: "inherit" });
// Ctrl-C reaches the child from the terminal; a SIGTERM sent to us alone is passed on
process.on("SIGINT", () => {});
process.on("SIGTERM", () => child.kill("SIGTERM"));
child.on("error", (error) => {
  console.error(`kuma: could not start ${python.path}: ${error.message}`);
  process.exit(1);
});
child.on("exit", (code, signal) => process.exit(signal ? 128 + constants.signals[signal] : code));
