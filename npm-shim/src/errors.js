// Errors for the user: kuma's JSON error events, and setup problems.
// An event is {event: "error", message, file, line}: the user's Python file (or
// kuma.toml) and line. The Error's message leads with "file:line:" so every
// bundler prints it; id/loc/frame are the fields Vite's overlay and Rollup read.
// These errors carry no stack: the fault is in the model or the setup, and frames
// inside this shim would only bury the message.

import fs from "node:fs";

const FRAME_LINES = 2; // lines of source shown either side of the failing one

export function userError(message, fields = {}) {
  const error = Object.assign(new Error(message), fields);
  error.stack = `Error: ${message}`;
  return error;
}

export function kumaError(event) {
  const where = event.file ? `${event.file}${event.line ? `:${event.line}` : ""}: ` : "";
  const error = userError(`kuma build failed: ${where}${event.message}`, { plugin: "kuma" });
  if (event.file) error.id = event.file;
  if (event.file && event.line) {
    error.loc = { file: event.file, line: event.line, column: 1 };
    error.frame = codeFrame(event.file, event.line);
  }
  return error;
}

/** The message with its code frame under it, for terminals: the same lines the overlay shows. */
export function withFrame(error) {
  return error.frame ? `${error.message}\n${error.frame}` : error.message;
}

/** The error as Vite's overlay payload wants it ({type: "error", err}). */
export function overlayPayload(error) {
  return { message: error.message, stack: "", id: error.id, loc: error.loc, frame: error.frame, plugin: "kuma" };
}

function codeFrame(file, line) {
  let lines;
  try {
    lines = fs.readFileSync(file, "utf8").split("\n");
  } catch {
    return undefined;
  }
  const first = Math.max(1, line - FRAME_LINES);
  const last = Math.min(lines.length, line + FRAME_LINES);
  const width = String(last).length;
  const rows = [];
  for (let n = first; n <= last; n++) rows.push(`${n === line ? ">" : " "} ${String(n).padStart(width)} | ${lines[n - 1]}`);
  return rows.join("\n");
}
