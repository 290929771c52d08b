"""gen-repo from Python: ``import gen_repo`` then ``gen_repo.build(model, inputs)``,
``with gen_repo.serve(repo) as served:``, ``gen_repo.verify(repo, served=served)``.
The functions live in ``generator.api`` (docs/api.md)."""

from generator.api import (BuildReport, ModelStatus, Serving, VerifyReport, build, build_spec,
                           serve, verify)

__all__ = ["build", "build_spec", "serve", "verify", "BuildReport", "Serving", "VerifyReport",
           "ModelStatus"]
