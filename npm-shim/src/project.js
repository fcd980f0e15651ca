// What the Vite and webpack plugins share (the part unplugin would carry, without
// the dependency): one kuma project, its Python, and the map from model name to its
// generated folder, learnt from the "out" field of the "built" events, so kuma.toml
// is read by Python only. `kuma:NAME` resolves to <out>/NAME/index.js as an absolute
// path: the bundler reads the real file, and the chunk URLs in it,
// `new URL("./weights/<hash>.bin", import.meta.url)`, become emitted assets.

import path from "node:path";
import { runBuild } from "./build.js";
import { kumaError, userError, withFrame } from "./errors.js";
import { findPython } from "./python.js";
import { startWatch } from "./watch.js";

export const PREFIX = "kuma:";

export class KumaProject {
  /** root: the bundler's root; config: kuma.toml (default: found upwards from root); logger: {info, warn, error}, adds "[kuma]". */
  constructor({ root, config, python, logger }) {
    this.root = root;
    this.config = config && path.resolve(root, config);
    this.pythonOption = python;
    this.logger = logger;
    this.models = new Map(); // model name -> absolute output folder
    this.error = null; // why the last build failed, until a good one
    this.watcher = null;
    this.inputs = []; // the files the last `kuma build` read (kuma.toml, model sources, weights)
  }

  python() {
    return findPython({ python: this.pythonOption, root: this.root }).then((p) => p.path);
  }

  /** One `kuma build`; rejects with the Python file and line when a model does not compile. */
  async build() {
    try {
      const built = await runBuild({
        python: await this.python(), config: this.config, cwd: this.root, onLog: (l) => this.log(l),
        onInputs: (files) => (this.inputs = files),
      });
      built.forEach((event) => this.record(event));
      this.error = null;
    } catch (error) {
      this.error = error;
      throw copy(error);
    }
  }

  /**
   * Starts the one `kuma watch` child; resolves after its initial build, good or bad.
   * onBuild({ok, changed, recovered, error}) follows every later build: changed names the
   * models whose output files changed, recovered says a good build ended a failing spell.
   */
  async watch(onBuild) {
    const python = await this.python();
    let changed = [];
    let failure = null;
    let initial = true;
    let initialDone;
    const initialBuild = new Promise((resolve) => (initialDone = resolve));
    const finish = (ok) => {
      const recovered = ok && this.error !== null;
      this.error = ok ? null : failure ?? userError("kuma watch: the build failed (see the log above).");
      if (initial) initialDone();
      else onBuild({ ok, changed, recovered, error: this.error && copy(this.error) });
      initial = false;
    };
    this.watcher = startWatch({
      python, config: this.config, cwd: this.root, onLog: (l) => this.log(l),
      onEvent: (event) => {
        if (event.event === "build-start") [changed, failure] = [[], null];
        else if (event.event === "built") {
          this.record(event);
          if (event.changed.length) changed.push(event.model);
        } else if (event.event === "error") {
          failure ??= kumaError(event);
          this.logger.error(withFrame(kumaError(event)));
        } else if (event.event === "build-end") finish(event.ok);
      },
      onExit: ({ code, signal, error, stderr }) => {
        failure = userError(`kuma watch stopped (${error?.message ?? (signal ? `signal ${signal}` : `exit code ${code}`)}); restart the dev server.\n${stderr}`);
        this.logger.error(failure.message);
        finish(false);
      },
    });
    await initialBuild;
  }

  /** The absolute index.js of kuma:NAME. */
  resolve(id) {
    const name = id.slice(PREFIX.length);
    const folder = this.models.get(name);
    if (folder) return path.join(folder, "index.js");
    if (this.error) throw copy(this.error);
    const known = [...this.models.keys()].join(", ") || "none";
    throw userError(`kuma: there is no model named "${name}" (import "${id}"); kuma.toml declares: ${known}.`);
  }

  /** What a bundler's watch mode should watch: the last build's inputs, and the file a failure names. */
  watchedFiles() {
    return [...new Set([...this.inputs, ...(this.error?.id ? [this.error.id] : [])])];
  }

  /** Whether a file lies in a generated model folder. */
  owns(file) {
    return [...this.models.values()].some((folder) => file.startsWith(folder + path.sep));
  }

  indexFiles(names) {
    return names.filter((name) => this.models.has(name)).map((name) => path.join(this.models.get(name), "index.js"));
  }

  record(event) {
    this.models.set(event.model, event.out);
    this.logger.info(`${event.model}: ${event.status} in ${event.ms} ms -> ${path.relative(this.root, event.out) || "."}`);
  }

  // Python's stderr and stray stdout lines; the loggers add their own "[kuma]"
  log(line) {
    if (line.startsWith("[kuma] error:")) return; // the error event reports it
    const text = line.replace(/^\[kuma\] /, "");
    if (text.startsWith("warning:")) this.logger.warn(text);
    else if (text.trim()) this.logger.info(text);
  }

  close() {
    return this.watcher?.close();
  }
}

// bundlers annotate the errors they are given, so each gets its own copy
function copy(error) {
  return Object.assign(new Error(error.message), error, { stack: error.stack });
}
