"""`kuma init`: add kuma to an existing web project, and say what changed.

Each step looks at the project, changes what it must and prints one line ("wrote", "patched",
"kept", or what to do by hand when a file is beyond a safe textual edit); run again, every step
finds its work done and keeps the files as they are. The steps:

- kuma.toml and a first model (models/model.py), from templates/init; an existing one is kept
  unless --force. In a TypeScript project kuma.toml names a `types` file (src/kuma-env.d.ts)
  that every build rewrites with each model's exact types; init writes its first version.
- the bundler: package.json's dependencies say Vite or webpack. Vite: a vite.config.* gets the
  plugin, or one is written (with base "./") when there is none, as in create-vite's templates;
  webpack: webpack.config.* gets the plugin.
- tsconfig.json: "kuma-build/client" joins compilerOptions.types when that list exists, and the
  types file joins "include" when the list does not cover it.
- package.json: a "build" script that runs `tsc` first gets `kuma build && ` in front, so the
  model's types exist before tsc checks the app, even in a fresh checkout.
- a sample call (src/kuma-model.ts or .js) and the build output in .gitignore.

Config files are JavaScript or JSON with comments: the edits are textual, anchored on the usual
shapes (`plugins: [`, `defineConfig({`, `export default {`, `module.exports = {`).
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path

from kuma_build import TEMPLATES as TEMPLATE_ROOT
from kuma_build.errors import KumaError

TEMPLATES = TEMPLATE_ROOT / "init"
IGNORED = ["src/kuma/", ".kuma/"]  # out_dir of the template, and the default cache_dir
TYPES_LINE = '# types = "src/kuma-env.d.ts"'
PLUGIN = {"vite": "kuma-build/vite", "webpack": "kuma-build/webpack"}
# the last line of a top-level import: `import x from "y"`, `import "y"`, `} from "y"` (a multi-line
# import's end), `const x = require("y")`; the plugin's import goes after the last one
IMPORT_LINE = re.compile(r"""^(import\s.*?from\s*["'][^"']+["']|import\s*["'][^"']+["']|\}\s*from\s*["'][^"']+["']"""
                         r"""|(const|let|var)\s.*=\s*require\(["'][^"']+["']\).*?)[ \t;]*$""", re.M)


@dataclass
class WebProject:
    folder: Path
    package: dict  # package.json, or {} without one
    bundler: str | None  # "vite" | "webpack" | None
    typescript: bool

    @property
    def source_folder(self) -> str:
        return "src/" if (self.folder / "src").is_dir() else ""


def init(folder: Path, force: bool = False) -> int:
    folder = folder.resolve()
    if not folder.is_dir():
        raise KumaError("the folder to initialise does not exist; create it or run `kuma init` inside your web project.", folder)
    web = detect(folder)
    say(f"{web.bundler or 'no Vite or webpack'} project{' with TypeScript' if web.typescript else ''} in {folder}")
    write_file(folder, "kuma.toml", kuma_toml(web), force)
    write_file(folder, "models/model.py", (TEMPLATES / "model.py").read_text(), force)
    if web.typescript:
        write_types_file(folder)
    if web.bundler == "vite":
        patch_vite_config(web)
    elif web.bundler == "webpack":
        patch_webpack_config(web)
    if web.typescript:
        patch_tsconfig(web)
        patch_build_script(web)
    sample = f"{web.source_folder}kuma-model.{'ts' if web.typescript else 'js'}"
    write_file(folder, sample, (TEMPLATES / f"kuma-model.{'ts' if web.typescript else 'js'}").read_text(), force=False)
    added = ignore_outputs(folder / ".gitignore")
    if added:
        say(f"added {', '.join(added)} to .gitignore")
    next_steps(web, sample)
    return 0


def say(line: str) -> None:
    print(f"[kuma] {line}", flush=True)


def detect(folder: Path) -> WebProject:
    try:
        package = json.loads((folder / "package.json").read_text())
    except FileNotFoundError:
        package = {}
    except ValueError as e:
        raise KumaError(f"package.json is not valid JSON ({e}); fix it and run `kuma init` again.", folder / "package.json")
    deps = {**package.get("dependencies", {}), **package.get("devDependencies", {})}
    bundler = next((b for b in ("vite", "webpack") if b in deps), None)
    if bundler is None:  # a config file without the dependency (yet)
        bundler = next((b for b in ("vite", "webpack") if list(folder.glob(f"{b}.config.*"))), None)
    typescript = "typescript" in deps or (folder / "tsconfig.json").is_file()
    return WebProject(folder, package, bundler, typescript)


def write_file(folder: Path, target: str, text: str, force: bool) -> None:
    path = folder / target
    if path.exists() and not force:
        say(f"kept {target} (it exists{'; --force overwrites it' if target in ('kuma.toml', 'models/model.py') else ''})")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    say(f"wrote {target}")


def kuma_toml(web: WebProject) -> str:
    text = (TEMPLATES / "kuma.toml").read_text()
    if web.typescript:
        text = text.replace(TYPES_LINE, f'types = "{web.source_folder}kuma-env.d.ts"')
    return text


def write_types_file(folder: Path) -> None:
    """The first kuma-env.d.ts (generic until a build), from kuma.toml's `types` key."""
    from kuma_build.builder import write_types
    from kuma_build.config import load_project

    project = load_project(folder / "kuma.toml")
    if project.types is not None and project.types.exists():
        say(f"kept {project.types.relative_to(folder).as_posix()} (builds keep it up to date)")
    elif project.types is None:
        say("kuma.toml sets no `types` file; add types = \"src/kuma-env.d.ts\" under [build] for exact TypeScript types")
    elif write_types(project):
        say(f"wrote {project.types.relative_to(folder).as_posix()} (each build rewrites it; commit it)")


