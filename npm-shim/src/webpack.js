// The webpack 5 plugin: `import { load } from "kuma:NAME"` in app code.
//
// webpack (a build): one `kuma build` before the compiler runs. webpack --watch and
// webpack serve: one `kuma watch` child, started before the first compilation; after
// each of its builds the compilation runs again. kuma swaps a model's folder in whole,
// which webpack's file watcher and file system cache can miss, so then the cached
// reads of generated folders are purged and their modules always rebuild (they are
// small). A failed kuma build becomes a compilation error naming the Python file and
// line, so a build fails (exit code 1) and the dev server shows it until a good build.
// `kuma:NAME` requests are rewritten to the absolute generated index.js before webpack
// resolves them (as NormalModuleReplacementPlugin does); the chunk URLs in that file
// become asset modules, which webpack fingerprints and emits.

import { withFrame } from "./errors.js";
import { KumaProject, PREFIX } from "./project.js";

const NAME = "kuma";

export class KumaWebpackPlugin {
  /** @param {{config?: string, python?: string}} options */
  constructor(options = {}) {
    this.options = options;
  }

  apply(compiler) {
    const project = new KumaProject({ ...this.options, root: compiler.context, logger: compiler.getInfrastructureLogger(NAME) });
    let watching = null;

    // a failure is kept in project.error and reported by the compilation below
    compiler.hooks.beforeRun.tapPromise(NAME, () => project.build().catch(() => {}));
    compiler.hooks.watchRun.tapPromise(NAME, () => (watching ??= project.watch(() => {
      compiler.inputFileSystem.purge?.([...project.models.values()]);
      compiler.watching?.invalidate();
    })));

    compiler.hooks.thisCompilation.tap(NAME, (compilation) => {
      if (watching) {
        const hooks = compiler.webpack.NormalModule.getCompilationHooks(compilation);
        hooks.needBuild.tap(NAME, (module) => (project.owns(module.resource ?? "") ? true : undefined));
      }
      if (!project.error) return;
      const error = new compiler.webpack.WebpackError(withFrame(project.error));
      error.hideStack = true;
      compilation.errors.push(error);
    });

    compiler.hooks.normalModuleFactory.tap(NAME, (factory) => {
      factory.hooks.beforeResolve.tap(NAME, (data) => {
        if (!data.request.startsWith(PREFIX)) return;
        // a model that never built: the compilation error above says why, once
        if (project.error && !project.models.has(data.request.slice(PREFIX.length))) return false;
        data.request = project.resolve(data.request);
      });
    });

    compiler.hooks.watchClose.tap(NAME, () => project.close());
    compiler.hooks.shutdown.tapPromise(NAME, async () => project.close());
  }
}

/** `kuma(options)` and `new kuma(options)` both give the plugin. */
export default function kuma(options) {
  return new KumaWebpackPlugin(options);
}
