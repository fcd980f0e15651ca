// Derives the runtimes index.js ships from templates/runtime.js, the source of truth written for
// readers: terser (from tests/browser's node_modules: cd tests/browser && npm ci) drops comments and
// whitespace and shortens local names, a fifth of the runtime's gzip size. Two of them:
// runtime.min.js (all of it, for a model with dims or subgroup-matrix kernels) and
// runtime.static.min.js (runtime.js's `const DIMS = true, MATRICES = true;` made false, so terser
// drops that code, for a model with neither).
//
//   node scripts/minify_runtime.mjs           after every edit of templates/runtime.js; commit all three
//   node scripts/minify_runtime.mjs --check   exit 1 when a derived file is not what this derives
//
// The first line records runtime.js's SHA-256. kuma build (which needs no Node) ships a derived file
// only while that hash is runtime.js's, else runtime.js with its comments stripped (jsmodule.py), and
// tests/test_jsmodule.py fails until the files are derived again.

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

// the switches runtime.js declares once; the static runtime is the source with them false
const SWITCH = "const DIMS = true, MATRICES = true;";

const source = fs.readFileSync(new URL("runtime.js", templates), "utf8");
const hash = crypto.createHash("sha256").update(source).digest("hex");
if (source.split(SWITCH).length !== 2) {
  console.error(`scripts/minify_runtime.mjs: templates/runtime.js must declare \`${SWITCH}\` exactly once (the switches of the dims and subgroup-matrix code).`);
  process.exit(2);
}
const variants = [
  ["runtime.min.js", source, ""],
  ["runtime.static.min.js", source.replace(SWITCH, "const DIMS = false, MATRICES = false;"), " with DIMS = MATRICES = false"],
];
let stale = false;
for (const [name, variant, how] of variants) {
  const { code } = await minify(variant, {
    module: true, // an ES module's top level: its own names may be shortened too
    ecma: 2020,
    compress: { passes: 3, top_retain: API }, // false switches are inlined and their dead branches dropped (3 passes: 16 bytes gzip less than 2)
    mangle: { reserved: API },
  });
  const text = `// generated from runtime.js (sha256 ${hash})${how} by scripts/minify_runtime.mjs; do not edit\n${code}\n`;
  const target = new URL(name, templates);
  if (!process.argv.includes("--check")) fs.writeFileSync(target, text);
  else if ((fs.existsSync(target) ? fs.readFileSync(target, "utf8") : "") !== text) {
    console.error(`templates/${name} is not derived from templates/runtime.js: run \`node scripts/minify_runtime.mjs\` and commit it.`);
    stale = true;
  }
}
if (stale) process.exit(1);
