"""ship: a verified repository out to where it runs.

push (to S3, model by model, through s3), deploy (Kubernetes / KServe manifests) and packenv (a
packed Python environment inside each Python-backend model, so the stock NGC image serves it).
"""
