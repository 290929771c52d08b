"""Models of the benchmark that torchvision does not provide."""

import torch
from torch import nn


class TinyMLP(nn.Module):
    """A 2-layer MLP: the smallest model worth serving, where per-request overhead is everything."""

    def __init__(self, d_in=16, hidden=32, d_out=4):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))

    def forward(self, x):
        return self.net(x)


def tiny_mlp():
    torch.manual_seed(0)
    return TinyMLP()
