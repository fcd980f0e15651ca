"""`kuma init`: scaffold a kuma.toml and a first model into an existing web project.

Copies templates/init/kuma.toml and templates/init/model.py (as models/model.py) into
the folder. A file that already exists is kept unless --force, so running it twice, or
in a project that has a kuma.toml, never loses work. The generated output and the build
cache are added to an existing .gitignore. The next steps (the npm plugin and the
import) are printed, since init runs before the bundler knows about kuma.
"""

from pathlib import Path

from kuma_build import TEMPLATES as TEMPLATE_ROOT
from kuma_build.errors import KumaError

TEMPLATES = TEMPLATE_ROOT / "init"
FILES = {"kuma.toml": "kuma.toml", "models/model.py": "model.py"}  # written file -> template
IGNORED = ["src/kuma/", ".kuma/"]  # out_dir of the template, and the default cache_dir
NEXT_STEPS = """\
[kuma] next steps (docs/bundlers.md):
  npm install --save-dev kuma-build
  vite.config.js:    import kuma from "kuma-build/vite";     export default { plugins: [kuma()] };
  webpack.config.js: import kuma from "kuma-build/webpack";  plugins: [kuma()]
  app code:          import { load } from "kuma:model";  const model = await load();
  `kuma build` (or `npx kuma build`) compiles the model now."""


def init(folder: Path, force: bool = False) -> int:
    folder = folder.resolve()
    if not folder.is_dir():
        raise KumaError("the folder to initialise does not exist; create it or run `kuma init` inside your web project.", folder)
    for target, template in FILES.items():
        path = folder / target
        if path.exists() and not force:
            print(f"[kuma] kept {target} (it exists; --force overwrites it)", flush=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text((TEMPLATES / template).read_text())
        print(f"[kuma] wrote {target}", flush=True)
    added = ignore_outputs(folder / ".gitignore")
    if added:
        print(f"[kuma] added {', '.join(added)} to .gitignore", flush=True)
    if not (folder / "package.json").is_file():
        print("[kuma] note: no package.json here; the bundler plugins expect kuma.toml at the web project's root", flush=True)
    print(NEXT_STEPS, flush=True)
    return 0


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
