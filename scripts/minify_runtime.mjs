// Derives the runtimes index.js ships from templates/runtime.js, the source of truth written for
// readers: terser (from tests/browser's node_modules: cd tests/browser && npm ci) drops comments and
// whitespace and shortens local names, a fifth of the runtime's gzip size. One runtime per entry of
// VARIANTS: runtime.js with those of its switches (`const DIMS = true, ...;`) false, so terser drops
// the code behind them; jsmodule.shipped_runtime reads which are false from each file's first line
// and ships the smallest runtime a model can run.
//
//   node scripts/minify_runtime.mjs           after every edit of templates/runtime.js; commit what it writes
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

// properties of the runtime's own objects, never of the program, the options or the browser's:
// shortened too, also those named like a browser's (builtins), as none of the browser's is among
// them (57 bytes gzip)
const OWN_PROPERTIES = ["retryAfterMs", "cachedKeys", "downloaded", "digests", "progress", "room", "pipeline", "bindGroup", "groups", "when", "why",
  "key", "arrays", "values", "bytes", "at", "type", "error"];

// the switches runtime.js declares once
const SWITCHES = ["DIMS", "MATRICES", "STATE", "F16"];
const SWITCH = `const ${SWITCHES.map((name) => `${name} = true`).join(", ")};`;
// each derived runtime and the switches false in it: all on (a model with dims), without dims (an
// f16 build with a "-f16" program: 0.6 kB gzip less than all on), without those two, and without any
// (f32 kernels, no state)
const VARIANTS = [["runtime.min.js", []], ["runtime.matrices.min.js", ["DIMS"]], ["runtime.static.min.js", ["DIMS", "MATRICES"]],
  ["runtime.plain.min.js", SWITCHES]];

const source = fs.readFileSync(new URL("runtime.js", templates), "utf8");
const hash = crypto.createHash("sha256").update(source).digest("hex");
if (source.split(SWITCH).length !== 2) {
  console.error(`scripts/minify_runtime.mjs: templates/runtime.js must declare \`${SWITCH}\` exactly once (the switches of the code a model may not need).`);
  process.exit(2);
}
const variants = VARIANTS.map(([name, off]) => [
  name,
  source.replace(SWITCH, `const ${SWITCHES.map((s) => `${s} = ${!off.includes(s)}`).join(", ")};`),
  off.length ? ` with ${off.join(" = ")} = false` : "",
]);
let stale = false;
for (const [name, variant, how] of variants) {
  const { code } = await minify(variant, {
    module: true, // an ES module's top level: its own names may be shortened too
    ecma: 2020,
    compress: { passes: 3, top_retain: API }, // false switches are inlined and their dead branches dropped (3 passes: 16 bytes gzip less than 2)
    mangle: { reserved: API, properties: { regex: new RegExp(`^(${OWN_PROPERTIES.join("|")})$`), builtins: true } },
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
