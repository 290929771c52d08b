"""An example user model: two inputs, a dict output, a helper module beside it.

    gen-repo build examples/ranker/net.py:make_model --input tokens:int64:-1:0..1000 \
        --input mask:bool:-1 --name ranker
"""

import torch
from torch import nn

from pooling import masked_mean  # a helper module of the user's, interned by torch.package


class Ranker(nn.Module):
    def __init__(self, vocab=1000, dim=32):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.score = nn.Linear(dim, 1)

    def forward(self, tokens, mask):
        pooled = masked_mean(self.emb(tokens), mask)
        return {"score": self.score(pooled).squeeze(-1), "embedding": pooled}


def make_model():
    torch.manual_seed(0)
    return Ranker()


def make_example():
    """The same model, small (a 100-token vocabulary, 8 dims): model_repository/'s example,
    whose artifacts are a few KB."""
    torch.manual_seed(0)
    return Ranker(vocab=100, dim=8)
