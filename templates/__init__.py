"""The project's templates (k8s/: the manifests gen-repo deploy writes), shipped as package data.

pyproject.toml maps this folder to the package ``generator._templates``: a wheel or sdist install
holds it as generator/_templates, an editable install finds it here through the same name.
``generator.templates.templates_dir()`` is how the product finds it.
"""
