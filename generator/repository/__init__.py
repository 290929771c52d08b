"""repository: the model-repository format, below every stage.

Takes a path (a folder, or an ``s3://`` URL) and gives what lies there: the layout of a built
model directory and its files' names (``layout``), ``config.pbtxt`` as Triton's ModelConfig —
made and written by one function (``config``) —, the build record ``gen_repo.json``, how served
outputs are compared with eager ones (``compare``), and S3 locations (``s3``). Every stage
(variants, build, serve, bench, tune, ship) imports it; it imports no stage.
"""
