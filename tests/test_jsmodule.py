"""The runtime as index.js ships it (jsmodule.shipped_runtime) is the template's code: the minified
runtimes (templates/runtime*.min.js) are derived from the current runtime.js
(scripts/minify_runtime.mjs), a stale one is never shipped, every form parses and keeps every
message, a model without dims, state or f16 kernels ships the runtime without their code, and the
browser tests run what ships."""

import dataclasses
import hashlib
import json
import re
import shutil
import subprocess

import pytest
import torch

from kuma_build import TEMPLATES
from kuma_build.compiler import compile_model, compile_module
from kuma_build.config import InputSpec, load_project
from kuma_build.jsmodule import code_before_comment, render_class_js, shipped_runtime, stripped_runtime
from kuma_build.outfolder import DISPATCH_HELPER, class_module_js, compact_dispatches, program_from_js, split_program, undispatched
from kuma_build.shortnames import short_kernels
from kuma_build.templated import expanded, repeated, shapes, unrepeated, with_templates
from support import model_config

REPO = TEMPLATES.parent
MINIFIED = ("runtime.min.js", "runtime.matrices.min.js", "runtime.static.min.js", "runtime.plain.min.js")
REGENERATE = ("templates/runtime.js changed since templates/runtime*.min.js were derived: run "
              "`node scripts/minify_runtime.mjs` (terser comes with `cd tests/browser && npm ci`) and commit them")
# what only the dims code reads: the dims uniform's buffer kind, the class program's dims, { size, per }
DIMS_CODE = ['"dims"', ".dims", ".per"]
# picking an f16 build's "-f16" program (only it has f16m kernels) and their variants, asking for the features
MATRIX_CODE = ["chromium-experimental-subgroup-matrix", "subgroupMatrixConfigs", '"shader-f16"', '"-f16"']
STATE_CODE = ["clearBuffer"]  # zeroing a state buffer
F16_CODE = ['"widen"']  # widening an f16 build's weights
# each derived runtime, as shipped_runtime picks it: the whole one, one for a model without dims, one
# for a model without dims or a "-f16" program, one for a model with none of what the switches guard
WHOLE, MATRICES, STATIC, PLAIN = None, {"MATRICES", "STATE", "F16"}, {"STATE", "F16"}, set()


