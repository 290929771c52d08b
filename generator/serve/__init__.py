"""serve: takes a built model repository, gives a running tritonserver and proof it answers like
eager. server (the embedded tritonserver of nvidia-pytriton, with triton_install) or docker_server
(the NGC container, with docker_engine) is a lifecycle.TritonServer: it starts tritonserver with the
flags and environment of arguments, on the ports of ports (free_ports picks free ones), loads each
model and reports it READY / FAILED / SKIPPED (load_errors says why a load failed and what to do),
and counts, revives and kills its Python-backend stub processes through processes; control holds
the listen address and the model-control key, logs the capped server log; verify checks every
served model over HTTP and gRPC through protocols.
"""
