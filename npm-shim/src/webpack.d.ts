import type { Compiler } from "webpack";
import type { KumaOptions } from "./options.js";
export type { KumaOptions };
/** The kuma webpack 5 plugin: `import { load } from "kuma:NAME"` resolves to the model built from kuma.toml. */
export class KumaWebpackPlugin {
  constructor(options?: KumaOptions);
  apply(compiler: Compiler): void;
}
export default function kuma(options?: KumaOptions): KumaWebpackPlugin;