def config_file(web: WebProject, tool: str) -> Path | None:
    found = sorted(web.folder.glob(f"{tool}.config.*"))
    return next((p for p in found if p.suffix in (".js", ".mjs", ".cjs", ".ts", ".mts", ".cts")), None)


def patch_vite_config(web: WebProject) -> None:
    path = config_file(web, "vite")
    if path is None:
        name = f"vite.config.{'ts' if web.typescript else 'js'}"
        (web.folder / name).write_text((TEMPLATES / "vite.config.js").read_text())
        say(f"wrote {name} (the kuma plugin, base \"./\")")
        return
    patch_plugin(path, "vite", "import kuma from \"kuma-build/vite\";")


def patch_webpack_config(web: WebProject) -> None:
    path = config_file(web, "webpack")
    if path is None:
        say('no webpack.config.js: add one with `plugins: [kuma()]` (import kuma from "kuma-build/webpack")')
        return
    text = path.read_text()
    esm = path.suffix in (".mjs", ".ts", ".mts") or re.search(r"^\s*(import\s|export\s+default)", text, re.M)
    patch_plugin(path, "webpack", 'import kuma from "kuma-build/webpack";' if esm else 'const kuma = require("kuma-build/webpack").default;')


def patch_plugin(path: Path, tool: str, import_line: str) -> None:
    """Add the kuma plugin to a bundler config: the import, and kuma() in its plugins."""
    text = path.read_text()
    if PLUGIN[tool] in text:
        say(f"kept {path.name} (it uses {PLUGIN[tool]})")
        return
    if re.search(r"\bplugins\s*:\s*\[", text):
        patched = re.sub(r"\bplugins\s*:\s*\[", lambda m: m.group(0) + "kuma(), ", text, count=1)
    else:
        opening = re.search(r"(defineConfig\(\s*\{|export\s+default\s+\{|module\.exports\s*=\s*\{)\n?", text)
        if opening is None:
            say(f"could not find where {path.name} lists its plugins: add {import_line} and kuma() to its plugins by hand")
            return
        patched = text[:opening.end()] + ("" if opening.group(0).endswith("\n") else "\n") + "  plugins: [kuma()],\n" + text[opening.end():]
    imports = list(IMPORT_LINE.finditer(patched))
    at = imports[-1].end() + 1 if imports else 0
    patched = patched[:at] + import_line + "\n" + patched[at:]
    path.write_text(patched)
    say(f"patched {path.name}: {import_line} and kuma() in its plugins")


def patch_tsconfig(web: WebProject) -> None:
    path = web.folder / "tsconfig.json"
    if not path.is_file():
        return
    text = original = path.read_text()
    changes = []
    types = re.search(r'"types"\s*:\s*\[([^\]]*)\]', text)
    if types and "kuma-build/client" not in types.group(1):
        inner = types.group(1).rstrip()
        text = text[:types.start(1)] + inner + (", " if inner.strip() else "") + '"kuma-build/client"' + text[types.end(1):]
        changes.append('"kuma-build/client" added to compilerOptions.types')
    include = re.search(r'"include"\s*:\s*\[([^\]]*)\]', text)
    types_file = f"{web.source_folder}kuma-env.d.ts"
    if include and not any(covers(entry, types_file) for entry in re.findall(r'"([^"]*)"', include.group(1))):
        inner = include.group(1).rstrip()
        text = text[:include.start(1)] + inner + (", " if inner.strip() else "") + json.dumps(types_file) + text[include.end(1):]
        changes.append(f"{types_file} added to include")
    if changes:
        path.write_text(text)
        say(f"patched tsconfig.json: {', '.join(changes)}")
    else:
        say("kept tsconfig.json (it sees kuma's types)")


def covers(entry: str, file: str) -> bool:
    entry = entry.removeprefix("./").removesuffix("/**/*").removesuffix("/*").rstrip("/")
    return entry in ("", ".", "**", "*") or file == entry or file.startswith(entry + "/")


def patch_build_script(web: WebProject) -> None:
    scripts = web.package.get("scripts", {})
    build = scripts.get("build")
    if not build or not re.match(r"tsc\b", build):
        return
    scripts["build"] = f"kuma build && {build}"
    (web.folder / "package.json").write_text(json.dumps(web.package, indent=2) + "\n")
    say(f'patched package.json: the build script is now "{scripts["build"]}" (types before tsc)')


def ignore_outputs(gitignore: Path) -> list[str]:
    """Append the generated folders to an existing .gitignore; the entries added."""
    if not gitignore.is_file():
        return []
    text = gitignore.read_text()
    present = {line.strip().strip("/") for line in text.splitlines()}
    missing = [entry for entry in IGNORED if entry.strip("/") not in present]
    if missing:
        separator = "" if not text or text.endswith("\n") else "\n"
        gitignore.write_text(text + separator + "# kuma build output and cache\n" + "".join(f"{m}\n" for m in missing))
    return missing


def next_steps(web: WebProject, sample: str) -> None:
    deps = {**web.package.get("dependencies", {}), **web.package.get("devDependencies", {})}
    steps = []
    if "kuma-build" not in deps:
        steps.append("npm install --save-dev kuma-build")
    if web.bundler is None:
        steps.append('add the plugin to your bundler: import kuma from "kuma-build/vite" (or "kuma-build/webpack"); plugins: [kuma()]')
    module = sample.removeprefix("src/").removesuffix(".ts")  # TypeScript resolves it without the extension
    steps.append(f'use the model from your app code: import {{ runModel }} from "./{module}"; console.log(await runModel());')
    steps.append("`npx kuma build` compiles it now; your bundler's dev server and build do it too (docs/first-model.md)")
    say("next steps:\n" + "".join(f"  {step}\n" for step in steps).rstrip())
