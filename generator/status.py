"""The status words gen-repo shows and stores, each spelled once here.

Two families, both kept as users and results files already know them:

- what became of a model or variant, in upper case: the STATUS / STATE columns of build, serve,
  verify and bench, the "state" of results.json's "loads", gen-repo serve's model index;
- how a measurement went, in lower case: the "status" of a perf_analyzer point in bench's and
  tune's results.json, the "state" of a tune candidate.

A foundation module: it imports nothing from the package, so every layer may import it.
"""

from __future__ import annotations

# -- a model or variant ------------------------------------------------------------------------
OK = "OK"  # build: exported and checked against eager; verify: answers like the reference
FAILED = "FAILED"  # build: the variant was refused; server: the model did not load
FAIL = "FAIL"  # verify: a model x protocol that does not answer like the reference
READY = "READY"  # server: loaded and ready for requests
SKIPPED = "SKIPPED"  # not tried: this server cannot load it (e.g. no PyTorch backend)
PACKED = "PACKED"  # pack-env: the model got its packed Python environment

# -- a measurement -----------------------------------------------------------------------------
POINT_OK = "ok"  # stable within the measurement's threshold
POINT_UNSTABLE = "unstable"  # measured, but only at the relaxed threshold
POINT_FAILED = "failed"  # perf_analyzer gave no figure
CANDIDATE_MEASURED = "measured"  # a tune candidate with measured points
CANDIDATE_FAILED = POINT_FAILED  # a tune candidate without any: the same word
