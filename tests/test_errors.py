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
    (GOOD_TOML.replace('"net.py"', '"missing.py"'), ["kuma.toml:6:", 'source file "missing.py" does not exist']),
    (GOOD_TOML.replace('"float32"', '"float16"'), ["kuma.toml:9:", 'dtype "float16"']),
    (GOOD_TOML.replace("shape = [2, 8]", "shape = [2, -8]"), ["kuma.toml:9:", "positive integers"]),
    (GOOD_TOML.replace('factory = "build_model"', 'factory = "build_model"\nprecision = "f8"'), ["kuma.toml:8:", 'precision "f8"']),
    (GOOD_TOML.replace('factory = "build_model"', 'factory = "build_model"\ntarget = "tpu"'), ["kuma.toml:8:", 'target "tpu"']),
    ("[build]\n", ["no models declared"]),
])
def test_config_errors(tmp_path, toml, fragments):
    assert_fails(make_project(tmp_path, toml=toml), *fragments)


def test_syntax_error_in_model_file(tmp_path):
    assert_fails(make_project(tmp_path, model=GOOD_MODEL + "\ndef broken(:\n    pass\n"), "net.py:8:", "SyntaxError")


def test_missing_factory(tmp_path):
    assert_fails(make_project(tmp_path, toml=GOOD_TOML.replace('"build_model"', '"make"')), 'factory "make" is not defined', "build_model")


def test_factory_raises(tmp_path):
    model = GOOD_MODEL.replace("    return nn.Sequential", "    raise ValueError('bad width')\n    return nn.Sequential")
    assert_fails(make_project(tmp_path, model=model), "net.py:6:", "ValueError: bad width")


def test_unsupported_op_names_op_model_and_line(tmp_path):
    model = GOOD_MODEL + textwrap.dedent("""
        class Net(nn.Module):
            def forward(self, x):
                y = x * 2
                return torch.cumsum(y, dim=1)
        """)
    toml = GOOD_TOML.replace('"build_model"', '"Net"')
    assert_fails(make_project(tmp_path, toml=toml, model=model), "net.py:11:", "aten.cumsum", "model net", "docs/ops.md")


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
