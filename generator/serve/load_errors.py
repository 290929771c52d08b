"""Why tritonserver would not load a model, said plainly: its error without the boilerplate, and
for the failures gen-repo recognises (a backend library that cannot load, TorchVision ops the
PyTorch backend lacks) the state, the reason and what to do.

    state, reason, tip = load_failure(backend, clean_load_error(server_message))
"""

from __future__ import annotations

import re
from pathlib import Path

from ..status import FAILED, SKIPPED

_MISSING_LIB = re.compile(r"unable to load shared library: (?:\S*/)?(\S+?): cannot open shared"
                          r" object file")
_UNDEFINED = re.compile(r"unable to load shared library: (\S+): undefined symbol: (\S+)")
_TORCHVISION_OP = re.compile(r"Unknown builtin op: (torchvision::\w+)")


def load_failure(backend: str, reason: str) -> tuple[str, str, str | None]:
    """(state, reason, tip) for a model the server would not load, from the server's (cleaned)
    reason: a backend library that cannot load, or a capability the backend lacks (TorchVision
    ops), is said plainly with what to do; anything else stays FAILED with the server's words.

    A model whose backend lacks a capability it needs is SKIPPED (like a model whose backend is
    absent): nothing is wrong with the model, this server cannot run it.
    """
    op = _TORCHVISION_OP.search(reason)
    if op:
        return SKIPPED, (f"this TorchScript calls {op.group(1)}, and the server's PyTorch backend has"
                         " no TorchVision ops (it was built without them)"), (
            "Serve it where the PyTorch backend has TorchVision ops (the NGC tritonserver image:"
            " gen-repo serve --docker), or serve the model's python variant, which runs the same"
            " model with torchvision's own ops.")
    lib = _MISSING_LIB.search(reason)
    if lib:
        name = lib.group(1)
        if name.startswith(("libtorch", "libc10")):
            return FAILED, (f"the {backend} backend cannot load: {name} is not on the server's"
                            " library path"), (
                "This PyTorch backend links the libtorch of a pip torch. gen-repo puts this"
                " environment's torch/lib on the server's library path when the backend directory"
                " holds no libtorch.so of its own: install the torch it was built against here,"
                " or use a backend that ships its libtorch (the NGC image's"
                " /opt/tritonserver/backends/pytorch).")
        return FAILED, f"the {backend} backend cannot load: {name} is missing", (
            f"Install the package that provides {name}, or add its folder to LD_LIBRARY_PATH"
            " before starting gen-repo serve.")
    undefined = _UNDEFINED.search(reason)
    if undefined:
        return FAILED, (f"the {backend} backend does not fit the libraries it found"
                        f" ({Path(undefined.group(1)).name}: undefined symbol"
                        f" {undefined.group(2)})"), (
            "The backend was built against another version of the library (for a PyTorch"
            " backend: another torch than this environment's). Use a backend built for this"
            " environment's torch, or serve with --docker (the NGC image brings its own).")
    return FAILED, reason, None


def clean_load_error(message: str) -> str:
    """The server's load error without its boilerplate prefix and Python stack ('At: ...')."""
    text = re.sub(r"^\s*(\[[^\]]*\]\s*)*", "", message)  # "[400] " / "[StatusCode...] "
    text = re.sub(r"load failed for model '[^']*':\s*", "", text)
    text = re.sub(r"version \d+ is at \w+ state:\s*", "", text)
    text = text.split("\n\nAt:")[0]
    text = re.sub(r"^(Internal|Invalid argument|Not found|Unavailable|Unknown|Unsupported):\s*", "",
                  text.strip())
    return " ".join(text.replace(";\n", " ").split()).rstrip(";").strip() or message.strip()
