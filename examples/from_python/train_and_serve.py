"""A training script that ends by putting its model behind Triton with gen-repo's Python API:
build (the model class is defined right here, in __main__), serve, verify, bench.

    python examples/from_python/train_and_serve.py [--out DIR] [--bench-out DIR]
"""

import argparse

import torch
from torch import nn

import gen_repo

VOCAB, DIM = 200, 16


class TinyRanker(nn.Module):
    """Scores a padded batch of token sequences; the mask marks the real tokens."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, DIM)
        self.head = nn.Linear(DIM, 1)

    def forward(self, tokens, mask):
        weights = mask.unsqueeze(-1).to(self.emb.weight.dtype)
        pooled = (self.emb(tokens) * weights).sum(1) / weights.sum(1).clamp(min=1)
        return {"score": self.head(pooled).squeeze(-1), "embedding": pooled}


def train(model: nn.Module, steps: int = 20) -> None:
    """A few steps of training on random data (what a real script does for hours)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        tokens = torch.randint(0, VOCAB, (8, 12))
        mask = torch.rand(8, 12) > 0.2
        loss = model(tokens, mask)["score"].pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="model_repository")
    parser.add_argument("--bench-out", default="bench_results")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = TinyRanker()
    train(model)

    # Example inputs, batch first; the sequence axis (1) varies from request to request.
    tokens = torch.randint(0, VOCAB, (4, 12))
    mask = torch.ones(4, 12, dtype=torch.bool)
    report = gen_repo.build(model, {"tokens": tokens, "mask": mask}, name="tiny_ranker",
                            out=args.out, dynamic_axes={"tokens": [1], "mask": [1]},
                            value_ranges={"tokens": (0, VOCAB)}, variants=["libtorch", "python"],
                            force=True, progress=True)
    print(report.table())
    assert report.exit_code == 0, "a variant was refused: see the table"

    with gen_repo.serve(args.out, models=["tiny_ranker"], progress=True) as served:
        print({name: s.state for name, s in served.statuses.items()})
        result = gen_repo.verify(args.out, served=served, models=served.ready)
        for r in result.results:
            print(r.model, r.protocol, r.status, r.detail)
        assert result.ok and not result.failures

    outcome = gen_repo.bench(args.out, models=["tiny_ranker"], out=args.bench_out, quick=True,
                             progress=True)
    print("\n".join(outcome.verdict))
    print(f"report: {outcome.report_md}")


if __name__ == "__main__":
    main()
