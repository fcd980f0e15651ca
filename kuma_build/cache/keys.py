"""Model keys: everything a build's output depends on, hashed without importing torch.

The key covers the compiler's own source files (as Triton and Inductor do: a
version string misses local edits), the torch version, the model's name, its kuma.toml
section and the chunk size, the model's source file and every project-local
module it imports, and the weights file. The fields are kept, not just their
hash, so `kuma cache explain` can say which one changed.
"""

import ast
import hashlib
import json
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from kuma_build import TEMPLATES

PACKAGE = Path(__file__).resolve().parents[1]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@lru_cache(maxsize=1)
def compiler_hash() -> str:
    digest = hashlib.sha256()
    # named the same from a checkout and from a wheel (which keeps the templates inside the package)
    named = [(str(p.relative_to(PACKAGE.parent)), p) for p in sorted(PACKAGE.rglob("*.py")) if TEMPLATES not in p.parents]
    named += [(f"templates/{p.name}", p) for p in sorted([*TEMPLATES.glob("*.js"), *TEMPLATES.glob("*.d.ts")])]
    for name, path in named:
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def torch_version() -> str:
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return "missing"


def model_inputs(project, model) -> list[Path]:
    """The files a model's build reads: its source, the project-local modules that imports, its
    weights (kuma.toml aside). What `kuma watch` and the bundlers' watch modes watch."""
    source = model.source.resolve()
    imports = local_imports(source, [model.source.parent, project.root]) if source.is_file() else []
    return [source, *imports, *([model.weights.resolve()] if model.weights else [])]


def local_imports(source: Path, roots: list[Path]) -> list[Path]:
    """Project-local Python files that `source` imports, directly or through each other."""
    found, todo = [], [source]
    while todo:
        path = todo.pop()
        try:
            tree = ast.parse(path.read_bytes(), str(path))
        except (SyntaxError, ValueError):
            continue  # the build itself reports the syntax error with its line
        for module in _imported_modules(tree, path):
            for root in ([path.parent] if module.startswith(".") else roots):
                candidate = _module_file(root, module.lstrip("."))
                if candidate and candidate != source and candidate not in found:
                    found.append(candidate)
                    todo.append(candidate)
                    break
    return sorted(found)


def _imported_modules(tree, path: Path):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            yield base
            yield from (f"{base}.{alias.name}" if node.module else f"{base}{alias.name}" for alias in node.names)


def _module_file(root: Path, dotted: str) -> Path | None:
    if not dotted:
        return None
    base = root.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate.resolve()
    return None


def model_fields(project, model, hash_file=sha256_file) -> dict:
    """Everything the model's output depends on, as a JSON-able dict."""
    roots = [model.source.parent, project.root]
    return {
        "compiler": compiler_hash(),
        "model": model.name,  # the output names it (the program, the browser cache), so two models never share a build
        "torch": torch_version(),
        "config": {"section": model.section, "chunk_size": project.chunk_size},
        "source": hash_file(model.source),
        "imports": {_relative(p, project.root): hash_file(p) for p in local_imports(model.source.resolve(), roots)},
        "weights": hash_file(model.weights) if model.weights else None,
    }


def model_key(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def changed_fields(old: dict, new: dict) -> list[str]:
    """Names of the key fields that differ, with file-level detail for imports."""
    changes = [name for name in new if name != "imports" and old.get(name) != new.get(name)]
    old_imports, new_imports = old.get("imports", {}), new.get("imports", {})
    for path in sorted(set(old_imports) | set(new_imports)):
        if old_imports.get(path) != new_imports.get(path):
            changes.append(f"imports ({path})")
    return changes


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root.resolve()))
    except ValueError:
        return str(path)
