"""The package's structure stays as docs/design.md draws it: no import cycles inside kuma_build/,
and no import that goes up the pipeline (the compiler never imports the caches or the CLI, the IR
never imports the kernels, a kernel never imports a pass). Imports inside functions count too:
a lazy import that only hides a cycle is still a cycle."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "kuma_build"

# bottom first: a module may import from its own layer and the layers below it (the longest
# matching prefix names a module's layer)
LAYERS = [
    ["kuma_build", "kuma_build.errors", "kuma_build.devices"],
    ["kuma_build.config", "kuma_build.outfolder", "kuma_build.jsmodule", "kuma_build.shortnames", "kuma_build.templated"],
    ["kuma_build.compiler.precision", "kuma_build.compiler.ir"],
    ["kuma_build.compiler.kernels"],
    ["kuma_build.compiler.ops"],
    ["kuma_build.compiler.passes", "kuma_build.compiler.cost", "kuma_build.compiler.plan"],
    ["kuma_build.compiler.emit", "kuma_build.compiler.export", "kuma_build.compiler.blame"],
    ["kuma_build.compiler"],
    ["kuma_build.webgpu", "kuma_build.cache"],
    ["kuma_build.verify", "kuma_build.bench", "kuma_build.builder"],
    ["kuma_build.log", "kuma_build.init", "kuma_build.watch"],
    ["kuma_build.cli", "kuma_build.__main__"],
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py") if "templates" not in p.relative_to(PACKAGE).parts}


def imports(path: Path, known: set[str]) -> set[str]:
    """The kuma_build modules a file imports, anywhere in it (`from a import b` is a.b when b is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "kuma_build")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "kuma_build":
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in known else node.module)
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(path, set(found)) - {name} for name, path in found.items()}


def layer(module: str) -> int:
    best = max((prefix for group in LAYERS for prefix in group if module == prefix or module.startswith(prefix + ".")), key=len)
    return next(i for i, group in enumerate(LAYERS) if best in group)


def test_every_module_has_a_layer():
    for name in modules():
        layer(name)  # raises when no prefix matches


def test_no_import_goes_up_the_pipeline():
    upward = [f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
              for a, targets in graph().items() for b in targets if layer(b) > layer(a)]
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    edges = graph()
    cycles, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(edges.get(module, ())):
            if state.get(target) == "open":
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def test_the_checks_see_a_cycle_and_an_upward_import(tmp_path):
    """The checks themselves work: a made-up pair of modules is caught both ways."""
    (tmp_path / "a.py").write_text("import kuma_build.cache.store\nfrom kuma_build.compiler import ops\n")
    known = set(modules())
    found = imports(tmp_path / "a.py", known)
    assert found == {"kuma_build.cache.store", "kuma_build.compiler.ops"}
    assert layer("kuma_build.cache.store") > layer("kuma_build.compiler.ir.graph")
