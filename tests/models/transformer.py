"""One nn.TransformerEncoderLayer with batch_first=True."""

from torch import nn


def build_model():
    return nn.TransformerEncoderLayer(d_model=96, nhead=4, dim_feedforward=200, dropout=0.0, batch_first=True)
