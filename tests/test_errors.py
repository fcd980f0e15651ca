"""User mistakes end in one clear message naming the file and line, never a traceback or a half-written output."""

import subprocess
import sys
import textwrap

import pytest

GOOD_MODEL = """
import torch
from torch import nn

def build_model():
    return nn.Sequential(nn.Linear(8, 4), nn.ReLU())
"""

GOOD_TOML = """
[build]
out_dir = "out"

[models.net]
source = "net.py"
factory = "build_model"
[models.net.inputs]
x = { shape = [2, 8], dtype = "float32" }
"""


def make_project(tmp_path, toml=GOOD_TOML, model=GOOD_MODEL):
    (tmp_path / "kuma.toml").write_text(textwrap.dedent(toml))
    (tmp_path / "net.py").write_text(textwrap.dedent(model))
    return tmp_path


def kuma_build(root):
    result = subprocess.run([sys.executable, "-m", "kuma_build", "build"], cwd=root, capture_output=True, text=True)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def assert_fails(root, *fragments):
    result = kuma_build(root)
    assert result.returncode == 1
    assert result.stderr.startswith("[kuma] error: ")
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    return result


@pytest.mark.parametrize("toml, fragments", [
    ("[build]\nout_dir = \n", ["kuma.toml:2:", "invalid TOML"]),
    (GOOD_TOML.replace('out_dir = "out"', 'out_dir = "out"\nchunksize = 3'), ["kuma.toml:4:", "unknown key build.chunksize"]),
    (GOOD_TOML.replace('"net.py"', '"missing.py"'), ["kuma.toml:6:", 'source = "missing.py" does not exist']),
    (GOOD_TOML.replace('"float32"', '"float16"'), ["kuma.toml:9:", 'dtype = "float16" is not supported']),
    (GOOD_TOML.replace("shape = [2, 8]", "shape = [2, -8]"), ["kuma.toml:9:", "positive integers"]),
    (GOOD_TOML.replace('factory = "build_model"', 'factory = "build_model"\nprecision = "f8"'), ["kuma.toml:8:", 'precision = "f8" is not supported']),
    (GOOD_TOML.replace('factory = "build_model"', 'factory = "build_model"\ntarget = "tpu"'), ["kuma.toml:8:", 'target = "tpu" is not supported']),
    ("[build]\n", ["kuma.toml:1:", "no models declared"]),
])
def test_config_errors(tmp_path, toml, fragments):
    assert_fails(make_project(tmp_path, toml=toml), *fragments)


# a model with a dim: lines 8 [models.net.dims], 9 seq, 10 [models.net.inputs], 11 x
DIMS_TOML = GOOD_TOML.replace("[models.net.inputs]", "[models.net.dims]\nseq = { min = 1, max = 16 }\n[models.net.inputs]").replace(
    "shape = [2, 8]", 'shape = ["seq", 8]')


@pytest.mark.parametrize("toml, fragments", [
    (DIMS_TOML.replace("seq = {", "batch = { max = 4 }\nseq = {"), ["kuma.toml:9:", "dim batch is used by no input of model net"]),
    (DIMS_TOML.replace("min = 1", "min = 20"), ["kuma.toml:9:", "dim seq has min = 20 above max = 16"]),
    (DIMS_TOML.replace("min = 1", "min = 0"), ["kuma.toml:9:", "models.net.dims.seq.min = 0 is less than 1"]),
    (DIMS_TOML.replace('["seq", 8]', '["sq", 8]'), ["kuma.toml:11:", '"sq" names no dim of model net; did you mean "seq"?']),
    (GOOD_TOML.replace("shape = [2, 8]", 'shape = ["seq", 8]'), ["kuma.toml:9:", '"seq" names no dim of model net', "[models.net.dims]"]),
    (DIMS_TOML.replace("seq = {", "seq-len = {").replace('"seq"', '"seq-len"'), ["kuma.toml:9:", 'dim name "seq-len" must be a letter']),
    (DIMS_TOML.replace('["seq", 8]', '["seq", "seq"]'), ["kuma.toml:9:", "dim seq cannot be inferred from the input lengths"]),
    (DIMS_TOML.replace("max = 16", "max = 1000000000"), ["kuma.toml:9:", "8000000000 elements at the dims' maxima", "lower max of dim seq"]),
])
def test_dims_config_errors(tmp_path, toml, fragments):
    assert_fails(make_project(tmp_path, toml=toml), *fragments)


