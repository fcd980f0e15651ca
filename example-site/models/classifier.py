"""The example site's digit classifier: a 1x1x28x28 grey image (ink 1, paper 0) in, 10 logits out.

Trained by train/train_classifier.py; the page prepares a drawing the way MNIST did (src/digit.js).
"""

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
