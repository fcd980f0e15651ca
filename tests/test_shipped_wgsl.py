"""WGSL as index.js ships it (emit.shipped): the same tokens as the generated kernel, without
comments, indentation and the spaces no token needs. The browser and wgpu-py tests compile and run
only shipped kernels; this checks the tokens themselves on every kernel of a model with both classes."""

import torch
from torch import nn

from kuma_build.compiler import compile_for, export
from kuma_build.compiler.emit import WGSL_TOKEN, shipped
from kuma_build.devices import device_classes
from support import model_config


def tokens(wgsl: str) -> list[str]:
    return [t for line in wgsl.splitlines() for t in WGSL_TOKEN.findall(line.split("//", 1)[0]) if not t.isspace()]


def test_spaces_stay_where_tokens_need_them():
    wgsl = "fn f(a: u32) -> f32 {  // why\n    let x = a - -1 + b.y * 2.0e-06;\n    x >>= 1u; return f32(x) ;\n}\n"
    assert shipped(wgsl) == "fn f(a:u32)->f32{\nlet x=a- -1+b.y*2.0e-06;\nx>>=1u;return f32(x);\n}"


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, image):
        x = torch.relu(self.conv(image)).mean(dim=(2, 3))
        return torch.softmax(self.fc(self.norm(x)), dim=-1)


def test_every_kernel_keeps_its_tokens():
    module, image = Net().eval(), torch.randn(1, 3, 9, 9)
    config = model_config(module, [image], device="auto")
    exported, inputs, outputs = export(module, config)
    kernels = [k for device in device_classes("auto") for k in compile_for(device, exported, config, inputs, outputs, None).plan.kernels]
    assert len(kernels) >= 6
    for kernel in kernels:
        for code in filter(None, (kernel.code, kernel.code_f16, kernel.code_matrix)):
            assert tokens(shipped(code)) == tokens(code), kernel.name
            assert len(shipped(code)) < 0.9 * len(code)
