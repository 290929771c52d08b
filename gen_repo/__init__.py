"""gen-repo from Python: ``import gen_repo`` then ``gen_repo.build(model, inputs)``,
``with gen_repo.serve(repo) as served:``, ``gen_repo.verify(repo, served=served)``.
The functions live in ``generator.api`` (docs/api.md)."""

from generator.api import (BuildReport, ModelStatus, Serving, VerifyReport, bench, bench_options,
                           build, build_spec, serve, tune, tune_settings, verify)

__all__ = ["build", "build_spec", "serve", "verify", "bench", "bench_options", "tune",
           "tune_settings", "BuildReport", "Serving", "VerifyReport", "ModelStatus"]
