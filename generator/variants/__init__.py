"""variants: the wrapped eager model and its sample cases in (build.pipeline's ExportContext), one
artifact per kind out (TorchScript, torch.package, AOTInductor, ...) with how Triton loads it.
One small registered class per artifact kind (see ``registry``); ``runtime/model.py`` is the
static Python-backend model that serves the Python-backend ones."""
