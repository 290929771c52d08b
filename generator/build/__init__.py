"""build: a model source and a ModelSpec in, checked model directories out.

sources (load the model) → samples (two sample cases) → outputs (names, dtypes, dims inferred by
running it) → wrapper (the serving forward()) → the variants export their artifacts (generator.
variants) → check (each artifact in a fresh process against eager, generator.repository.compare)
→ the model directory, written in a staging folder (config.pbtxt through generator.repository.
config) and swapped in atomically (staging). ``pipeline.build_repository`` runs it all.
"""
