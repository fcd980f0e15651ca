// The Vite plugin: `import { load } from "kuma:NAME"` in app code.
//
// vite build: one `kuma build` at build start; a compile error fails the build with
// the Python file and line; with --watch, kuma.toml and the models' files are watched
// too, and each rebuild runs `kuma build` again (incremental: unchanged models are
// up to date in ~0.1 s). vite (dev): one `kuma watch` child for the server's life.
// After a build that changed a model (or ended a failing spell) the generated modules
// are invalidated and the page fully reloads, since a model is one module with no HMR
// state worth keeping; Vite's own watcher is told to leave those files to us, so each
// rebuild reloads once. A failed build shows in Vite's error overlay with file, line
// and a code frame, and is sent again to pages that connect while it lasts.
// Weight chunks are never inlined as data: URLs, so they stay separate cached assets.

import { overlayPayload } from "./errors.js";
import { KumaProject, PREFIX } from "./project.js";

/** @param {{config?: string, python?: string}} options */
export default function kuma(options = {}) {
  let project;
  let dev = false;

  function reload(server, { ok, changed, recovered, error }) {
    if (!ok) return server.ws.send({ type: "error", err: overlayPayload(error) });
    if (!changed.length && !recovered) return;
    const graph = server.environments?.client.moduleGraph ?? server.moduleGraph;
    for (const file of project.indexFiles(changed)) {
      for (const module of graph.getModulesByFile(file) ?? []) graph.invalidateModule(module);
    }
    server.ws.send({ type: "full-reload", path: "*" });
  }

  // leaves changes to generated files to reload(): they come in bursts while a folder is swapped in
  function ignoreGeneratedFiles({ file }) {
    if (project?.owns(file)) return [];
  }

  return {
    name: "kuma",
    enforce: "pre",

    config(user) {
      const limit = user.build?.assetsInlineLimit;
      const inline = (file, content) => {
        if (project?.owns(file)) return false;
        if (typeof limit === "function") return limit(file, content);
        return limit === undefined ? undefined : content.length < limit;
      };
      return { build: { assetsInlineLimit: inline } };
    },

    configResolved(config) {
      dev = config.command === "serve" && !config.isPreview;
      const log = (level) => (message) => config.logger[level](`[kuma] ${message}`, { timestamp: dev });
      project = new KumaProject({ ...options, root: config.root, logger: { info: log("info"), warn: log("warn"), error: log("error") } });
    },

    async buildStart() {
      if (dev) return;
      try {
        await project.build();
      } finally {
        // vite build --watch: edits to the models' Python files rebuild too, a failed build included
        if (this.meta.watchMode) for (const file of project.watchedFiles()) this.addWatchFile(file);
      }
    },

    async configureServer(server) {
      server.httpServer?.once("close", () => project.close());
      await project.watch((result) => reload(server, result));
      // a page opened or reloaded while a build is failing gets the error too
      server.ws.on("connection", (socket) => {
        if (project.error) socket.send(JSON.stringify({ type: "error", err: overlayPayload(project.error) }));
      });
    },

    resolveId(id) {
      if (id.startsWith(PREFIX)) return project.resolve(id);
    },

    hotUpdate: ignoreGeneratedFiles,
    handleHotUpdate: ignoreGeneratedFiles, // Vite 5

    async closeBundle() {
      if (dev) await project.close();
    },
  };
}
