"""A Llama-style decoder stepped one token per run: RMSNorm, rotary embeddings indexed by
position, grouped-query attention over a static KV cache held in registered buffers (updated
in place with index_copy_), SwiGLU MLPs. forward(token, pos) takes one token and its
position and returns the greedy next token and the logits; the caches carry the context."""

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(1 + 0.1 * torch.randn(dim))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate(x, cos, sin):
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, kv_heads: int, hidden: int, context: int):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.norm1, self.norm2 = RMSNorm(dim), RMSNorm(dim)
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.v = nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.o = nn.Linear(dim, dim, bias=False)
        self.gate = nn.Linear(dim, hidden, bias=False)
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)
        self.register_buffer("k_cache", torch.zeros(1, kv_heads, context, self.head_dim))
        self.register_buffer("v_cache", torch.zeros(1, kv_heads, context, self.head_dim))

    def forward(self, x, pos, cos, sin, mask):
        b, t, _ = x.shape
        h = self.norm1(x)
        q = self.q(h).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k(h).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v(h).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        self.k_cache.index_copy_(2, pos, k)
        self.v_cache.index_copy_(2, pos, v)
        a = F.scaled_dot_product_attention(q, self.k_cache, self.v_cache, attn_mask=mask, enable_gqa=True)
        x = x + self.o(a.transpose(1, 2).reshape(b, t, -1))
        h = self.norm2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Llama(nn.Module):
    def __init__(self, vocab: int = 67, dim: int = 48, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                 hidden: int = 100, context: int = 40):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, kv_heads, hidden, context) for _ in range(layers))
        self.norm = RMSNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        head_dim = dim // heads
        inverse = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
        angles = torch.arange(context).float()[:, None] * inverse[None]
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)
        self.context = context

    def forward(self, token, pos):
        """token [1, 1], pos [1]: the next token [1, 1] and the logits [1, 1, vocab]."""
        x = self.embed(token)
        cos, sin = self.cos[pos], self.sin[pos]
        mask = torch.arange(self.context, device=pos.device) <= pos[:, None]  # the positions written so far
        for block in self.blocks:
            x = block(x, pos, cos, sin, mask)
        logits = self.head(self.norm(x))
        return logits.argmax(-1), logits


def build_model():
    return Llama()
