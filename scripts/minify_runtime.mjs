// Derives templates/runtime.min.js, the runtime every index.js ships, from templates/runtime.js, the
// source of truth written for readers: terser (from tests/browser's node_modules: cd tests/browser &&
// npm ci) drops comments and whitespace and shortens local names, a fifth of the runtime's gzip size.
//
//   node scripts/minify_runtime.mjs           after every edit of templates/runtime.js; commit both
//   node scripts/minify_runtime.mjs --check   exit 1 when runtime.min.js is not what this derives
//
// The first line records runtime.js's SHA-256. kuma build (which needs no Node) ships runtime.min.js
// only while that hash is runtime.js's, else runtime.js with its comments stripped (jsmodule.py), and
// tests/test_jsmodule.py fails until the file is derived again.

import crypto from "node:crypto";
import fs from "node:fs";
import { createRequire } from "node:module";

const templates = new URL("../templates/", import.meta.url);
const require = createRequire(new URL("../tests/browser/package.json", import.meta.url));
let minify;
try {
  ({ minify } = require("terser"));
} catch {
  console.error("scripts/minify_runtime.mjs: terser is not installed; run `cd tests/browser && npm ci` first.");
  process.exit(2);
}

// the runtime's functions index.js calls after it (jsmodule.render_js): kept, under these names
const API = ["loadModel", "tensorInfo"];

const source = fs.readFileSync(new URL("runtime.js", templates), "utf8");
const hash = crypto.createHash("sha256").update(source).digest("hex");
const { code } = await minify(source, {
  module: true, // an ES module's top level: its own names may be shortened too
  ecma: 2020,
  compress: { passes: 2, top_retain: API },
  mangle: { reserved: API },
});
const text = `// generated from runtime.js (sha256 ${hash}) by scripts/minify_runtime.mjs; do not edit\n${code}\n`;
const target = new URL("runtime.min.js", templates);
if (process.argv.includes("--check")) {
  const current = fs.existsSync(target) ? fs.readFileSync(target, "utf8") : "";
  if (current !== text) {
    console.error("templates/runtime.min.js is not derived from templates/runtime.js: run `node scripts/minify_runtime.mjs` and commit it.");
    process.exit(1);
  }
} else {
  fs.writeFileSync(target, text);
}
