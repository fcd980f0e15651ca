"""The runtime as index.js ships it (jsmodule.shipped_runtime) is the template's code: the minified
runtime.min.js is derived from the current runtime.js (scripts/minify_runtime.mjs), a stale one is
never shipped, both forms parse and keep every message, and the browser tests run what ships."""

import hashlib
import re
import shutil
import subprocess

from kuma_build import TEMPLATES
from kuma_build.jsmodule import code_before_comment, shipped_runtime, stripped_runtime

REPO = TEMPLATES.parent
REGENERATE = "templates/runtime.js changed since templates/runtime.min.js was derived: run `node scripts/minify_runtime.mjs` (terser comes with `cd tests/browser && npm ci`) and commit runtime.min.js"


def assert_parses(tmp_path, code):
    module = tmp_path / "runtime.mjs"
    module.write_text(code + "export { loadModel, tensorInfo };\n")
    result = subprocess.run(["node", "--check", str(module)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_minified_runtime_is_derived_from_the_current_template():
    first = (TEMPLATES / "runtime.min.js").read_text().split("\n", 1)[0]
    assert hashlib.sha256((TEMPLATES / "runtime.js").read_bytes()).hexdigest() in first, REGENERATE
    # and it is exactly what the script derives (not edited by hand)
    result = subprocess.run(["node", str(REPO / "scripts" / "minify_runtime.mjs"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + result.stdout


def test_the_shipped_runtime_is_the_minified_one_and_keeps_every_message(tmp_path):
    shipped, template = shipped_runtime(), (TEMPLATES / "runtime.js").read_text()
    assert_parses(tmp_path, shipped)
    assert "\n" not in shipped.strip() and len(shipped) < 0.6 * len(template)
    # every message a user may see is in it word for word (terser may only change the quotes)
    messages = re.findall(r'`(kuma: [^`$]*)', template) + re.findall(r'"(kuma: [^"]*)"', template)
    assert len(messages) > 20
    for message in messages:
        assert message in shipped, message


def test_a_stale_minified_runtime_is_never_shipped(tmp_path):
    for name in ("runtime.js", "runtime.min.js"):
        shutil.copy(TEMPLATES / name, tmp_path / name)
    assert shipped_runtime(tmp_path) == shipped_runtime()
    edited = (TEMPLATES / "runtime.js").read_text().replace("const CONCURRENCY = ", "const CONCURRENCY = 1 + ")
    (tmp_path / "runtime.js").write_text(edited)
    assert shipped_runtime(tmp_path) == stripped_runtime(edited) and "CONCURRENCY = 1 + " in shipped_runtime(tmp_path)
    (tmp_path / "runtime.min.js").unlink()
    assert shipped_runtime(tmp_path) == stripped_runtime(edited)


def test_the_stripped_runtime_parses_and_is_smaller(tmp_path):
    template = (TEMPLATES / "runtime.js").read_text()
    stripped = stripped_runtime(template)
    assert_parses(tmp_path, stripped)
    assert "// " not in stripped.replace("https://", "") and len(stripped) < 0.8 * len(template)


def test_comments_are_cut_only_outside_strings():
    assert code_before_comment('const a = 1; // why') == "const a = 1;"
    assert code_before_comment('const url = "a // b"; // why') == 'const url = "a // b";'
    assert code_before_comment("const t = `x ${y} // z`;") == "const t = `x ${y} // z`;"
    assert code_before_comment(r'const q = "a \" // b";') == r'const q = "a \" // b";'
    assert code_before_comment("const r = a//b;") == "const r = a//b;"  # not after a space: kept
    assert code_before_comment("// a whole line") == ""
