"""Trains the example site's digit classifier on the CPU in a minute or two, with nothing downloaded.

Data shipped inside packages: scikit-learn's handwritten digits (`load_digits`, 1797 8x8 scans by
UCI writers, bundled in the wheel) and the digits of 21 TrueType fonts that ship inside matplotlib
(DejaVu, STIX, Computer Modern). Each image is drawn large, augmented (rotation, shear, scale,
stroke thickness) and then prepared exactly as the page prepares a drawing (src/digit.js):
crop to the ink's bounding box, scale the longer side to 20 px by area averaging, and put the
centre of mass at the centre of a 28x28 image, as MNIST does.

Held out, never trained on: the last 20% of the scikit-learn digits and three whole fonts.
Writes weights/classifier.safetensors and train/heldout_digits.safetensors (one held-out
handwritten digit per class, used by tests/test_example_site.py).

    pip install -e ".[train]"        # scikit-learn and matplotlib
    cd example-site && python train/train_classifier.py
"""

import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

SITE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(SITE / "models"))
from classifier import build_model  # noqa: E402

CANVAS = 64  # augmentation happens at this size, before the MNIST-style preparation
FONTS = ["DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSans-BoldOblique", "DejaVuSansMono",
         "DejaVuSansMono-Bold", "DejaVuSansMono-Oblique", "DejaVuSansMono-BoldOblique", "DejaVuSerif",
         "DejaVuSerif-Bold", "DejaVuSerif-BoldItalic", "STIXGeneral", "STIXGeneralItalic", "STIXGeneralBolIta",
         "cmr10", "cmb10", "cmti10", "cmtt10"]
HELDOUT_FONTS = ["DejaVuSerif-Italic", "STIXGeneralBol", "cmss10"]
VARIANTS = {"handwritten": 24, "font": 60}  # augmented copies of each training image
EPOCHS, BATCH = 8, 128


def handwritten() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits, scaled up smoothly onto the canvas: (N, 64, 64) in 0..1, labels."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    small = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16
    big = F.interpolate(small, size=(40, 40), mode="bilinear", align_corners=False)
    return F.pad(big, (12, 12, 12, 12))[:, 0], torch.tensor(digits.target)


def font_digits(names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Digits 0-9 of each of matplotlib's bundled fonts, white on black: (10 * fonts, 64, 64), labels."""
    import matplotlib
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont
    images = []
    for name in names:
        font = ImageFont.truetype(f"{matplotlib.get_data_path()}/fonts/ttf/{name}.ttf", 44)
        for digit in range(10):
            image = Image.new("L", (CANVAS, CANVAS))
            ImageDraw.Draw(image).text((CANVAS / 2, CANVAS / 2), str(digit), fill=255, font=font, anchor="mm")
            images.append(torch.from_numpy(np.asarray(image, dtype=np.float32) / 255))
    return torch.stack(images), torch.arange(10).repeat(len(names))


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random affine warp, then stroke thickness: grow strokes by 0-2 px and soft-threshold at a random level."""
    n = len(images)

    def uniform(low, high):
        return torch.rand(n, generator=generator) * (high - low) + low

    angle, shear = uniform(-0.25, 0.25), uniform(-0.3, 0.3)
    scale_x, scale_y = uniform(0.8, 1.2), uniform(0.85, 1.15)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos / scale_x, (shear * cos - sin) / scale_x, torch.zeros(n)], 1),
                         torch.stack([sin / scale_y, (shear * sin + cos) / scale_y, torch.zeros(n)], 1)], 1)
    grid = F.affine_grid(theta, [n, 1, CANVAS, CANVAS], align_corners=False)
    warped = F.grid_sample(images[:, None], grid, align_corners=False)
    grow = torch.randint(0, 3, (n,), generator=generator)
    thick = warped.clone()
    for pixels in (1, 2):
        thick[grow == pixels] = F.max_pool2d(warped[grow == pixels], 2 * pixels + 1, stride=1, padding=pixels)
    level = uniform(0.25, 0.6)[:, None, None, None]
    return torch.sigmoid((thick - level) * 12)[:, 0]


def prepare(ink: torch.Tensor) -> torch.Tensor:
    """One (H, W) image as the page prepares a drawing: bounding box, longer side 20 px, centre of mass centred."""
    rows, cols = torch.nonzero(ink.amax(1) > 0.1)[:, 0], torch.nonzero(ink.amax(0) > 0.1)[:, 0]
    crop = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    scale = 20 / max(crop.shape)
    size = [max(1, round(side * scale)) for side in crop.shape]
    small = F.adaptive_avg_pool2d(crop[None, None], size)[0, 0]
    total = small.sum()
    centre_y = (small.sum(1) * torch.arange(size[0])).sum() / total
    centre_x = (small.sum(0) * torch.arange(size[1])).sum() / total
    top = min(max(round(13.5 - centre_y.item()), 0), 28 - size[0])
    left = min(max(round(13.5 - centre_x.item()), 0), 28 - size[1])
    out = torch.zeros(28, 28)
    out[top:top + size[0], left:left + size[1]] = small
    return out


def dataset(images, labels, copies: int, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """copies augmented versions of each image (none: the plain image at a middle thickness), prepared."""
    batches = [augment(images, generator) for _ in range(copies)] if copies else [torch.sigmoid((images - 0.4) * 12)]
    prepared = torch.stack([prepare(ink) for batch in batches for ink in batch])
    return prepared[:, None], labels.repeat(max(copies, 1))


def accuracy(model, images, labels) -> float:
    with torch.no_grad():
        return (model(images).argmax(1) == labels).float().mean().item()


def main():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    generator = torch.Generator().manual_seed(0)
    started = time.time()
    hand, hand_labels = handwritten()
    split = int(len(hand) * 0.8)
    fonts, font_labels = font_digits(FONTS)
    train_parts = [dataset(hand[:split], hand_labels[:split], VARIANTS["handwritten"], generator),
                   dataset(fonts, font_labels, VARIANTS["font"], generator)]
    train_x = torch.cat([x for x, _ in train_parts])
    train_y = torch.cat([y for _, y in train_parts])
    test_hand = dataset(hand[split:], hand_labels[split:], 0, generator)
    test_fonts = dataset(*font_digits(HELDOUT_FONTS), 0, generator)
    print(f"{len(train_x)} training images, {len(test_hand[0])} held-out handwritten, "
          f"{len(test_fonts[0])} held-out font digits ({time.time() - started:.0f} s)")

    model = build_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = EPOCHS * math.ceil(len(train_x) / BATCH)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
    for epoch in range(EPOCHS):
        model.train()
        for batch in torch.randperm(len(train_x), generator=generator).split(BATCH):
            loss = F.cross_entropy(model(train_x[batch]), train_y[batch], label_smoothing=0.05)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        model.eval()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}, held-out handwritten {accuracy(model, *test_hand):.1%}, "
              f"held-out fonts {accuracy(model, *test_fonts):.1%} ({time.time() - started:.0f} s)")

    save_file(model.state_dict(), str(SITE / "weights" / "classifier.safetensors"))
    first_of_each = [int((test_hand[1] == digit).nonzero()[0]) for digit in range(10)]
    save_file({"images": test_hand[0][first_of_each].contiguous(), "labels": test_hand[1][first_of_each]},
              str(SITE / "train" / "heldout_digits.safetensors"))


if __name__ == "__main__":
    main()
