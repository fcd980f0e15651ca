"""A first model for kuma build: replace it with yours.

kuma.toml names this file, the factory below and the input shapes. `kuma build`
(or the Vite / webpack plugin while your app builds) exports the module with
torch.export and compiles it to WebGPU kernels; in the browser,
`(await load()).run({ x })` returns { logits }.
"""

import torch
from torch import nn


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 4))

    def forward(self, x):
        return self.layers(x)


def build_model():
    torch.manual_seed(0)  # the same untrained weights on every build, until you add trained ones
    return Model()
