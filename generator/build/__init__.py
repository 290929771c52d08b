"""build: a model source and a ModelSpec in, checked model directories out.

sources (load the model) → samples (two sample cases) → outputs (names, dtypes, dims inferred by
running it) → wrapper (the serving forward()) → the variants export their artifacts (generator.
variants) → check (each artifact in a fresh process against eager, compare) → config
(config.pbtxt, parsed into ModelConfig) → layout (the model directory, swapped in atomically).
``pipeline.build_repository`` runs it all; ``layout`` also reads a built repository back for the
later stages.
"""