def test_syntax_error_in_model_file(tmp_path):
    assert_fails(make_project(tmp_path, model=GOOD_MODEL + "\ndef broken(:\n    pass\n"), "net.py:8:", "SyntaxError")


def test_missing_factory(tmp_path):
    assert_fails(make_project(tmp_path, toml=GOOD_TOML.replace('"build_model"', '"make"')), "kuma.toml:7:", 'factory "make" is not defined', "build_model")


def test_model_errors_found_later_name_the_kuma_toml_line(tmp_path):
    toml = GOOD_TOML.replace('factory = "build_model"', 'factory = "build_model"\noutputs = ["a", "b"]')
    assert_fails(make_project(tmp_path, toml=toml), "kuma.toml:8:", "kuma.toml names 2 outputs but forward() returns 1")
    toml = GOOD_TOML.replace("x = {", "x = { shape = [2, 8] }\ny = {")
    model = GOOD_MODEL + "\nclass Net(nn.Module):\n    def forward(self, x):\n        return x\n"
    assert_fails(make_project(tmp_path, toml=toml.replace('"build_model"', '"Net"'), model=model), "kuma.toml:8:", "do not match forward()'s parameters")


def test_factory_raises(tmp_path):
    model = GOOD_MODEL.replace("    return nn.Sequential", "    raise ValueError('bad width')\n    return nn.Sequential")
    assert_fails(make_project(tmp_path, model=model), "net.py:6:", "ValueError: bad width")


def test_unsupported_op_names_op_model_and_line(tmp_path):
    model = GOOD_MODEL + textwrap.dedent("""
        class Net(nn.Module):
            def forward(self, x):
                y = x * 2
                return torch.sort(y, dim=1).values
        """)
    toml = GOOD_TOML.replace('"build_model"', '"Net"')
    assert_fails(make_project(tmp_path, toml=toml, model=model), "net.py:11:", "aten.sort", "model net", "docs/ops.md")


SHAPE_MISMATCH_MODEL = """\
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(4)
        # 12x12 pooled by 4 leaves 3x3 pixels, not 4x4
        self.fc = nn.Linear(4*4*4, 32)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv(x)))
        x = x.flatten(1)
        return self.fc(x)


def build_model():
    return Net()
"""


def test_shape_mismatch_names_the_module_its_definition_and_both_shapes(tmp_path):
    toml = GOOD_TOML.replace("shape = [2, 8]", "shape = [1, 3, 12, 12]")
    root = make_project(tmp_path, toml=toml, model=SHAPE_MISMATCH_MODEL)
    assert_fails(root, "net.py:11: model net: module fc (`self.fc = nn.Linear(4*4*4, 32)` at net.py:11, which is "
                 "Linear(in_features=64, out_features=32, bias=True)) expected an input of shape [..., 64] but got [1, 36] "
                 "(called at net.py:16)", "mat1 and mat2 shapes cannot be multiplied")


def test_failure_in_a_users_own_submodule_names_the_failing_line(tmp_path):
    model = SHAPE_MISMATCH_MODEL.replace("self.fc = nn.Linear(4*4*4, 32)", "self.fc = Head()") + textwrap.dedent("""
        class Head(nn.Module):
            def forward(self, x):
                return x.view(2, -1, 7)
        """)
    toml = GOOD_TOML.replace("shape = [2, 8]", "shape = [1, 3, 12, 12]")
    assert_fails(make_project(tmp_path, toml=toml, model=model), "net.py:24:", "Check the input shapes")


def test_broken_and_mismatched_weights(tmp_path):
    toml = GOOD_TOML.replace('factory = "build_model"', 'factory = "build_model"\nweights = "w.safetensors"')
    root = make_project(tmp_path, toml=toml)
    (root / "w.safetensors").write_bytes(b"not a safetensors file")
    assert_fails(root, "w.safetensors", "cannot read weights")

    import torch
    from safetensors.torch import save_file
    save_file({"0.weight": torch.zeros(4, 8)}, str(root / "w.safetensors"))
    assert_fails(root, "do not fit the model", "missing 0.bias")


