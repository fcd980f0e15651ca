"""A small UNet: two downsamplings, a transposed-conv and a bilinear upsampling, skip concatenation."""

import torch
import torch.nn.functional as F
from torch import nn


def double_conv(cin: int, cout: int):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(4, cout), nn.SiLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(4, cout), nn.SiLU())


class UNet(nn.Module):
    def __init__(self, channels: int = 3, classes: int = 2, width: int = 16):
        super().__init__()
        self.down1 = double_conv(channels, width)
        self.down2 = double_conv(width, width * 2)
        self.bottom = double_conv(width * 2, width * 4)
        self.up2 = nn.ConvTranspose2d(width * 4, width * 2, 2, stride=2)
        self.dec2 = double_conv(width * 4, width * 2)
        self.dec1 = double_conv(width * 2 + width, width)
        self.out = nn.Conv2d(width, classes, 1)

    def forward(self, image):
        d1 = self.down1(image)
        d2 = self.down2(F.max_pool2d(d1, 2))
        b = self.bottom(F.max_pool2d(d2, 2))
        u2 = self.dec2(torch.cat([self.up2(b), d2], dim=1))
        u1 = F.interpolate(u2, scale_factor=2, mode="bilinear", align_corners=False)
        return self.out(self.dec1(torch.cat([u1, d1], dim=1)))


def build_model():
    return UNet()
