import type { Plugin } from "vite";
import type { KumaOptions } from "./options.js";
export type { KumaOptions };
/** The kuma Vite plugin: `import { load } from "kuma:NAME"` resolves to the model built from kuma.toml. */
export default function kuma(options?: KumaOptions): Plugin;
