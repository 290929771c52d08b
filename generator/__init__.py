"""gen-repo: turn a PyTorch model into a ready-to-serve Triton model repository, and prove it works."""

__version__ = "0.1.0"
