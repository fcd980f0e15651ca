"""A small conv net that classifies 28x28 digits."""

import torch
from torch import nn


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, image):
        return self.head(self.features(image))


def build_model():
    return Classifier()


if __name__ == "__main__":
    # writes placeholder weights from a seeded random init; replace them with trained ones
    from safetensors.torch import save_file
    torch.manual_seed(42)
    save_file(build_model().state_dict(), "weights/classifier.safetensors")
