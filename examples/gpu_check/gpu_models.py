"""The two small models of scripts/gpu-check.sh: a CNN and a transformer encoder.

Random init (nothing is downloaded); small enough to build in seconds on a CPU, large enough that
a GPU instance does real work per request.

    gen-repo build examples/gpu_check/gpu_models.py:small_cnn --input input:float32:3x64x64
    gen-repo build examples/gpu_check/gpu_models.py:tiny_transformer --input tokens:int64:-1:0..999
"""

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Four conv blocks and a linear head: [B, 3, H, W] float images -> [B, 10] logits."""

    def __init__(self, classes: int = 10, width: int = 32):
        super().__init__()
        layers, channels = [], 3
        for i in range(4):
            out = width * 2 ** i
            layers += [nn.Conv2d(channels, out, 3, stride=2 if i else 1, padding=1),
                       nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, classes)

    def forward(self, input):
        return self.head(self.features(input).mean(dim=(2, 3)))


class TinyTransformer(nn.Module):
    """Token ids [B, L] (0..vocab-1) -> per-token hidden states [B, L, dim] and pooled [B, dim]."""

    def __init__(self, vocab: int = 1000, dim: int = 64, heads: int = 4, layers: int = 2,
                 max_len: int = 512):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.position = nn.Embedding(max_len, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, dim * 4, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens):
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        hidden = self.norm(self.encoder(self.embed(tokens) + self.position(positions)))
        return {"hidden": hidden, "pooled": hidden.mean(dim=1)}


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return SmallCNN().eval()


def tiny_transformer() -> nn.Module:
    torch.manual_seed(0)
    return TinyTransformer().eval()
