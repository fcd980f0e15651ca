"""The wheel: `pip install kuma-build` must carry every module and the templates (runtime.js, the
`kuma init` files), which live in templates/ beside the package in the repository. The wheel is
built and installed into a folder of its own, and a project made by `kuma init` builds from it
with the repository out of reach."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(*args, **kwargs):
    result = subprocess.run(args, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_wheel_installs_modules_and_templates_and_builds(tmp_path):
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(REPO))
    (wheel,) = (tmp_path / "dist").glob("kuma_build-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {str(p.relative_to(REPO)) for p in (REPO / "kuma_build").rglob("*.py")}
    templates = {"kuma_build/templates/" + str(p.relative_to(REPO / "templates")) for p in (REPO / "templates").rglob("*") if p.is_file()}
    assert sources <= names, sorted(sources - names)
    assert templates <= names, sorted(templates - names)

    site = tmp_path / "site"
    run(sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel))
    project = tmp_path / "app"
    project.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}  # torch and the rest from this environment, kuma from the wheel
    where = run(sys.executable, "-c", "import kuma_build; print(kuma_build.TEMPLATES)", cwd=project, env=env).stdout.strip()
    assert Path(where) == site / "kuma_build" / "templates"
    run(sys.executable, "-m", "kuma_build", "init", cwd=project, env=env)
    built = run(sys.executable, "-m", "kuma_build", "build", cwd=project, env=env)
    assert "[kuma] built" in built.stdout
    (index,) = project.glob("**/index.js")
    assert "async function loadModel(" in index.read_text()  # the runtime, from the wheel's templates
