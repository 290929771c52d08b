"""serve: a built model repository in, a running tritonserver and proof it answers like eager.

server (the embedded tritonserver of nvidia-pytriton, with triton_install) or docker_server (the
NGC container, with docker_engine) loads each model and reports it READY / FAILED / SKIPPED;
verify checks every served model over HTTP and gRPC through protocols.
"""