def test_failed_build_keeps_the_last_good_output(tmp_path):
    root = make_project(tmp_path)
    assert kuma_build(root).returncode == 0
    before = {p.relative_to(root): p.read_bytes() for p in (root / "out").rglob("*") if p.is_file()}
    (root / "net.py").write_text(GOOD_MODEL.replace("nn.ReLU()", "nn.ReLU(),, "))
    assert_fails(root, "SyntaxError")
    after = {p.relative_to(root): p.read_bytes() for p in (root / "out").rglob("*") if p.is_file()}
    assert after == before
    assert [p.name for p in (root / "out").iterdir()] == ["net"]  # no temporary folders left behind


@pytest.mark.parametrize("prefix, fragments", [
    ("import sys\nsys.exit(0)\n", ["net.py:3:", "SystemExit: 0", "must not call sys.exit()", '__name__ == "__main__"']),
    ("import argparse\nparser = argparse.ArgumentParser()\nparser.add_argument('--data', required=True)\nargs = parser.parse_args()\n",
     ["net.py:5:", "SystemExit: 2", "parse command-line arguments"]),
])
def test_model_exiting_at_import_names_its_line(tmp_path, prefix, fragments):
    result = kuma_build(make_project(tmp_path, model="\n" + prefix + GOOD_MODEL))
    assert result.returncode == 1
    # what argparse itself printed (its usage, now naming net.py) may come first; kuma's error is the last line
    last = result.stderr.splitlines()[-1]
    assert last.startswith("[kuma] error: ") and all(f in last for f in fragments), result.stderr


def test_model_parsing_optional_arguments_at_import_builds(tmp_path):
    """argparse sees no arguments (not kuma's), so a script whose arguments all have defaults just works."""
    prefix = "import argparse\nparser = argparse.ArgumentParser()\nparser.add_argument('--width', default=4)\nargs = parser.parse_args()\n"
    result = kuma_build(make_project(tmp_path, model=prefix + GOOD_MODEL))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "net" / "index.js").is_file()


def test_keyboard_interrupt_in_factory_says_interrupted(tmp_path):
    model = GOOD_MODEL.replace("    return nn.Sequential", "    raise KeyboardInterrupt\n    return nn.Sequential")
    result = kuma_build(make_project(tmp_path, model=model))
    assert result.returncode == 130
    assert result.stderr.startswith("[kuma] interrupted in ") and "net.py:6" in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_forward_returning_nothing(tmp_path):
    model = GOOD_MODEL + "\nclass Net(nn.Module):\n    def forward(self, x):\n        return ()\n"
    assert_fails(make_project(tmp_path, toml=GOOD_TOML.replace('"build_model"', '"Net"'), model=model),
                 "net.py:9:", "forward() returns no tensors")


def test_weights_of_other_shapes_name_the_parameter(tmp_path):
    import torch
    from safetensors.torch import save_file
    root = make_project(tmp_path, toml=GOOD_TOML.replace('factory = "build_model"', 'factory = "build_model"\nweights = "w.safetensors"'))
    save_file({"0.weight": torch.zeros(3, 8), "0.bias": torch.zeros(3)}, str(root / "w.safetensors"))
    assert_fails(root, "w.safetensors", "0.weight has shape [3, 8] in the weights file but [4, 8] in the model",
                 "0.bias has shape [3] in the weights file but [4] in the model")


def test_verify_a_parameter_returned_as_an_output(tmp_path):
    model = GOOD_MODEL + textwrap.dedent("""
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.w = nn.Parameter(torch.randn(3, 4))

            def forward(self, x):
                return x * 2, self.w
        """)
    root = make_project(tmp_path, toml=GOOD_TOML.replace('"build_model"', '"Net"'), model=model)
    assert kuma_build(root).returncode == 0
    result = subprocess.run([sys.executable, "-m", "kuma_build", "verify"], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert result.stdout.count(" ok\n") == 4, result.stdout  # two outputs, each class's kernels (target "auto")


def test_json_error_event(tmp_path):
    """--json carries the same error as one event (KumaError.event(), shared with kuma watch)."""
    import json
    root = make_project(tmp_path, toml=GOOD_TOML.replace('out_dir = "out"', 'out_dir = "out"\nchunk_size = 4097'))
    result = subprocess.run([sys.executable, "-m", "kuma_build", "build", "--json"], cwd=root, capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [event] = [json.loads(line) for line in result.stdout.splitlines()]
    assert event == {"event": "error", "file": str(root / "kuma.toml"), "line": 4,
                     "message": event["message"]} and "not a multiple of 4" in event["message"]
    assert result.stderr == f"[kuma] error: {root / 'kuma.toml'}:4: {event['message']}\n"