def assert_parses(tmp_path, code):
    module = tmp_path / "runtime.mjs"
    module.write_text(code + "export { loadModel, tensorInfo };\n")
    result = subprocess.run(["node", "--check", str(module)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_minified_runtime_is_derived_from_the_current_template():
    for name in MINIFIED:
        first = (TEMPLATES / name).read_text().split("\n", 1)[0]
        assert hashlib.sha256((TEMPLATES / "runtime.js").read_bytes()).hexdigest() in first, REGENERATE
    # and it is exactly what the script derives (not edited by hand)
    result = subprocess.run(["node", str(REPO / "scripts" / "minify_runtime.mjs"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + result.stdout


def test_the_shipped_runtime_is_the_minified_one_and_keeps_every_message(tmp_path):
    template = (TEMPLATES / "runtime.js").read_text()
    # every message a user may see is in both word for word, up to its first `${` (terser may only
    # change the quotes)
    messages = re.findall(r'`(kuma: [^`$]*)', template) + re.findall(r'"(kuma: [^"]*)"', template)
    assert len(messages) > 20
    whole, matrices, static, plain = (shipped_runtime(needs=needs) for needs in (WHOLE, MATRICES, STATIC, PLAIN))
    assert len(whole) > len(matrices) > len(static) > len(plain)
    for shipped in (whole, matrices, static, plain):
        assert_parses(tmp_path, shipped)
        assert "\n" not in shipped.strip() and len(shipped) < 0.6 * len(template)
        for message in messages:
            assert message in shipped, message
    assert all(code in whole and code not in matrices for code in DIMS_CODE)
    assert all(code in matrices and code not in static for code in MATRIX_CODE)
    assert all(code in static and code not in plain for code in STATE_CODE + F16_CODE)
    # a model that needs a switch gets a runtime with it
    assert shipped_runtime(needs={"DIMS"}) == shipped_runtime(needs={"DIMS", "F16"}) == whole
    assert shipped_runtime(needs={"MATRICES", "F16"}) == matrices
    assert shipped_runtime(needs={"STATE"}) == shipped_runtime(needs={"F16"}) == static


def test_a_model_without_dims_ships_the_runtime_without_the_dims_code(tmp_path):
    """index.js as kuma build writes it, for one small model built with a fixed batch and with a dim."""
    torch.manual_seed(0)
    module = torch.nn.Linear(4, 3).eval()
    static = model_config(module, (torch.randn(2, 4),), name="static")
    dynamic = dataclasses.replace(static, name="dynamic", dims={"batch": (1, 8)}, inputs=[InputSpec("input", ("batch", 4), "float32")])
    runtimes = {}
    for config in (static, dynamic):
        index = (compile_module(module, config).write(tmp_path) / "index.js").read_text()
        runtimes[config.name] = index.split("\nconst program = ")[0] + "\n"
    assert runtimes["static"].endswith(shipped_runtime(needs=PLAIN) + "\n")
    assert runtimes["dynamic"].endswith(shipped_runtime(needs=WHOLE) + "\n")
    for code in DIMS_CODE:
        assert code not in runtimes["static"] and code in runtimes["dynamic"], code


def test_a_stale_minified_runtime_is_never_shipped(tmp_path):
    for name in ("runtime.js", *MINIFIED):
        shutil.copy(TEMPLATES / name, tmp_path / name)
    for needs in (WHOLE, MATRICES, STATIC, PLAIN):
        assert shipped_runtime(tmp_path, needs) == shipped_runtime(needs=needs)
    edited = (TEMPLATES / "runtime.js").read_text().replace("const CONCURRENCY = ", "const CONCURRENCY = 1 + ")
    (tmp_path / "runtime.js").write_text(edited)
    for needs in (WHOLE, MATRICES, STATIC, PLAIN):  # the whole runtime, which runs every model
        assert shipped_runtime(tmp_path, needs) == stripped_runtime(edited) and "CONCURRENCY = 1 + " in shipped_runtime(tmp_path, needs)
    for name in MINIFIED:
        (tmp_path / name).unlink()
    for needs in (WHOLE, MATRICES, STATIC, PLAIN):
        assert shipped_runtime(tmp_path, needs) == stripped_runtime(edited)


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


def test_a_class_module_holds_its_kernels_raw_and_reads_back_as_node_reads_it(tmp_path):
    """outfolder.program_js: a string with line breaks (a kernel's WGSL) as a template literal, any
    other string (or one a template literal would change) as JSON; program_from_js reads it back."""
    part = {"buffers": [{"size": 4, "kind": "input"}], "dispatches": [], "copies": [],
            "kernels": [{"name": "k`1", "code": "fn main(){\nlet x=1u;\n}"}, {"name": "k2", "code": "fn main(){}//a\\b\n"}]}
    text = render_class_js(part)
    assert "`fn main(){\nlet x=1u;\n}`" in text and '"fn main(){}//a\\\\b\\n"' in text and '"k`1"' in text
    (tmp_path / "gpu.js").write_text(text)
    script = f"import({json.dumps((tmp_path / 'gpu.js').as_uri())}).then((m) => console.log(JSON.stringify(m.program)))"
    result = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == program_from_js(text) == {**part, "kernels": short_kernels(part["kernels"])}


def test_kernels_of_one_shape_ship_as_a_template_and_compile_their_own_text(tmp_path):
    """templated.py: kernels that differ only in integers ship as a template function and a call each
    (outfolder.class_module_js); node's import of the module gives every kernel the text it was built
    with, byte for byte, and program_from_js reads the module back to the same module."""
    def conv(channels, size, hole_count):
        lines = [f"@group(0)@binding({b})var<storage,read>x{b}:array<f32>;" for b in range(3)]
        lines += [f"fn f{i}(a:u32)->f32{{if(a<{channels * (i * i + 1)}u){{return x0[a*{size}u+{i * i}u];}}return 0.0;}}" for i in range(hole_count)]
        return "\n".join(lines + [f"@compute@workgroup_size(64)\nfn main(){{let v=f0({size}u)*1.5e-3;}}"])
    kernels = [{"name": "conv2d", "code": conv(c, s, 30)} for c, s in ((16, 9), (32, 49), (64, 9), (8, 25))]
    part = {"buffers": [4], "dispatches": [], "copies": [],
            "kernels": [*kernels, {"name": "other", "code": "fn main(){\nlet x=1u;\n}"}]}
    text = render_class_js(part)
    assert text.startswith("const t0=(a,b,c,") and "${$27}" in text and '"code":t0(' in text
    (tmp_path / "gpu.js").write_text(text)
    script = f"import({json.dumps((tmp_path / 'gpu.js').as_uri())}).then((m) => console.log(JSON.stringify(m.program)))"
    result = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert [k["code"] for k in json.loads(result.stdout)["kernels"]] == [k["code"] for k in short_kernels(part["kernels"])]
    read = program_from_js(text)
    assert len(read["templates"]) == 1 and render_class_js(read) == text
    assert expanded(read["templates"], read["kernels"]) == short_kernels(part["kernels"])


def test_runs_of_unrolled_lines_ship_as_a_repeat_and_read_back_as_they_were(tmp_path):
    """templated.repeated: lines (or blocks of lines) that differ only in integers in arithmetic
    progression as one ${R(n,i=>`...`)}; node's import gives every kernel its text byte for byte, a
    run with leading zeros or a template's hole stays as it was, and the module reads back to itself."""
    def kernel(k):
        steps = [f"acc{j}=fma(a[{k}u*{j}u+{16 * j}u],b[{j}u],acc{j});" for j in range(10)]
        tile = [f"acc{i}=fma(b[{k}u+{128 * j}u],w{j},acc{i});" for j in range(8) for i in range(4)]  # 8 steps of 4 registers
        tail = [f"d({j}u,m);" for j in (0, 1, 2, 3, 9, 4)]  # a run, then lines of its shape out of step
        tail += [f"o{i}*=f.{c};" for i, c in enumerate("xyzw")]  # a vector's components step too
        blocks = [line for j in range(5) for line in ("{", f"e(v{j},{k + 64 * j}u);", "h();", "}")]  # blocks of 4 lines
        return "\n".join([f"fn main(){{", *[f"d({j}u,n);" for j in range(16)], *steps, *tile, *tail, *blocks, "x=07u;", "x=08u;", "x=09u;", f"let q={k}u;}}"])
    part = {"buffers": [4], "dispatches": [], "copies": [[0, 0, 1, 0, 4], *range(2, 40), 41, 43, *range(45, 60)],
            "kernels": [{"name": f"k{k}", "code": kernel(k)} for k in (3, 5, 7, 11)]}
    text = render_class_js(part)
    assert text.startswith("const R=") and "${R(16,i=>`d(${i}u,n);`)}" in text and "x=07u;\nx=08u;" in text
    assert "j=>R(4,i=>" in text and "d(9u,m);\nd(4u,m);" in text and 'o${i}*=f.${"xyzw"[i]};' in text
    assert "${R(5,i=>`{\ne(v${i},${3+64*i}u);\nh();\n}`)}" in text
    assert '"copies":[[0,0,1,0,4],...S(2,40),41,43,...S(45,60)]' in text  # runs of indices as ranges
    (tmp_path / "gpu.js").write_text(text)
    script = f"import({json.dumps((tmp_path / 'gpu.js').as_uri())}).then((m) => console.log(JSON.stringify(m.program)))"
    result = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    shipped = short_kernels(part["kernels"])
    assert [k["code"] for k in json.loads(result.stdout)["kernels"]] == [k["code"] for k in shipped]
    assert json.loads(result.stdout)["copies"] == part["copies"]
    read = program_from_js(text)
    assert expanded(read.get("templates", []), read["kernels"]) == shipped and render_class_js(read) == text
    # two blocks repeat only when asked (a module tries both and keeps the smaller)
    pair = "{\nlet h=j+0u;\nb0=g[h];\n}\n{\nlet h=j+1u;\nb1=g[h];\n}"
    assert repeated(pair) == pair and repeated(pair, blocks=2) == "${R(2,i=>`{\nlet h=j+${i}u;\nb${i}=g[h];\n}`)}"
    assert unrepeated(repeated(pair, blocks=2)) == pair


def test_kernels_of_one_shape_but_for_their_unrolled_lengths_ship_as_one_template(tmp_path):
    """templated.shapes: kernels whose texts differ in the length of an unrolled run (a group norm's
    registers, 6 or 12 a thread) and in integers, including a name's (g12) and a whole float's
    (3168.0), ship as one template whose run counts are holes too, ${R(e,i=>`...`)}; node's import
    gives each kernel its text, and program_from_js reads the module back to the same module."""
    def norm(registers, length, splits):
        lines = [f"@group(0)@binding({b})var<storage,read>x{b}:array<f32>;" for b in range(2)]
        lines += ["fn main(@builtin(local_invocation_index)li:u32){"]
        for r in range(registers):
            lines += [f"var g{r}:f32;", "{", f"let q=li+{256 * r}u;", f"g{r}=x0[q*{splits}u+q%{length // 9}u];", "}"]
        lines += [f"var g{registers}:f32;", f"if(li<{length % 256}u){{g{registers}=x1[li];}}"]
        lines += [line for r in range(registers) for line in ("{", f"let x=g{r};", "p=p+x;", "}")]
        return "\n".join(lines + [f"let m=p/{length}.0;", "}"])
    kernels = short_kernels([{"name": "normalize", "code": norm(r, n, s)} for r, n, s in ((12, 3168, 2), (12, 3168, 4), (6, 1584, 4), (6, 1584, 8))])
    assert shapes(kernels) == [[0, 1, 2, 3]]
    templates, shipped = with_templates(kernels, shapes(kernels))  # one template, whether or not it pays here
    text = class_module_js({"buffers": [4], "dispatches": [], "copies": [], "kernels": shipped, "templates": templates})
    assert text.count("=>({name:") == 1 and re.search(r"\$\{R\([a-z],i=>`", text) and "g${" in text and re.search(r"\$\{[a-z]\}\.0;", text)
    (tmp_path / "gpu.js").write_text(text)
    script = f"import({json.dumps((tmp_path / 'gpu.js').as_uri())}).then((m) => console.log(JSON.stringify(m.program)))"
    result = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert [k["code"] for k in json.loads(result.stdout)["kernels"]] == [k["code"] for k in kernels]
    read = program_from_js(text)
    assert read["templates"] == templates and expanded(read["templates"], read["kernels"]) == kernels


def test_dispatches_ship_with_the_indices_that_follow_left_out_and_read_back_as_they_were(tmp_path):
    """outfolder.compact_dispatches: a kernel index one past the largest so far and a buffer index one
    past the largest bound so far as JS holes, which the module's D fills in: what node's D gives and
    what undispatched reads are the dispatches, also for a last hole, a list of one hole, workgroup
    counts that depend on dims and a dispatch's `when`; a class module ships D where it pays."""
    dispatches = [[0, [0, 2, 3, 4], [99, 1, 1]], [1, [4, 5, 6, 7], [4, 1, 1]], [0, [7, 8, 4], [99, 1, 2]],
                  [2, [8], [1, 1, 1]], [3, [1, 9], [{"size": [[2, "seq"]], "per": 64}, 1, 1], {"seq": [1, 8]}],
                  [5, [9, 10, 11], [7, 4, 4]], [4, [3, 12], [2, 2, 2]], [6, [13], [1, 1, 1]]]
    literal = compact_dispatches(dispatches)
    assert literal.startswith("[[,[,2,,,],[99,1,1]],[,[4,,,,],[4,1,1]],[0,[7,,4],") and literal.endswith(",[,[,],[1,1,1]]]")
    assert '[,[1,,],[{"size":[[2,"seq"]],"per":64},1,1],{"seq":[1,8]}],[5,[9,,,],[7,4,4]]' in literal
    assert json.loads(undispatched(f'"dispatches":D({literal})')[len('"dispatches":'):]) == dispatches
    script = f"const {DISPATCH_HELPER};console.log(JSON.stringify(D({literal})))"
    result = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == dispatches
    # a plan of 24 layers, each a new kernel on its new weights, in a class module
    plan = [[k, [2 + 3 * k, 3 + 3 * k, 4 + 3 * k, 5 + 3 * k], [8 * k + 1, 1, 1]] for k in range(24)]
    part = {"buffers": [4] * 80, "copies": [], "dispatches": plan, "kernels": [{"name": "k", "code": "fn main(){}"}] * 24}
    text = render_class_js(part)
    assert '"dispatches":D([[,[2,,,,],[1,1,1]],[,[5,,,,],[9,1,1]],' in text
    (tmp_path / "gpu.js").write_text(text)
    script = f"import({json.dumps((tmp_path / 'gpu.js').as_uri())}).then((m) => console.log(JSON.stringify(m.program)))"
    result = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["dispatches"] == plan == program_from_js(text)["dispatches"]


@pytest.mark.parametrize("name", ["resnet", "mobilenet", "unet"])
def test_every_shipped_kernel_imports_as_the_text_it_was_built_with(tmp_path, name):
    """Both class modules of the model tests' ResNet, MobileNet and U-Net (templates, some returning
    whole kernels or holding runs of their own, repeated runs of lines and of blocks, families of short
    names, ranges of copies, compact dispatches): what node's import gives is byte for byte each kernel's short-named source, and the
    copies and dispatches."""
    project = load_project(REPO / "tests" / "models" / "kuma.toml")
    compiled = compile_model(project, dataclasses.replace(project.models[name], target="auto"))
    _, parts = split_program(compiled.programs)
    shipped = ""
    for device_class, part in parts.items():
        text = render_class_js(part)
        shipped += text
        (tmp_path / f"{device_class}.js").write_text(text)
        script = f"import({json.dumps((tmp_path / f'{device_class}.js').as_uri())}).then((m) => console.log(JSON.stringify(m.program)))"
        result = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        program = json.loads(result.stdout)
        assert program["kernels"] == short_kernels(part["kernels"]) and program["copies"] == part["copies"]
        assert program["dispatches"] == part["dispatches"]
    # what this test is for (a repeat of blocks: a line to repeat with line breaks in it)
    assert "${R(" in shipped and ",t0=(" in shipped and (name != "mobilenet" or ("({name:" in shipped and "...S(" in shipped))
    assert name != "unet" or re.search(r"\$\{R\([a-z],i=>`", shipped)  # group norms of 6 and 12 registers, one template
    assert re.search(r"i=>`[^`]*\n[^`]*`", shipped) and '"dispatches":D([' in shipped
