// Finding the Python that runs kuma build. All compiling happens in the Python package
// kuma_build; this shim only starts it, so the first thing it needs is a Python that can
// import kuma_build at a version that fits this package (same major.minor).
//
// Candidates, in order: the plugin's `python` option, $KUMA_PYTHON, the active virtualenv
// ($VIRTUAL_ENV, or conda's $CONDA_PREFIX), uv's $UV_PROJECT_ENVIRONMENT, a .venv or venv
// folder in the project root or a folder above it (where uv, `python -m venv` and Poetry's
// in-project setting put them), the environment of a Poetry project there (`poetry env info
// --path`), then python3 on PATH. An explicit choice (the option or KUMA_PYTHON) is used or
// rejected, never silently replaced by another Python; the automatic ones are tried until one fits. When none does, the error lists
// every try and the remedies, never a bare ENOENT.

import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { userError } from "./errors.js";

export const SHIM_VERSION = JSON.parse(fs.readFileSync(new URL("../package.json", import.meta.url), "utf8")).version;
const WANTED = SHIM_VERSION.split(".").slice(0, 2).join(".");
const PROBE = "import kuma_build; print(kuma_build.__version__)";
const VENV_PYTHON = process.platform === "win32" ? ["Scripts", "python.exe"] : ["bin", "python"];
const CONDA_PYTHON = process.platform === "win32" ? ["python.exe"] : ["bin", "python"];
const SYSTEM_PYTHON = process.platform === "win32" ? "python" : "python3";

const found = new Map(); // a found Python per (option, environment, root), for the life of the process

/** Resolves to { path, version, source } of a Python that has kuma_build, or rejects with the remedies. */
export function findPython({ python, root = process.cwd() } = {}) {
  const candidates = listCandidates(python, root);
  const key = JSON.stringify(candidates);
  if (!found.has(key)) {
    // a failure is not kept: after a pip install, a restarted dev server finds the Python
    found.set(key, pickPython(candidates).catch((error) => (found.delete(key), Promise.reject(error))));
  }
  return found.get(key);
}

function listCandidates(option, root) {
  if (option) return [{ source: "the plugin option `python`", path: path.resolve(root, option), explicit: true }];
  if (process.env.KUMA_PYTHON) return [{ source: "KUMA_PYTHON", path: process.env.KUMA_PYTHON, explicit: true }];
  const candidates = [];
  if (process.env.VIRTUAL_ENV) candidates.push({ source: "the active virtualenv", path: path.join(process.env.VIRTUAL_ENV, ...VENV_PYTHON) });
  if (process.env.CONDA_PREFIX) candidates.push({ source: "the active conda environment", path: path.join(process.env.CONDA_PREFIX, ...CONDA_PYTHON) });
  if (process.env.UV_PROJECT_ENVIRONMENT) candidates.push({ source: "UV_PROJECT_ENVIRONMENT (uv)", path: path.join(path.resolve(root, process.env.UV_PROJECT_ENVIRONMENT), ...VENV_PYTHON) });
  for (let folder = path.resolve(root); ; folder = path.dirname(folder)) {
    const where = folder === path.resolve(root) ? "the project root" : folder;
    for (const name of [".venv", "venv"]) {
      const python = path.join(folder, name, ...VENV_PYTHON);
      if (fs.existsSync(python)) candidates.push({ source: `./${name} in ${where}`, path: python });
    }
    if (isPoetryProject(folder)) candidates.push({ source: `the Poetry environment of ${where}`, poetry: folder });
    if (path.dirname(folder) === folder) break;
  }
  candidates.push({ source: "PATH", path: SYSTEM_PYTHON });
  return candidates;
}

function isPoetryProject(folder) {
  try {
    return /^\[tool\.poetry\]/m.test(fs.readFileSync(path.join(folder, "pyproject.toml"), "utf8"));
  } catch {
    return false;
  }
}

// the virtualenv Poetry made for a project, wherever Poetry keeps it
function poetryPython(folder) {
  return new Promise((resolve) => {
    execFile("poetry", ["env", "info", "--path"], { cwd: folder, timeout: 60_000, windowsHide: true }, (error, stdout) => {
      resolve(error ? { problem: error.code === "ENOENT" ? "the poetry command is not on PATH" : "`poetry env info --path` failed" }
        : { path: path.join(stdout.trim(), ...VENV_PYTHON) });
    });
  });
}

async function pickPython(candidates) {
  const tried = [];
  for (const candidate of candidates) {
    if (candidate.poetry) {
      const { path: python, problem } = await poetryPython(candidate.poetry);
      if (problem) {
        tried.push(`poetry (${candidate.source}): ${problem}`);
        continue;
      }
      candidate.path = python;
    }
    const { version, problem } = await probe(candidate.path);
    if (version && version.split(".").slice(0, 2).join(".") === WANTED) return { path: candidate.path, version, source: candidate.source };
    tried.push(`${candidate.path} (${candidate.source}): ${problem ?? `has kuma_build ${version}, but this kuma-build npm package is ${SHIM_VERSION} (major.minor must match)`}`);
  }
  throw pythonError(tried, candidates[0].explicit);
}

function probe(python) {
  return new Promise((resolve) => {
    execFile(python, ["-c", PROBE], { timeout: 60_000, windowsHide: true }, (error, stdout, stderr) => {
      if (!error) return resolve({ version: stdout.trim() });
      if (error.code === "ENOENT") return resolve({ problem: "not found" });
      if (error.code === "EACCES") return resolve({ problem: "not executable" });
      if (/No module named '?kuma_build/.test(stderr)) return resolve({ problem: "kuma_build is not installed in it" });
      const last = stderr.trim().split("\n").at(-1) || error.message;
      resolve({ problem: `importing kuma_build failed: ${last}` });
    });
  });
}

function pythonError(tried, explicit) {
  const message = [
    `kuma: no Python with the kuma_build package ${WANTED}.x was found${explicit ? "" : " automatically"}.`,
    "Tried:",
    ...tried.map((t) => `  - ${t}`),
    "Remedies:",
    `  - install it into your Python or virtualenv: pip install "kuma-build==${WANTED}.*"  (from a checkout: pip install -e path/to/kuma)`,
    "  - or point KUMA_PYTHON at a Python that has it: KUMA_PYTHON=/path/to/venv/bin/python",
    '  - or pass it to the plugin: kuma({ python: "/path/to/venv/bin/python" })',
    "  - or create ./.venv (or ./venv) in the project root with it installed, or activate a virtualenv that has it",
  ].join("\n");
  return userError(message, { code: "KUMA_NO_PYTHON" });
}
