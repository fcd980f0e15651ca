"""The runtime as index.js ships it (jsmodule.shipped_runtime: comments and indentation stripped)
is the template's code: it parses, it keeps every string, and the browser tests run it."""

import subprocess

from kuma_build import TEMPLATES
from kuma_build.jsmodule import code_before_comment, shipped_runtime


def test_the_shipped_runtime_parses_and_is_smaller(tmp_path):
    shipped = tmp_path / "runtime.mjs"
    shipped.write_text(shipped_runtime() + "export { loadModel, tensorInfo };\n")
    result = subprocess.run(["node", "--check", str(shipped)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    template = (TEMPLATES / "runtime.js").read_text()
    assert "// " not in shipped_runtime().replace("https://", "") and len(shipped_runtime()) < 0.8 * len(template)


def test_comments_are_cut_only_outside_strings():
    assert code_before_comment('const a = 1; // why') == "const a = 1;"
    assert code_before_comment('const url = "a // b"; // why') == 'const url = "a // b";'
    assert code_before_comment("const t = `x ${y} // z`;") == "const t = `x ${y} // z`;"
    assert code_before_comment(r'const q = "a \" // b";') == r'const q = "a \" // b";'
    assert code_before_comment("const r = a//b;") == "const r = a//b;"  # not after a space: kept
    assert code_before_comment("// a whole line") == ""
