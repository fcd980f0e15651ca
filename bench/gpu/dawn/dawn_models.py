"""The models of the Dawn benchmark (issue 12), built from `transformers` classes and a config, so
that no weights travel: random weights from a seeded init, made where the benchmark runs.

Each case is a module returning one tensor (the last hidden state or the logits) and its inputs.
Full size is what issue 12 measures; `small=True` gives tiny configs of the same classes, for the
local run on SwiftShader (a CPU) that proves the whole pipeline before device time is spent.
"""

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Case:
    name: str
    build: object  # () -> nn.Module in eval mode, random weights from torch.manual_seed(0)
    inputs: dict  # input name -> (shape, "float32" | "int64")
    vocab: int = 0  # token ids are drawn below this


class LastHidden(nn.Module):
    """A transformers model called with one input, returning one tensor: kuma, ONNX and torch agree on it."""

    def __init__(self, model: nn.Module, arg: str, field: str):
        super().__init__()
        self.model, self.arg, self.field = model, arg, field

    def forward(self, x):
        return getattr(self.model(**{self.arg: x}), self.field)


def bert(seq: int, small: bool) -> Case:
    def build():
        from transformers import BertConfig, BertModel
        size = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=1000,
                    max_position_embeddings=64) if small else {}
        return LastHidden(BertModel(BertConfig(**size), add_pooling_layer=False), "input_ids", "last_hidden_state")
    return Case(f"bert-base-seq{seq}" if not small else f"bert-small-seq{seq}", build, {"input_ids": ((1, seq), "int64")},
                vocab=1000 if small else 30522)


def gpt2(seq: int, small: bool) -> Case:
    def build():
        from transformers import GPT2Config, GPT2Model
        size = dict(n_embd=64, n_layer=2, n_head=4, vocab_size=1000, n_positions=64, bos_token_id=0, eos_token_id=0) if small else {}
        return LastHidden(GPT2Model(GPT2Config(**size)), "input_ids", "last_hidden_state")
    return Case(f"gpt2-small-seq{seq}" if not small else f"gpt2-tiny-seq{seq}", build, {"input_ids": ((1, seq), "int64")},
                vocab=1000 if small else 50257)


def vit(small: bool) -> Case:
    image = 32 if small else 224

    def build():
        from transformers import ViTConfig, ViTForImageClassification
        size = dict(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=128, num_labels=10) if small else dict(num_labels=1000)
        return LastHidden(ViTForImageClassification(ViTConfig(**size)), "pixel_values", "logits")
    return Case("vit-b16-224" if not small else "vit-tiny-32", build, {"pixel_values": ((1, 3, image, image), "float32")})


def convnext(small: bool) -> Case:
    image = 64 if small else 224

    def build():
        from transformers import ConvNextConfig, ConvNextForImageClassification
        size = dict(depths=[1, 1, 1, 1], hidden_sizes=[16, 32, 64, 128], num_labels=10) if small else dict(num_labels=1000)
        return LastHidden(ConvNextForImageClassification(ConvNextConfig(**size)), "pixel_values", "logits")
    return Case("convnext-t-224" if not small else "convnext-tiny-64", build, {"pixel_values": ((1, 3, image, image), "float32")})


def resnet(small: bool) -> Case:
    image = 64 if small else 224

    def build():
        # transformers' ResNetConfig defaults are ResNet-50's layout (bottleneck blocks, 3-4-6-3)
        from transformers import ResNetConfig, ResNetForImageClassification
        size = dict(depths=[1, 1, 1, 1], hidden_sizes=[32, 64, 128, 256], embedding_size=16, num_labels=10) if small \
            else dict(num_labels=1000)
        return LastHidden(ResNetForImageClassification(ResNetConfig(**size)), "pixel_values", "logits")
    return Case("resnet50-224" if not small else "resnet-tiny-64", build, {"pixel_values": ((1, 3, image, image), "float32")})


def cases(small: bool) -> list[Case]:
    seqs = (16, 32) if small else (128, 512)
    return [bert(seqs[0], small), bert(seqs[1], small), gpt2(seqs[0], small), vit(small), convnext(small), resnet(small)]


class LinearWaves(nn.Module):
    """Linear layers of one row count and K, each on its own input (so no pass merges them), whose
    output widths give the sliced product's 64-wide tiles 1, 2, 3, 4 and 6 times as many workgroups
    as the first: each a dispatch of the profile, for how a product's time grows with its
    workgroups (docs/performance.md, 2026-12-01 05:03). Unsplit with `--gemm-knob SPLIT_TRAFFIC=10.0`."""

    def __init__(self, depth: int, tiles: int):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(depth, 64 * tiles * n, bias=False) for n in (1, 2, 3, 4, 6))

    def forward(self, x0, x1, x2, x3, x4):
        return torch.cat([layer(x) for layer, x in zip(self.layers, (x0, x1, x2, x3, x4))], -1)


def probes(small: bool) -> list[Case]:
    """Cases that run only when named (--models), not models of the benchmark. linear-waves: 64 rows,
    K 768, from 132 workgroups (an H200's multiprocessors) to 792; small: K 64, 2 to 12."""
    depth, tiles = (64, 1) if small else (768, 66)
    return [Case("linear-waves", lambda: LinearWaves(depth, tiles), {f"x{i}": ((1, 64, depth), "float32") for i in range(5)})]


def named(small: bool) -> dict[str, Case]:
    """Every case by name: the benchmark's models, then the probes."""
    return {case.name: case for case in cases(small) + probes(small)}


def instantiate(case: Case) -> nn.Module:
    torch.manual_seed(0)
    return case.build().eval()


def random_inputs(case: Case, seed: int = 7) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=generator) if dtype == "float32"
            else torch.randint(0, case.vocab, shape, generator=generator) for name, (shape, dtype) in case.inputs.items()}
